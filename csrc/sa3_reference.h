/* sa3_reference.h - CPU reference of the exact quantized attention the GPU kernels run.
 *
 * Plain loops, fp32 arithmetic, fixed block order, so a kernel's output can be compared
 * tightly against it (only accumulation order differs) and loosely against float64.
 */
#ifndef SA3_REFERENCE_H
#define SA3_REFERENCE_H

#include <stddef.h>
#include <stdint.h>
#include "sa3_params.h"

typedef enum sa3_ref_mode {
    SA3_REF_EXACT = 0,     /* fp32 attention, no quantization */
    SA3_REF_INT8_FP8 = 1,  /* INT8 Q/K per block, FP8 e4m3 P and V (V per-channel scale) */
    SA3_REF_INT8_FP16 = 2, /* INT8 Q/K per block, P and V rounded to the 16-bit input type */
    SA3_REF_NVFP4 = 3,     /* NVFP4: e2m1 values, e4m3 scale per 16 elements, P two-level */
    SA3_REF_INT8_FP8_F16ACC = 4 /* as INT8_FP8, V scaled to SA3_PV_F16ACC_V_MAX, each k_block's P.V
                                   accumulated in fp16 per 32-key step (sa3_reference.c, step 6) */
} sa3_ref_mode;

typedef enum sa3_ref_groups {
    SA3_REF_GROUPS_BLOCK = 0,
    SA3_REF_GROUPS_MMA = 1,
    SA3_REF_GROUPS_QUAD = 2
} sa3_ref_groups;

typedef struct sa3_ref_params {
    /* Contiguous float32 (B, H, S, D) buffers (the binding converts layouts). */
    const float *q; /* (B, Hq, Sq, D)  */
    const float *k; /* (B, Hkv, Sk, D) */
    const float *v; /* (B, Hkv, Sk, D) */
    float *o;       /* (B, Hq, Sq, D), written */
    int64_t batch, heads_q, heads_kv, seq_q, seq_k, head_dim;
    sa3_ref_mode mode;
    float sm_scale;
    int is_causal;      /* top-left, as torch SDPA */
    int smooth_k;       /* subtract K's per-channel mean over tokens */
    int per_block_mean; /* subtract Q's per-block mean, add mean_q.K^T back */
    int64_t q_block;    /* rows of Q sharing one scale (INT8 modes) */
    int64_t k_block;    /* rows of K sharing one scale, and the KV block order */
    sa3_dtype pv_dtype; /* INT8_FP16: SA3_DTYPE_F16 or SA3_DTYPE_BF16 rounding of P and V */
    int v_mean_fix;     /* INT8_FP8 modes and NVFP4: add minus V's mean rounding error to each
                           row (sa3_reference.c, step 7); the other modes ignore it */
    int l_quantized;    /* NVFP4 only: each block adds to the row sum l what P.V multiplies (P's
                           dequantized codes), not the fp32 p (sa3_reference.c, NVFP4 block) */
    /* INT8 scale groups (sa3_ref_groups). BLOCK: q_block / k_block consecutive rows share a
     * scale. MMA: the mma kernel's "per-thread" groups, which follow its accumulator layout:
     * query rows i and i+8 of each 16-row tile share a scale (group (i/16)*8 + i%8), and key j
     * shares one with the 16 keys of its 64-key block having the same (j%8)/2 (group
     * (j/64)*4 + (j%8)/2). QUAD: Q as BLOCK; K per k_block-key block in 4 groups by
     * (j % 8) / 2, the lane of the accumulator quad that holds key j's scores (group
     * (j/k_block)*4 + (j%k_block%8)/2), so each thread of a wgmma kernel sees one K scale. */
    sa3_ref_groups groups;
    /* Optional (B, Hq, Sq) contiguous fp32 output, NULL when not wanted: the natural-log
     * log-sum-exp of each row's scores sm_scale * q.k over its visible keys, as the scores
     * of this mode compute them (quantized, K smoothed), with sm_scale * q.mean(K) added back
     * so it estimates the LSE of the unsmoothed scores; -inf for a row with no visible key. */
    float *lse;
    /* Optional: called about every SA3_REF_POLL_WORK multiply-adds (never with a lock held,
     * from the calling thread); a nonzero return stops the computation, which then returns
     * SA3_ERR_VALUE with o incomplete (the caller's ctx says why: Ctrl-C in the binding).
     * NULL: never called. */
    int (*poll)(void *ctx);
    void *poll_ctx;
} sa3_ref_params;

#define SA3_REF_POLL_WORK ((int64_t)1 << 20)

/* Computes o for every (b, hq, row); the exact quantization scheme of each mode is
 * specified at the top of sa3_reference.c (and, for NVFP4, above its nvfp4_* helpers).
 * Requirements: all sizes >= 1, heads_q % heads_kv == 0, q_block/k_block >= 1, NVFP4 needs
 * k_block % 16 == 0 (P's scale groups must line up with V's), INT8_FP8_F16ACC needs
 * k_block % 32 == 0 (whole mma steps per block), INT8_FP16 needs pv_dtype F16
 * or BF16 (other modes ignore it). Single-threaded; allocates O(S * D) scratch, never
 * O(Sq * Sk). Reentrant (no globals).
 * Returns SA3_OK, SA3_ERR_VALUE (a requirement above is violated, or poll stopped it), SA3_ERR_OVERFLOW (a
 * size product overflows int64/size_t) or SA3_ERR_NOMEM; o is complete only on SA3_OK. */
sa3_status sa3_reference_attention(const sa3_ref_params *p);

/* The NVFP4 quantization of one head's tensor, exactly as sa3_reference_attention does it
 * (for tests that compare a kernel's quantized workspace with the reference bit for bit).
 * x: (rows, cols) contiguous fp32. smooth: 0 none; 1 minus the column mean over all rows (K,
 * the NVFP4 mode's chunked order), mean gets cols floats; 2 minus the column mean of each block
 * of `block` rows (Q with per_block_mean), mean gets ceil(rows/block)*cols floats. along_rows 1:
 * groups of 16 along each row (Q, K), scales (rows, ceil(cols/16)); 0: groups of 16 rows per
 * column (V), scales (ceil(rows/16), cols). codes gets rows*cols code values, *g the second
 * level. Returns SA3_OK, SA3_ERR_VALUE or SA3_ERR_NOMEM. */
sa3_status sa3_reference_nvfp4_quantize(const float *x, int64_t rows, int64_t cols, int smooth, int64_t block,
                                        int along_rows, float *mean, float *codes, float *scales, float *g);

#endif /* SA3_REFERENCE_H */
