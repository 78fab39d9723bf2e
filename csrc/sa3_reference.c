/* sa3_reference.c - CPU reference of the quantized attention (the numerical spec).
 *
 * Everything is fp32 (integer for the INT8 dot products), plain loops, 64-bit indices,
 * and a fixed order: the only freedom a GPU kernel has relative to this file is the order
 * of additions inside a dot product / block sum and its exp2 approximation
 * (`ex2.approx` vs libm exp2f), so kernel-vs-reference differences are bounded by fp32
 * accumulation error, not by quantization error.
 *
 * Per (batch b, query head hq), the KV head is hk = hq / (Hq / Hkv) (GQA/MQA).
 *
 * 1. K smoothing (smooth_k): km[d] = (sum_s K[s,d]) / Sk, summed over s in increasing
 *    order in fp32; Ks = K - km. Softmax is invariant to it (it shifts every score of a
 *    row by the same q.km). Without smooth_k, Ks = K. (NVFP4 sums in chunks: see its block.)
 * 2. INT8 K: blocks of k_block consecutive tokens (the last may be partial):
 *    amax = max |Ks| over the block's rows x all D; inv = amax >= FLT_MIN ? 127/amax : 0;
 *    scale_k = amax / 127; Kq = clamp(rint(Ks * inv), -127, 127) (sa3_quant_int8).
 *    With groups MMA or QUAD the rows sharing a scale follow a kernel's accumulator layout
 *    instead (sa3_reference.h); the formulas are the same.
 * 3. Q: with per_block_mean, per block of q_block rows qm[d] = mean of the block's rows
 *    (fp32, row order), Qs = Q - qm; else Qs = Q. INT8 Q is quantized like K, with
 *    q_block rows per scale.
 * 4. Scores, log2 domain: scale_log2 = sm_scale * log2(e) (fp32 multiply).
 *    INT8:  acc = exact integer dot(Qq[i], Kq[j]);
 *           s = (float)acc * ((scale_q[blk(i)] * scale_log2) * scale_k[blk(j)])
 *           (this association, as the kernel folds scale_log2 into the Q scale).
 *           per_block_mean adds dot(qm[blk(i)], Ks[j]) * scale_log2 (fp32, d order).
 *    EXACT: s = dot(Q[i], Ks[j]) * scale_log2 (per_block_mean has no effect).
 *    NVFP4: see the block comment above nvfp4_* below.
 * 5. Causal (top-left, torch SDPA's is_causal): key j visible to query i iff j <= i,
 *    masked scores are -inf. KV blocks that lie wholly after i are skipped: they would
 *    contribute p = 0 and alpha = 1 exactly, so skipping changes no bit.
 * 6. Online softmax over KV blocks of k_block keys in increasing order, per row:
 *       m_new = max(m, max_j s_j); alpha = (m == -inf) ? 0 : exp2f(m - m_new);
 *       p_j = exp2f(s_j - m_new);
 *       l = l * alpha + (sum_j p_j)            -- unrounded p, summed in j order (the CUDA
 *                                                 kernel at D <= 128 with 16-bit P.V sums the
 *                                                 rounded pq by mma instead: a zero-mean
 *                                                 difference of ~1e-4 relative, inside the
 *                                                 tests' same-mode bound)
 *       O = O * alpha + (sum_j pq_j * vq_j)    -- block sum in j order, then added
 *    EXACT:     pq = p, vq = v.
 *    INT8_FP16: pq = p rounded to pv_dtype (RNE), vq = v rounded to pv_dtype.
 *    INT8_FP8:  vamax[d] = max_s |V[s,d]| over all Sk tokens of (b, hk);
 *               vinv = vamax >= FLT_MIN ? 448/vamax : 0; vq = e4m3(V * vinv); pq = e4m3(p * 448);
 *               at the end O[d] *= (vamax[d] / 448) / 448.
 *    INT8_FP8_F16ACC: as INT8_FP8 with V's target SA3_PV_F16ACC_V_MAX (1.75) instead of 448:
 *               vinv = 1.75/vamax, O[d] *= (vamax[d] / 1.75) / 448 at the end; and the block
 *               sum is the fp16 accumulation of the mma.sync ...f16.e4m3.e4m3.f16 chain: per
 *               block, h = 0, then for each 32 keys of the block in order (one m16n8k32, whose
 *               8-bit products pq*vq and their 32-term sum are exact in float64)
 *               h = f16_rne(h + sum) (one rounding per instruction, sa3_f64_to_f16); the
 *               block's sum is h, added to the fp32 O as above. What is exact: P and V codes,
 *               the products and the per-step sums; the fp16 rounding points are the model
 *               (the PTX ISA leaves an instruction's internal accumulation order and precision
 *               to the implementation: the H200 emulates one m16n8k32 by two m16n8k16 HMMAs,
 *               rounding after each 16 keys), so a kernel may differ by one extra fp16
 *               rounding (2^-11 relative) of a partial per 16 keys; bounded that way, not exact.
 * 7. out = O / l (fp32 division); a row with l == 0 is written as zeros.
 *    v_mean_fix (INT8_FP8, INT8_FP8_F16ACC and NVFP4): then out[d] += vfix[d], where
 *    esum[d] = sum over s < Sk, in increasing s, of (vq[s,d] - V[s,d] * vinv[d]) (fp32; the
 *    product is the one step 6 rounds) and vfix[d] = vinv[d] > 0 ? -(esum[d] / vinv[d]) / Sk
 *    : 0: minus the mean of V's e4m3 rounding error over all keys. NVFP4: esum[d] = sum over
 *    s < Sk, in increasing s, of ((cv[s,d] * bs_v[s/16,d]) * g_v - V[s,d]) (fp32, V's
 *    dequantized value minus V) and vfix[d] = -esum[d] / Sk. With P summing to 1 over a
 *    row, that mean is the part of the V error every row shares; what stays is weighted by
 *    p - 1/Sk. On diffuse rows this is most of it (cuda/hopper/NOTES.md, v16); on sharp rows
 *    the shared part, and the fix, are negligible.
 * 8. LSE (only when p->lse is set): lse = (m + log2f(l)) * ln(2) + corr, natural log, fp32,
 *    where m and l are the row's final running max and sum above (so it is the LSE of the
 *    scores this mode computes: quantized, of the smoothed K) and corr = sm_scale *
 *    dot(Q[i], km) (fp32, d order, the raw Q row) with smooth_k, else 0: K smoothing
 *    shifted every score of the row by exactly that, so adding it back gives the LSE of
 *    the unsmoothed scores up to quantization error, which is what a ring merge of chunks
 *    with different K means needs. A row with l == 0 gets -inf (no visible key: a merge
 *    then gives it weight 0).
 */
#include "sa3_reference.h"
#include "sa3_numerics.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SA3_LOG2E 1.4426950408889634f
#define SA3_LN2 0.6931471805599453f
#define NVFP4_GROUP 16
#define NVFP4_MEAN_CHUNK 256 /* K-mean chunk of the nvfp4 kernel (cuda/nvfp4/nvfp4_workspace.cuh) */
#define NVFP4_SECOND_LEVEL (SA3_E2M1_MAX * SA3_E4M3_MAX) /* 2688: the largest code times the largest scale */

/* ---------------------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------------------- */

/* a * b for non-negative int64, failing on overflow. */
static int mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) {
        return 0;
    }
    if (a != 0 && b > INT64_MAX / a) {
        return 0;
    }
    *out = a * b;
    return 1;
}

/* malloc(count * elem) with overflow checks; count 0 still returns a unique pointer so
 * NULL always means failure. *st gets SA3_ERR_OVERFLOW or SA3_ERR_NOMEM on failure and is
 * left alone on success, so several calls can share one status. */
static void *alloc_array(int64_t count, size_t elem, sa3_status *st) {
    void *ptr;
    if (count < 0 || (uint64_t)count > (uint64_t)(SIZE_MAX / elem)) {
        if (*st == SA3_OK) {
            *st = SA3_ERR_OVERFLOW;
        }
        return NULL;
    }
    ptr = malloc(count > 0 ? (size_t)count * elem : 1u);
    if (ptr == NULL && *st == SA3_OK) {
        *st = SA3_ERR_NOMEM;
    }
    return ptr;
}

static int64_t min_i64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

static int64_t ceil_div(int64_t a, int64_t b) {
    return a / b + (a % b != 0);
}

/* ---------------------------------------------------------------------------------------
 * Smoothing and per-block means
 * ------------------------------------------------------------------------------------- */

/* out[r, d] = x[r, d] - mean over the rows of x[r0 .. r0+rows) of column d, for each block
 * of `block` rows (block >= rows means one mean over everything: K smoothing). The means
 * go to mean_out[blk * D + d] when mean_out is not NULL. */
static void subtract_block_means(const float *x, int64_t rows, int64_t D, int64_t block,
                                 float *out, float *mean_out, float *scratch) {
    int64_t r0, r, d;
    for (r0 = 0; r0 < rows; r0 += block) {
        int64_t n = min_i64(block, rows - r0);
        float count = (float)n;
        for (d = 0; d < D; ++d) {
            scratch[d] = 0.0f;
        }
        for (r = r0; r < r0 + n; ++r) {
            for (d = 0; d < D; ++d) {
                scratch[d] += x[r * D + d];
            }
        }
        for (d = 0; d < D; ++d) {
            scratch[d] = scratch[d] / count;
        }
        for (r = r0; r < r0 + n; ++r) {
            for (d = 0; d < D; ++d) {
                out[r * D + d] = x[r * D + d] - scratch[d];
            }
        }
        if (mean_out != NULL) {
            memcpy(mean_out + (r0 / block) * D, scratch, (size_t)D * sizeof(float));
        }
    }
}

/* out = x - mean over all rows, the mean summed as the nvfp4 kernel sums it: per chunk of
 * NVFP4_MEAN_CHUNK rows in row order, the chunk sums in chunk order, then / rows. mean_out
 * gets the mean; scratch holds 2 * D floats. */
static void subtract_chunked_mean(const float *x, int64_t rows, int64_t D, float *out, float *mean_out,
                                  float *scratch) {
    float *total = scratch, *part = scratch + D;
    int64_t r0, r, d;
    for (d = 0; d < D; ++d) {
        total[d] = 0.0f;
    }
    for (r0 = 0; r0 < rows; r0 += NVFP4_MEAN_CHUNK) {
        int64_t n = min_i64(NVFP4_MEAN_CHUNK, rows - r0);
        for (d = 0; d < D; ++d) {
            part[d] = 0.0f;
        }
        for (r = r0; r < r0 + n; ++r) {
            for (d = 0; d < D; ++d) {
                part[d] += x[r * D + d];
            }
        }
        for (d = 0; d < D; ++d) {
            total[d] += part[d];
        }
    }
    for (d = 0; d < D; ++d) {
        mean_out[d] = total[d] / (float)rows;
    }
    for (r = 0; r < rows; ++r) {
        for (d = 0; d < D; ++d) {
            out[r * D + d] = x[r * D + d] - mean_out[d];
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * INT8 per-block quantization (Q and K)
 * ------------------------------------------------------------------------------------- */

/* Which scale row r of a tensor uses (see sa3_ref_params.groups). */
typedef enum ref_groups { GROUPS_BLOCK = 0, GROUPS_MMA_Q = 1, GROUPS_MMA_K = 2, GROUPS_QUAD_K = 3 } ref_groups;

static int64_t group_of(ref_groups kind, int64_t r, int64_t block) {
    switch (kind) {
    case GROUPS_MMA_Q: return (r / 16) * 8 + r % 8;
    case GROUPS_MMA_K: return (r / 64) * 4 + (r % 8) / 2;
    case GROUPS_QUAD_K: return (r / block) * 4 + (r % block % 8) / 2;
    default: return r / block;
    }
}

static int64_t group_count(ref_groups kind, int64_t rows, int64_t block) {
    switch (kind) {
    case GROUPS_MMA_Q: return ceil_div(rows, 16) * 8;
    case GROUPS_MMA_K: return ceil_div(rows, 64) * 4;
    case GROUPS_QUAD_K: return ceil_div(rows, block) * 4;
    default: return ceil_div(rows, block);
    }
}

static ref_groups q_groups(const sa3_ref_params *p) {
    return p->groups == SA3_REF_GROUPS_MMA ? GROUPS_MMA_Q : GROUPS_BLOCK;
}

static ref_groups k_groups(const sa3_ref_params *p) {
    switch (p->groups) {
    case SA3_REF_GROUPS_MMA: return GROUPS_MMA_K;
    case SA3_REF_GROUPS_QUAD: return GROUPS_QUAD_K;
    default: return GROUPS_BLOCK;
    }
}

/* Symmetric INT8 per scale group: scale = amax/127, code = rn(x * (127/amax)). Groups with
 * no rows (past the end of a partial tile) keep scale 0. `amax` is scratch of ngroups floats. */
static void quantize_int8_groups(const float *x, int64_t rows, int64_t D, ref_groups kind, int64_t block,
                                 int8_t *q, float *scale, float *amax) {
    int64_t ng = group_count(kind, rows, block), r, d, g;
    for (g = 0; g < ng; ++g) {
        amax[g] = 0.0f;
    }
    for (r = 0; r < rows; ++r) {
        g = group_of(kind, r, block);
        for (d = 0; d < D; ++d) {
            float a = fabsf(x[r * D + d]);
            if (a > amax[g]) {
                amax[g] = a;
            }
        }
    }
    for (g = 0; g < ng; ++g) {
        scale[g] = amax[g] / SA3_INT8_MAX;
    }
    for (r = 0; r < rows; ++r) {
        float a = amax[group_of(kind, r, block)];
        float inv = a >= FLT_MIN ? SA3_INT8_MAX / a : 0.0f; /* subnormal amax: 127/a would overflow */
        for (d = 0; d < D; ++d) {
            q[r * D + d] = sa3_quant_int8(x[r * D + d] * inv);
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * NVFP4 (the spec for the Blackwell block-scaled kernel)
 *
 * Element format e2m1 (max 6), one e4m3 block scale per 16 consecutive elements of the
 * MMA's reduction dimension, and an fp32 second-level scale:
 *   Q, K: groups of 16 along D (per row); the last group of a row is partial when
 *         D % 16 != 0 (the kernel pads with zeros, which changes no amax and no sum).
 *         Second level per tensor and head: g = amax(|Xs| over all rows and D of (b,h)) / 2688.
 *   V:    groups of 16 consecutive tokens (aligned to token 0, the last may be partial),
 *         per channel d; second level per (b, hk): g = amax(|V|) / 2688.
 *   P:    per row, inside one KV block of k_block keys (k_block % 16 == 0, so P's groups
 *         line up with V's), groups of 16 keys starting at the block's first key;
 *         second level per row and block: g_p = rowmax_j(p_j in the block) / 2688. p <= 1,
 *         and = 1 in the block holding the running max.
 * For a group with amax a, with rg = 1 / (g * 6) computed once per second level g:
 *                           block_scale = e4m3(a * rg)         (<= 448 by the choice of g, up
 *                                                               to rounding: satfinite)
 *                           inv         = 1 / (block_scale * g)
 *                           code_k      = e2m1(x_k * inv)
 *                           (block_scale 0 when g == 0; all codes 0 when block_scale * g == 0)
 * so x_k ~= code_k * block_scale * g. Reciprocals, not divisions per element: the kernel
 * quantizes P in its inner loop (cuda/nvfp4/nvfp4_numerics.cuh computes the same bits).
 * K smoothing in this mode sums K in the kernel's order: per chunk of 256 tokens (aligned to
 * token 0) in token order, then the chunk sums in chunk order, divided by Sk.
 * Scores:  acc = sum_groups (bs_q[i,grp] * bs_k[j,grp]) * (sum_{d in grp} cq[i,d] * ck[j,d])
 *          (the inner sum is exact: products of e2m1 values are multiples of 1/4 and
 *          |sum| <= 16 * 36), fp32 over groups in order;
 *          s = acc * ((g_q * scale_log2) * g_k), plus the per_block_mean correction
 *          dot(qm, Ks[j]) * scale_log2 as for INT8 (it matters most here: Q's per-block
 *          mean would otherwise eat the 4-bit range).
 * PV:      blk[d] = sum_groups (bs_p[grp] * bs_v[grp,d]) * (sum_{j in grp} cp_j * cv[j,d]),
 *          O = O * alpha + blk * g_p; at the end O[d] *= g_v before the division by l.
 *          l sums the unrounded p as in every mode, or with l_quantized what P.V multiplies:
 *          per block, l_blk = (sum_groups bs_p[grp] * (sum_{j in grp} cp_j)) * g_p, the
 *          groups and their keys in order (then l = l * alpha + l_blk). The fp32 p's sum
 *          exceeds the codes' on average (e2m1 flushes p below a quarter of its group's
 *          scale), so without it an output whose V is near-constant per channel comes out
 *          ~1% short of that constant (cuda/nvfp4/NOTES.md).
 * ------------------------------------------------------------------------------------- */

static float nvfp4_global(const float *x, int64_t n) {
    float amax = 0.0f;
    int64_t i;
    for (i = 0; i < n; ++i) {
        float a = fabsf(x[i]);
        if (a > amax) {
            amax = a;
        }
    }
    return amax / NVFP4_SECOND_LEVEL;
}

/* Quantize one group of n (<= 16) elements x[k * stride]; codes (as their fp32 values) go
 * to c[k * stride]; returns the group's block scale (as its fp32 value). */
static float nvfp4_group(const float *x, int64_t n, int64_t stride, float g, float *c) {
    float amax = 0.0f, bs, den, inv;
    int64_t k;
    for (k = 0; k < n; ++k) {
        float a = fabsf(x[k * stride]);
        if (a > amax) {
            amax = a;
        }
    }
    bs = g > 0.0f ? sa3_round_e4m3(amax * (1.0f / (g * SA3_E2M1_MAX))) : 0.0f;
    den = bs * g;
    inv = den > 0.0f ? 1.0f / den : 0.0f;
    for (k = 0; k < n; ++k) {
        c[k * stride] = den > 0.0f ? sa3_round_e2m1(x[k * stride] * inv) : 0.0f;
    }
    return bs;
}

/* Rows of length D, groups along D: bs[r * ngroups + grp]. */
static void nvfp4_rows(const float *x, int64_t rows, int64_t D, float g, float *c, float *bs) {
    int64_t ngroups = ceil_div(D, NVFP4_GROUP), r, grp;
    for (r = 0; r < rows; ++r) {
        for (grp = 0; grp < ngroups; ++grp) {
            int64_t d0 = grp * NVFP4_GROUP;
            int64_t n = min_i64(NVFP4_GROUP, D - d0);
            bs[r * ngroups + grp] = nvfp4_group(x + r * D + d0, n, 1, g, c + r * D + d0);
        }
    }
}

/* Columns: groups of 16 tokens per channel: bs[tgrp * D + d]. */
static void nvfp4_cols(const float *x, int64_t rows, int64_t D, float g, float *c, float *bs) {
    int64_t ngroups = ceil_div(rows, NVFP4_GROUP), tg, d;
    for (tg = 0; tg < ngroups; ++tg) {
        int64_t r0 = tg * NVFP4_GROUP;
        int64_t n = min_i64(NVFP4_GROUP, rows - r0);
        for (d = 0; d < D; ++d) {
            bs[tg * D + d] = nvfp4_group(x + r0 * D + d, n, D, g, c + r0 * D + d);
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Workspace
 * ------------------------------------------------------------------------------------- */

typedef struct ref_ws {
    /* per (b, hk) */
    float *ks;     /* (Sk, D) smoothed K (or a copy of K) */
    float *km;     /* (D) K's channel mean (smooth_k; read for the LSE only) */
    int8_t *kq;    /* (Sk, D) INT8 codes */
    float *kscale; /* (nkb) INT8 scales */
    float *kc;     /* (Sk, D) NVFP4 codes */
    float *kbs;    /* (Sk, ngd) NVFP4 block scales */
    float *vq;     /* (Sk, D) V as the PV product sees it (rounded / codes) */
    float *vdeq;   /* (D) INT8_FP8 per-channel dequantization factor */
    float *vfix;   /* (D) with v_mean_fix (INT8_FP8 modes, NVFP4): minus V's mean rounding error */
    float *vbs;    /* (ngt, D) NVFP4 V block scales */
    /* per (b, hq) */
    float *qs;     /* (Sq, D) Q minus its block means (or a copy of Q) */
    float *qm;     /* (nqb, D) block means */
    int8_t *qq;    /* (Sq, D) */
    float *qscale; /* (nqb) */
    float *qc;     /* (Sq, D) NVFP4 codes */
    float *qbs;    /* (Sq, ngd) */
    /* per row */
    float *s, *p, *pq, *pbs; /* (kblk), pbs: (kblk / 16) */
    float *o, *blk, *acc16, *scratch; /* (D) */
    float pl_blk; /* NVFP4: the block's sum of P's dequantized codes over g_p (l_quantized) */
    double *h16, *step;               /* (D) INT8_FP8_F16ACC: fp16 partial, one mma step's sum */
    float *gmax;                      /* (scale groups) amax scratch of quantize_int8_groups */
    int64_t work;                     /* multiply-adds since the last poll */
} ref_ws;

/* Counts `work` multiply-adds and asks p->poll whether to stop once enough accumulated. */
static int stop_requested(const sa3_ref_params *p, ref_ws *w, int64_t work) {
    if (p->poll == NULL) {
        return 0;
    }
    w->work += work;
    if (w->work < SA3_REF_POLL_WORK) {
        return 0;
    }
    w->work = 0;
    return p->poll(p->poll_ctx) != 0;
}

static void ws_free(ref_ws *w) {
    free(w->ks);
    free(w->km);
    free(w->kq);
    free(w->kscale);
    free(w->kc);
    free(w->kbs);
    free(w->vq);
    free(w->vdeq);
    free(w->vfix);
    free(w->vbs);
    free(w->qs);
    free(w->qm);
    free(w->qq);
    free(w->qscale);
    free(w->qc);
    free(w->qbs);
    free(w->s);
    free(w->p);
    free(w->pq);
    free(w->pbs);
    free(w->o);
    free(w->blk);
    free(w->acc16);
    free(w->scratch);
    free(w->gmax);
    free(w->h16);
    free(w->step);
}

static sa3_status ws_alloc(ref_ws *w, const sa3_ref_params *p, int64_t kblk) {
    sa3_status st = SA3_OK;
    int64_t D = p->head_dim, Sq = p->seq_q, Sk = p->seq_k;
    int64_t nkb = group_count(k_groups(p), Sk, p->k_block);
    int64_t nqb = group_count(q_groups(p), Sq, p->q_block);
    int64_t ngd = ceil_div(D, NVFP4_GROUP), ngt = ceil_div(Sk, NVFP4_GROUP);
    int64_t skd, sqd, skg, sqg, tgd, qmd;
    int int8 = p->mode == SA3_REF_INT8_FP8 || p->mode == SA3_REF_INT8_FP16 || p->mode == SA3_REF_INT8_FP8_F16ACC;
    int fp4 = p->mode == SA3_REF_NVFP4;
    memset(w, 0, sizeof *w);
    if (!mul_ok(Sk, D, &skd) || !mul_ok(Sq, D, &sqd) || !mul_ok(Sk, ngd, &skg) ||
        !mul_ok(Sq, ngd, &sqg) || !mul_ok(ngt, D, &tgd) || !mul_ok(nqb, D, &qmd)) {
        return SA3_ERR_OVERFLOW;
    }
    w->ks = (float *)alloc_array(skd, sizeof(float), &st);
    w->km = (float *)alloc_array(D, sizeof(float), &st);
    w->qs = (float *)alloc_array(sqd, sizeof(float), &st);
    w->qm = (float *)alloc_array(qmd, sizeof(float), &st);
    if (p->mode != SA3_REF_EXACT) {
        w->vq = (float *)alloc_array(skd, sizeof(float), &st);
    }
    if (int8) {
        w->kq = (int8_t *)alloc_array(skd, sizeof(int8_t), &st);
        w->kscale = (float *)alloc_array(nkb, sizeof(float), &st);
        w->qq = (int8_t *)alloc_array(sqd, sizeof(int8_t), &st);
        w->qscale = (float *)alloc_array(nqb, sizeof(float), &st);
        w->gmax = (float *)alloc_array(nkb > nqb ? nkb : nqb, sizeof(float), &st);
        w->vdeq = (float *)alloc_array(D, sizeof(float), &st);
    }
    if (int8 || fp4) {
        w->vfix = (float *)alloc_array(D, sizeof(float), &st);
    }
    if (fp4) {
        w->kc = (float *)alloc_array(skd, sizeof(float), &st);
        w->kbs = (float *)alloc_array(skg, sizeof(float), &st);
        w->qc = (float *)alloc_array(sqd, sizeof(float), &st);
        w->qbs = (float *)alloc_array(sqg, sizeof(float), &st);
        w->vbs = (float *)alloc_array(tgd, sizeof(float), &st);
        w->pbs = (float *)alloc_array(ceil_div(kblk, NVFP4_GROUP), sizeof(float), &st);
    }
    w->s = (float *)alloc_array(kblk, sizeof(float), &st);
    w->p = (float *)alloc_array(kblk, sizeof(float), &st);
    w->pq = (float *)alloc_array(kblk, sizeof(float), &st);
    w->o = (float *)alloc_array(D, sizeof(float), &st);
    w->blk = (float *)alloc_array(D, sizeof(float), &st);
    w->acc16 = (float *)alloc_array(D, sizeof(float), &st);
    w->scratch = (float *)alloc_array(2 * D, sizeof(float), &st);
    if (p->mode == SA3_REF_INT8_FP8_F16ACC) {
        w->h16 = (double *)alloc_array(D, sizeof(double), &st);
        w->step = (double *)alloc_array(D, sizeof(double), &st);
    }
    return st;
}

/* Per-call constants and the current heads' NVFP4 second-level scales. */
typedef struct row_ctx {
    float scale_log2;
    float q_glob, k_glob, v_glob; /* NVFP4 second levels */
} row_ctx;

/* ---------------------------------------------------------------------------------------
 * Per-head preparation
 * ------------------------------------------------------------------------------------- */

static void prepare_kv(const sa3_ref_params *p, ref_ws *w, row_ctx *c, const float *k, const float *v) {
    int64_t D = p->head_dim, Sk = p->seq_k, n = Sk * D, i, s, d;
    if (p->smooth_k && p->mode == SA3_REF_NVFP4) {
        subtract_chunked_mean(k, Sk, D, w->ks, w->km, w->scratch);
    } else if (p->smooth_k) {
        subtract_block_means(k, Sk, D, Sk, w->ks, w->km, w->scratch);
    } else {
        memcpy(w->ks, k, (size_t)n * sizeof(float));
    }
    switch (p->mode) {
    case SA3_REF_EXACT:
        break;
    case SA3_REF_INT8_FP16:
        quantize_int8_groups(w->ks, Sk, D, k_groups(p), p->k_block, w->kq,
                             w->kscale, w->gmax);
        for (i = 0; i < n; ++i) {
            w->vq[i] = p->pv_dtype == SA3_DTYPE_F16 ? sa3_round_f16(v[i]) : sa3_round_bf16(v[i]);
        }
        break;
    case SA3_REF_INT8_FP8:
    case SA3_REF_INT8_FP8_F16ACC: {
        float *vamax = w->scratch;
        const float vtarget = p->mode == SA3_REF_INT8_FP8 ? SA3_E4M3_MAX : SA3_PV_F16ACC_V_MAX;
        quantize_int8_groups(w->ks, Sk, D, k_groups(p), p->k_block, w->kq,
                             w->kscale, w->gmax);
        for (d = 0; d < D; ++d) {
            vamax[d] = 0.0f;
        }
        for (s = 0; s < Sk; ++s) {
            for (d = 0; d < D; ++d) {
                float a = fabsf(v[s * D + d]);
                if (a > vamax[d]) {
                    vamax[d] = a;
                }
            }
        }
        for (d = 0; d < D; ++d) {
            w->vfix[d] = 0.0f; /* the error sum until the loop below turns it into the fix */
        }
        for (s = 0; s < Sk; ++s) {
            for (d = 0; d < D; ++d) {
                float vinv = vamax[d] >= FLT_MIN ? vtarget / vamax[d] : 0.0f;
                float x = v[s * D + d] * vinv;
                w->vq[s * D + d] = sa3_round_e4m3(x);
                w->vfix[d] += w->vq[s * D + d] - x;
            }
        }
        for (d = 0; d < D; ++d) {
            float vinv = vamax[d] >= FLT_MIN ? vtarget / vamax[d] : 0.0f;
            w->vdeq[d] = (vamax[d] / vtarget) / SA3_E4M3_MAX;
            w->vfix[d] = p->v_mean_fix && vinv > 0.0f ? -(w->vfix[d] / vinv) / (float)Sk : 0.0f;
        }
        break;
    }
    case SA3_REF_NVFP4:
        c->k_glob = nvfp4_global(w->ks, n);
        c->v_glob = nvfp4_global(v, n);
        nvfp4_rows(w->ks, Sk, D, c->k_glob, w->kc, w->kbs);
        nvfp4_cols(v, Sk, D, c->v_glob, w->vq, w->vbs);
        for (d = 0; d < D; ++d) {
            w->vfix[d] = 0.0f;
        }
        if (p->v_mean_fix) {
            for (s = 0; s < Sk; ++s) {
                const float *bs = w->vbs + (s / NVFP4_GROUP) * D;
                for (d = 0; d < D; ++d) {
                    w->vfix[d] += (w->vq[s * D + d] * bs[d]) * c->v_glob - v[s * D + d];
                }
            }
            for (d = 0; d < D; ++d) {
                w->vfix[d] = -w->vfix[d] / (float)Sk;
            }
        }
        break;
    }
}

static void prepare_q(const sa3_ref_params *p, ref_ws *w, row_ctx *c, const float *q) {
    int64_t D = p->head_dim, Sq = p->seq_q;
    int quantized = p->mode != SA3_REF_EXACT;
    if (quantized && p->per_block_mean) {
        subtract_block_means(q, Sq, D, p->q_block, w->qs, w->qm, w->scratch);
    } else {
        memcpy(w->qs, q, (size_t)(Sq * D) * sizeof(float));
    }
    if (p->mode == SA3_REF_INT8_FP8 || p->mode == SA3_REF_INT8_FP16 || p->mode == SA3_REF_INT8_FP8_F16ACC) {
        quantize_int8_groups(w->qs, Sq, D, q_groups(p), p->q_block, w->qq,
                             w->qscale, w->gmax);
    } else if (p->mode == SA3_REF_NVFP4) {
        c->q_glob = nvfp4_global(w->qs, Sq * D);
        nvfp4_rows(w->qs, Sq, D, c->q_glob, w->qc, w->qbs);
    }
}

/* ---------------------------------------------------------------------------------------
 * One query row
 * ------------------------------------------------------------------------------------- */

/* Score of query row i against key j (unmasked), log2 domain. */
static float score(const sa3_ref_params *p, const ref_ws *w, const row_ctx *c, const float *q_raw,
                   int64_t i, int64_t j) {
    int64_t D = p->head_dim, d;
    float s;
    switch (p->mode) {
    case SA3_REF_EXACT: {
        const float *qi = q_raw + i * D, *kj = w->ks + j * D;
        float acc = 0.0f;
        for (d = 0; d < D; ++d) {
            acc += qi[d] * kj[d];
        }
        return acc * c->scale_log2;
    }
    case SA3_REF_INT8_FP8:
    case SA3_REF_INT8_FP8_F16ACC:
    case SA3_REF_INT8_FP16: {
        const int8_t *qi = w->qq + i * D, *kj = w->kq + j * D;
        int64_t acc = 0;
        for (d = 0; d < D; ++d) {
            acc += (int64_t)qi[d] * (int64_t)kj[d];
        }
        s = (float)acc * ((w->qscale[group_of(q_groups(p), i, p->q_block)] *
                           c->scale_log2) *
                          w->kscale[group_of(k_groups(p), j, p->k_block)]);
        break;
    }
    case SA3_REF_NVFP4:
    default: {
        int64_t ngd = ceil_div(D, NVFP4_GROUP), grp;
        const float *qi = w->qc + i * D, *kj = w->kc + j * D;
        const float *qb = w->qbs + i * ngd, *kb = w->kbs + j * ngd;
        float acc = 0.0f;
        for (grp = 0; grp < ngd; ++grp) {
            int64_t d0 = grp * NVFP4_GROUP, d1 = min_i64(d0 + NVFP4_GROUP, D);
            float part = 0.0f;
            for (d = d0; d < d1; ++d) {
                part += qi[d] * kj[d];
            }
            acc += (qb[grp] * kb[grp]) * part;
        }
        s = acc * ((c->q_glob * c->scale_log2) * c->k_glob);
        break;
    }
    }
    /* not reached for EXACT (returned above), so qm is always filled here */
    if (p->per_block_mean) {
        const float *qm = w->qm + (i / p->q_block) * D, *kj = w->ks + j * D;
        float corr = 0.0f;
        for (d = 0; d < D; ++d) {
            corr += qm[d] * kj[d];
        }
        s += corr * c->scale_log2;
    }
    return s;
}

/* blk[d] = sum_j pq_j * vq[j, d] over the n keys starting at kb0 (NVFP4: block-scaled). */
static void block_pv(const sa3_ref_params *p, ref_ws *w, const float *v_raw, int64_t kb0, int64_t n,
                     float *gp_out) {
    int64_t D = p->head_dim, jj, d;
    float *blk = w->blk;
    for (d = 0; d < D; ++d) {
        blk[d] = 0.0f;
    }
    *gp_out = 1.0f;
    switch (p->mode) {
    case SA3_REF_EXACT:
        for (jj = 0; jj < n; ++jj) {
            const float *vj = v_raw + (kb0 + jj) * D;
            float pj = w->p[jj];
            for (d = 0; d < D; ++d) {
                blk[d] += pj * vj[d];
            }
        }
        break;
    case SA3_REF_INT8_FP16:
    case SA3_REF_INT8_FP8:
        for (jj = 0; jj < n; ++jj) {
            float pj = w->p[jj];
            const float *vj = w->vq + (kb0 + jj) * D;
            float pqj;
            if (p->mode == SA3_REF_INT8_FP8) {
                pqj = sa3_round_e4m3(pj * SA3_E4M3_MAX);
            } else if (p->pv_dtype == SA3_DTYPE_F16) {
                pqj = sa3_round_f16(pj);
            } else {
                pqj = sa3_round_bf16(pj);
            }
            for (d = 0; d < D; ++d) {
                blk[d] += pqj * vj[d];
            }
        }
        break;
    case SA3_REF_INT8_FP8_F16ACC: {
        /* step 6: fp16 partial over the block, one rounding per 32-key mma step */
        int64_t j0;
        for (d = 0; d < D; ++d) {
            w->h16[d] = 0.0;
        }
        for (j0 = 0; j0 < n; j0 += 32) {
            int64_t j1 = min_i64(j0 + 32, n);
            for (d = 0; d < D; ++d) {
                w->step[d] = 0.0;
            }
            for (jj = j0; jj < j1; ++jj) {
                double pqj = (double)sa3_round_e4m3(w->p[jj] * SA3_E4M3_MAX);
                const float *vj = w->vq + (kb0 + jj) * D;
                for (d = 0; d < D; ++d) {
                    w->step[d] += pqj * (double)vj[d]; /* exact: 8-bit products, < 2^53 span */
                }
            }
            for (d = 0; d < D; ++d) {
                w->h16[d] = sa3_round_f16_f64(w->h16[d] + w->step[d]);
            }
        }
        for (d = 0; d < D; ++d) {
            blk[d] = (float)w->h16[d];
        }
        break;
    }
    case SA3_REF_NVFP4: {
        float pmax = 0.0f, gp;
        int64_t ng = ceil_div(n, NVFP4_GROUP), grp;
        for (jj = 0; jj < n; ++jj) {
            if (w->p[jj] > pmax) {
                pmax = w->p[jj];
            }
        }
        gp = pmax / NVFP4_SECOND_LEVEL;
        *gp_out = gp;
        w->pl_blk = 0.0f;
        if (!(gp > 0.0f)) {
            break; /* every p of the block is 0: nothing to add */
        }
        for (grp = 0; grp < ng; ++grp) {
            int64_t j0 = grp * NVFP4_GROUP, j1 = min_i64(j0 + NVFP4_GROUP, n);
            /* V's token groups are aligned to 0 and kb0 % 16 == 0, so they coincide */
            const float *vbs = w->vbs + ((kb0 + j0) / NVFP4_GROUP) * D;
            float pbs = nvfp4_group(w->p + j0, j1 - j0, 1, gp, w->pq + j0);
            float csum = 0.0f;
            for (jj = j0; jj < j1; ++jj) {
                csum += w->pq[jj];
            }
            w->pl_blk += pbs * csum;
            for (d = 0; d < D; ++d) {
                w->acc16[d] = 0.0f;
            }
            for (jj = j0; jj < j1; ++jj) {
                const float *vj = w->vq + (kb0 + jj) * D;
                float cp = w->pq[jj];
                for (d = 0; d < D; ++d) {
                    w->acc16[d] += cp * vj[d];
                }
            }
            for (d = 0; d < D; ++d) {
                blk[d] += (pbs * vbs[d]) * w->acc16[d];
            }
        }
        break;
    }
    }
}

/* Step 8 of the spec: the row's natural-log LSE from its final running max m and sum l. */
static float row_lse(const sa3_ref_params *p, const ref_ws *w, const float *q_raw, int64_t i, float m, float l) {
    float corr = 0.0f, lse;
    int64_t d;
    if (l == 0.0f) {
        return -INFINITY;
    }
    if (p->smooth_k) {
        const float *qi = q_raw + i * p->head_dim;
        for (d = 0; d < p->head_dim; ++d) {
            corr += qi[d] * w->km[d];
        }
        corr *= p->sm_scale;
    }
    lse = (m + log2f(l)) * SA3_LN2;
    return lse + corr;
}

/* Returns nonzero when p->poll asked to stop (out is then incomplete). */
static int attend_row(const sa3_ref_params *p, ref_ws *w, const row_ctx *c, const float *q_raw,
                      const float *v_raw, int64_t i, float *out, float *lse_out) {
    int64_t D = p->head_dim, Sk = p->seq_k, kblk = p->k_block, kb0, jj, d;
    int64_t kend = p->is_causal ? min_i64(i + 1, Sk) : Sk;
    float m = -INFINITY, l = 0.0f;
    float *o = w->o;
    for (d = 0; d < D; ++d) {
        o[d] = 0.0f;
    }
    for (kb0 = 0; kb0 < kend; kb0 += kblk) {
        int64_t n = min_i64(kblk, Sk - kb0);
        float bmax = -INFINITY, m_new, alpha, lsum = 0.0f, gp;
        for (jj = 0; jj < n; ++jj) {
            int64_t j = kb0 + jj;
            float s = (p->is_causal && j > i) ? -INFINITY : score(p, w, c, q_raw, i, j);
            w->s[jj] = s;
            if (s > bmax) {
                bmax = s;
            }
        }
        m_new = m > bmax ? m : bmax;
        if (m_new == -INFINITY) {
            continue; /* nothing visible yet (only with -inf scores from the inputs) */
        }
        alpha = m == -INFINITY ? 0.0f : exp2f(m - m_new);
        for (jj = 0; jj < n; ++jj) {
            float pj = exp2f(w->s[jj] - m_new);
            w->p[jj] = pj;
            lsum += pj;
        }
        block_pv(p, w, v_raw, kb0, n, &gp);
        if (p->l_quantized) {
            lsum = w->pl_blk * gp; /* (only NVFP4 sets pl_blk; the binding allows no other mode) */
        }
        l = l * alpha + lsum;
        for (d = 0; d < D; ++d) {
            o[d] = o[d] * alpha + w->blk[d] * gp;
        }
        m = m_new;
        if (stop_requested(p, w, 2 * n * D)) { /* scores and P.V of this block */
            return 1;
        }
    }
    if (lse_out != NULL) {
        *lse_out = row_lse(p, w, q_raw, i, m, l);
    }
    if (l == 0.0f) {
        for (d = 0; d < D; ++d) {
            out[d] = 0.0f;
        }
        return 0;
    }
    for (d = 0; d < D; ++d) {
        float od = o[d];
        float fix = 0.0f;
        if (p->mode == SA3_REF_INT8_FP8 || p->mode == SA3_REF_INT8_FP8_F16ACC) {
            od *= w->vdeq[d];
            fix = w->vfix[d];
        } else if (p->mode == SA3_REF_NVFP4) {
            od *= c->v_glob;
            fix = w->vfix[d];
        }
        out[d] = od / l + fix;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Entry point
 * ------------------------------------------------------------------------------------- */

static sa3_status validate(const sa3_ref_params *p) {
    int64_t t;
    if (p == NULL || p->q == NULL || p->k == NULL || p->v == NULL || p->o == NULL) {
        return SA3_ERR_VALUE;
    }
    if (p->batch < 1 || p->heads_q < 1 || p->heads_kv < 1 || p->seq_q < 1 || p->seq_k < 1 ||
        p->head_dim < 1 || p->q_block < 1 || p->k_block < 1) {
        return SA3_ERR_VALUE;
    }
    if (p->heads_q % p->heads_kv != 0) {
        return SA3_ERR_VALUE;
    }
    switch (p->mode) {
    case SA3_REF_EXACT:
    case SA3_REF_INT8_FP8:
        break;
    case SA3_REF_INT8_FP8_F16ACC:
        if (p->k_block % 32 != 0) {
            return SA3_ERR_VALUE;
        }
        break;
    case SA3_REF_INT8_FP16:
        if (p->pv_dtype != SA3_DTYPE_F16 && p->pv_dtype != SA3_DTYPE_BF16) {
            return SA3_ERR_VALUE;
        }
        break;
    case SA3_REF_NVFP4:
        if (p->k_block % NVFP4_GROUP != 0) {
            return SA3_ERR_VALUE;
        }
        break;
    default:
        return SA3_ERR_VALUE;
    }
    /* every buffer's element count must fit int64 (and, below, size_t bytes) */
    if (!mul_ok(p->batch, p->heads_q, &t) || !mul_ok(t, p->seq_q, &t) || !mul_ok(t, p->head_dim, &t) ||
        (uint64_t)t > (uint64_t)(SIZE_MAX / sizeof(float))) {
        return SA3_ERR_OVERFLOW;
    }
    if (!mul_ok(p->batch, p->heads_kv, &t) || !mul_ok(t, p->seq_k, &t) || !mul_ok(t, p->head_dim, &t) ||
        (uint64_t)t > (uint64_t)(SIZE_MAX / sizeof(float))) {
        return SA3_ERR_OVERFLOW;
    }
    return SA3_OK;
}

sa3_status sa3_reference_attention(const sa3_ref_params *p) {
    ref_ws w;
    sa3_status st;
    int64_t D, Sq, Sk, group, kblk, b, hq, i;
    row_ctx c;

    st = validate(p);
    if (st != SA3_OK) {
        return st;
    }
    D = p->head_dim;
    Sq = p->seq_q;
    Sk = p->seq_k;
    group = p->heads_q / p->heads_kv;
    /* The block order is unchanged by capping k_block at Sk (one block either way); the
     * cap only keeps the row buffers small when a caller passes a huge k_block. */
    kblk = min_i64(p->k_block, Sk);

    st = ws_alloc(&w, p, kblk);
    if (st != SA3_OK) {
        ws_free(&w);
        return st;
    }
    c.scale_log2 = p->sm_scale * SA3_LOG2E;
    c.q_glob = c.k_glob = c.v_glob = 1.0f;
    for (b = 0; b < p->batch; ++b) {
        int64_t hk_prev = -1;
        for (hq = 0; hq < p->heads_q; ++hq) {
            int64_t hk = hq / group;
            const float *q = p->q + ((b * p->heads_q + hq) * Sq) * D;
            const float *k = p->k + ((b * p->heads_kv + hk) * Sk) * D;
            const float *v = p->v + ((b * p->heads_kv + hk) * Sk) * D;
            float *o = p->o + ((b * p->heads_q + hq) * Sq) * D;
            float *lse = p->lse != NULL ? p->lse + (b * p->heads_q + hq) * Sq : NULL;
            if (hk != hk_prev) {
                prepare_kv(p, &w, &c, k, v); /* shared by the `group` query heads of hk */
                hk_prev = hk;
            }
            prepare_q(p, &w, &c, q);
            if (stop_requested(p, &w, (Sk + Sq) * D)) {
                ws_free(&w);
                return SA3_ERR_VALUE;
            }
            for (i = 0; i < Sq; ++i) {
                if (attend_row(p, &w, &c, q, v, i, o + i * D, lse != NULL ? lse + i : NULL)) {
                    ws_free(&w);
                    return SA3_ERR_VALUE;
                }
            }
        }
    }
    ws_free(&w);
    return SA3_OK;
}

sa3_status sa3_reference_nvfp4_quantize(const float *x, int64_t rows, int64_t cols, int smooth, int64_t block,
                                        int along_rows, float *mean, float *codes, float *scales, float *g) {
    sa3_status st = SA3_OK;
    int64_t n;
    float *xs, *scratch;
    if (x == NULL || codes == NULL || scales == NULL || g == NULL || rows < 1 || cols < 1 || smooth < 0 ||
        smooth > 2 || (smooth == 2 && block < 1) || (smooth != 0 && mean == NULL) || !mul_ok(rows, cols, &n)) {
        return SA3_ERR_VALUE;
    }
    xs = (float *)alloc_array(n, sizeof(float), &st);
    scratch = (float *)alloc_array(2 * cols, sizeof(float), &st);
    if (st != SA3_OK) {
        free(xs);
        free(scratch);
        return st;
    }
    if (smooth == 1) {
        subtract_chunked_mean(x, rows, cols, xs, mean, scratch);
    } else if (smooth == 2) {
        subtract_block_means(x, rows, cols, block, xs, mean, scratch);
    } else {
        memcpy(xs, x, (size_t)n * sizeof(float));
    }
    *g = nvfp4_global(xs, n);
    if (along_rows) {
        nvfp4_rows(xs, rows, cols, *g, codes, scales);
    } else {
        nvfp4_cols(xs, rows, cols, *g, codes, scales);
    }
    free(xs);
    free(scratch);
    return SA3_OK;
}
