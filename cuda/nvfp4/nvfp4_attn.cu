/* nvfp4_attn.cu - the nvfp4 attention kernel: QK^T and P.V with the block-scaled FP4 MMA
 * (nvfp4_mma.cuh), reading Q, K, V as the pre-pass quantized them (nvfp4_quant.cu).
 *
 * CTA = 4 warps = 64 query rows of one (b, hq); each warp owns 16 rows and walks the keys
 * in tiles of 64 (= the reference's k_block 64, so the online softmax rescales at the same
 * points). K and V tiles are double-buffered in shared memory with cp.async. Per tile and
 * row, in the C reference's order (csrc/sa3_reference.c, steps 4-7 and NVFP4):
 *   s = acc * ((g_q * scale_log2) * g_k) + dot(qm, K_j - mean K) * scale_log2 (Q smoothing: qm
 *   is the mean of the CTA's 64 rows, subtracted before quantization; the correction per key is
 *   computed here from the caller's K, never stored beyond the tile), masked (-inf) past Sk and,
 *   causal, past the row;
 *   m_new = max(m, max s); alpha = exp2(m - m_new); p = exp2(s - m_new); l = l*alpha + sum p;
 *   P to NVFP4 with g_p = exp2(max s - m_new) / 2688 (= the block's largest p), groups of 16
 *   keys; blk = P.V block-scaled (fresh accumulators); O = O*alpha + blk*g_p.
 * (O * alpha + blk * g_p is one FFMA here, two roundings in the reference: 1 ulp of O.)
 * At the end out = (O * g_v) / l. The P fragments come from the S accumulators in registers:
 * a lane holds keys 8j+2t, 8j+2t+1 of every 8-key tile j, the A operand wants keys 8t..8t+7,
 * so the code bytes are transposed inside each quad (quad_transpose, two shuffles per word)
 * and the scale groups stay the reference's 16 consecutive keys.
 * exp2 is ex2.approx (the reference: exp2f); everything else rounds as the reference does.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "nvfp4_launch.cuh"
#include "nvfp4_mma.cuh"
#include "nvfp4_numerics.cuh"

namespace {

constexpr int kWarps = 4;
constexpr int kBQ = 16 * kWarps;
constexpr int kBK = SA3_NVFP4_TILE;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ void cp_async4(uint32_t smem, const void *gmem) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem), "l"(gmem));
}

/* Lane t of a quad holds word X_t with bytes X_t[j], j = 0..3; returns the word whose byte s
 * is X_s[t] (a 4x4 byte transpose across the quad). */
__device__ __forceinline__ uint32_t quad_transpose(uint32_t x, int t) {
    const uint32_t p = __shfl_xor_sync(0xffffffffu, x, 2);
    const uint32_t z = (t & 2) ? __byte_perm(x, p, 0x3276) : __byte_perm(x, p, 0x5410);
    const uint32_t q = __shfl_xor_sync(0xffffffffu, z, 1);
    return (t & 1) ? __byte_perm(z, q, 0x3715) : __byte_perm(z, q, 0x6240);
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <int DP>
struct Smem {
    static constexpr int KROW = DP / 2 + 16; /* padded rows: conflict-free fragment loads */
    static constexpr int VROW = kBK / 2 + 16;
    uint8_t kc[2][kBK][KROW];
    uint8_t ks[2][kBK][DP / 16];
    uint8_t vc[2][DP][VROW];
    uint32_t vs[2][DP];
    float corr[2][kBK]; /* dot(qm, K_j - mean K) * scale_log2 of the tile's keys (Q smoothing) */
    float qm[DP], km[DP];
};

template <int DP>
__device__ __forceinline__ void load_tile(Smem<DP> &sm, int st, const sa3_nvfp4_ws &w, int64_t bhk, int64_t kt) {
    const int tid = threadIdx.x;
    const uint8_t *kc = w.kc + (bhk * w.skp + kt * kBK) * (DP / 2);
    const uint8_t *ks = w.ks + (bhk * w.skp + kt * kBK) * (DP / 16);
    for (int i = tid; i < kBK * DP / 32; i += 32 * kWarps) {
        const int row = i / (DP / 32), part = i % (DP / 32);
        sa3_cp_async16_s(sa3_smem_addr(&sm.kc[st][row][part * 16]), kc + row * (DP / 2) + part * 16);
    }
    for (int i = tid; i < kBK * DP / 16 / 16; i += 32 * kWarps)
        sa3_cp_async16_s(sa3_smem_addr(&sm.ks[st][0][0] + i * 16), ks + i * 16);
    for (int i = tid; i < DP * 2; i += 32 * kWarps) {
        const int ch = i / 2, part = i % 2;
        sa3_cp_async16_s(sa3_smem_addr(&sm.vc[st][ch][part * 16]),
                         w.vc + (bhk * DP + ch) * (w.skp / 2) + kt * (kBK / 2) + part * 16);
    }
    for (int ch = tid; ch < DP; ch += 32 * kWarps)
        cp_async4(sa3_smem_addr(&sm.vs[st][ch]), w.vs + (bhk * DP + ch) * (w.skp / 16) + kt * (kBK / 16));
    sa3_cp_async_commit();
}

template <int DP, typename T>
__global__ void __launch_bounds__(32 * kWarps) nvfp4_attn_kernel(const sa3_nvfp4_params p, const sa3_nvfp4_ws w) {
    constexpr int NC = DP / 64; /* 64-wide d chunks of QK^T */
    constexpr int NT = kBK / 8; /* 8-key tiles of S */
    constexpr int ND = DP / 8;  /* 8-channel tiles of O */
    __shared__ __align__(16) Smem<DP> sm;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int64_t q0 = (int64_t)blockIdx.x * kBQ, hq = blockIdx.y, b = blockIdx.z;
    const int64_t hk = hq / (p.heads_q / p.heads_kv);
    const int64_t bhq = b * p.heads_q + hq, bhk = b * p.heads_kv + hk;
    const int64_t row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};

    /* Q fragments and scales, for the whole loop */
    uint32_t qa[NC][4], qsf[NC];
    {
        const uint8_t *qc = w.qc + (bhq * w.sqp + q0 + warp * 16) * (DP / 2);
        const uint8_t *qs = w.qs + (bhq * w.sqp + q0 + warp * 16) * (DP / 16);
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            qa[c][0] = *reinterpret_cast<const uint32_t *>(qc + g * (DP / 2) + c * 32 + 4 * t);
            qa[c][1] = *reinterpret_cast<const uint32_t *>(qc + (g + 8) * (DP / 2) + c * 32 + 4 * t);
            qa[c][2] = *reinterpret_cast<const uint32_t *>(qc + g * (DP / 2) + c * 32 + 16 + 4 * t);
            qa[c][3] = *reinterpret_cast<const uint32_t *>(qc + (g + 8) * (DP / 2) + c * 32 + 16 + 4 * t);
            qsf[c] = *reinterpret_cast<const uint32_t *>(qs + ((t & 1) ? g + 8 : g) * (DP / 16) + c * 4);
        }
    }
    const float scale_log2 = __fmul_rn(p.sm_scale, kLog2e);
    const float sc = __fmul_rn(__fmul_rn(w.gq[bhq], scale_log2), w.gk[bhk]);
    const T *kg = static_cast<const T *>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
    if (p.smooth_q) {
        for (int d = tid; d < DP; d += 32 * kWarps) {
            sm.qm[d] = w.qmean[(bhq * (w.sqp / kBQ) + blockIdx.x) * DP + d];
            sm.km[d] = w.kmean[bhk * DP + d];
        }
        __syncthreads();
    }

    int64_t nkt = sa3_ceil_div(p.seq_k, kBK);
    if (p.is_causal) nkt = min(nkt, (min(q0 + kBQ, p.seq_q) - 1) / kBK + 1);

    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    float o[ND][4];
#pragma unroll
    for (int nd = 0; nd < ND; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.f;

    load_tile<DP>(sm, 0, w, bhk, 0);
    for (int64_t kt = 0; kt < nkt; ++kt) {
        const int st = (int)(kt & 1);
        if (kt + 1 < nkt) {
            load_tile<DP>(sm, st ^ 1, w, bhk, kt + 1);
        }
        if (p.smooth_q) {
            /* Q smoothing's correction: two threads per key, each half of the d vectors, from the
             * caller's K (the reference: dot(qm, Ks[j]) in d order; here FMA in two halves) */
            const int j = tid / 2, half = tid % 2;
            const int64_t key = kt * kBK + j;
            float acc = 0.f;
            if (key < p.seq_k) {
                const T *kr = kg + key * p.k_stride_s;
                for (int v8 = half; v8 < p.head_dim / 8; v8 += 2) {
                    float x[8];
                    sa3_load8(kr + 8 * v8, x);
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc = fmaf(sm.qm[8 * v8 + e], __fsub_rn(x[e], sm.km[8 * v8 + e]), acc);
                }
            }
            acc += __shfl_xor_sync(0xffffffffu, acc, 1);
            if (half == 0) sm.corr[st][j] = __fmul_rn(acc, scale_log2);
        }
        if (kt + 1 < nkt) {
            sa3_cp_async_wait<1>();
        } else {
            sa3_cp_async_wait<0>();
        }
        __syncthreads();

        /* S = Q K^T (block-scaled accumulators, unscaled by the second levels) */
        float s[NT][4];
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                const uint8_t *kr = &sm.kc[st][8 * j + g][c * 32];
                const uint32_t kb[2] = {*reinterpret_cast<const uint32_t *>(kr + 4 * t),
                                        *reinterpret_cast<const uint32_t *>(kr + 16 + 4 * t)};
                const uint32_t ksf = *reinterpret_cast<const uint32_t *>(&sm.ks[st][8 * j + g][c * 4]);
                sa3_fp4_mma(s[j], qa[c], kb, qsf[c], ksf);
            }
        }
        /* scale, mask (key j of the tile visible iff j < lim: past Sk and, causal, past the row), row max */
        int lim[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            int64_t end = p.seq_k;
            if (p.is_causal) end = min(end, row[r] + 1);
            lim[r] = (int)max((int64_t)0, min((int64_t)kBK, end - kt * kBK)) - 2 * t; /* vs 8j + (e&1) */
        }
        float bmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            const float2 cj = p.smooth_q ? *reinterpret_cast<const float2 *>(&sm.corr[st][8 * j + 2 * t])
                                         : make_float2(0.f, 0.f);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float v = __fmul_rn(s[j][e], sc);
                if (p.smooth_q) v = __fadd_rn(v, (e & 1) ? cj.y : cj.x);
                if (8 * j + (e & 1) >= lim[e / 2]) v = -INFINITY;
                s[j][e] = v;
                bmax[e / 2] = fmaxf(bmax[e / 2], v);
            }
        }
        float alpha[2], gp[2], rgp[2], mu[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            bmax[r] = quad_max(bmax[r]);
            const float m_new = fmaxf(m[r], bmax[r]);
            mu[r] = m_new == -INFINITY ? 0.f : m_new; /* nothing visible yet: every p is 0 */
            alpha[r] = m[r] == -INFINITY ? 0.f : sa3_exp2(m[r] - m_new);
            gp[r] = __fdiv_rn(sa3_exp2(bmax[r] - mu[r]), SA3_NVFP4_SECOND_LEVEL);
            rgp[r] = sa3_nvfp4_rg(gp[r]);
            m[r] = m_new;
        }
        /* P = exp2(s - m), row sums, then NVFP4 per 16 keys (8-key tiles 2i, 2i+1) */
        float lsum[2] = {0.f, 0.f};
#pragma unroll
        for (int j = 0; j < NT; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[j][e] = sa3_exp2(s[j][e] - mu[e / 2]);
                lsum[e / 2] += s[j][e];
            }
        }
        uint32_t word[2][2] = {{0u, 0u}, {0u, 0u}}; /* [row][keys 0..31 / 32..63], byte j%4 = tile j */
        uint32_t psf[2] = {0u, 0u};
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            l[r] = __fadd_rn(__fmul_rn(l[r], alpha[r]), lsum[r]);
#pragma unroll
            for (int i = 0; i < NT / 2; ++i) {
                float amax = fmaxf(fmaxf(s[2 * i][2 * r], s[2 * i][2 * r + 1]),
                                   fmaxf(s[2 * i + 1][2 * r], s[2 * i + 1][2 * r + 1]));
                amax = quad_max(amax);
                float inv;
                const uint32_t bs = sa3_nvfp4_scale(amax, gp[r], rgp[r], inv);
                psf[r] |= bs << (8 * i);
#pragma unroll
                for (int jj = 2 * i; jj < 2 * i + 2; ++jj) {
                    const uint32_t byte = sa3_nvfp4_code_pair(s[jj][2 * r], s[jj][2 * r + 1], inv);
                    word[r][jj / 4] |= byte << (8 * (jj % 4));
                }
            }
        }
        const uint32_t pa[4] = {quad_transpose(word[0][0], t), quad_transpose(word[1][0], t),
                                quad_transpose(word[0][1], t), quad_transpose(word[1][1], t)};
        const uint32_t pscale = (t & 1) ? psf[1] : psf[0];

        /* O = O * alpha + (P V) * g_p */
#pragma unroll
        for (int nd = 0; nd < ND; ++nd) {
            float blk[4] = {0.f, 0.f, 0.f, 0.f};
            const uint8_t *vr = &sm.vc[st][8 * nd + g][0];
            const uint32_t vb[2] = {*reinterpret_cast<const uint32_t *>(vr + 4 * t),
                                    *reinterpret_cast<const uint32_t *>(vr + 16 + 4 * t)};
            sa3_fp4_mma(blk, pa, vb, pscale, sm.vs[st][8 * nd + g]);
#pragma unroll
            for (int e = 0; e < 4; ++e)
                o[nd][e] = fmaf(o[nd][e], alpha[e / 2], __fmul_rn(blk[e], gp[e / 2]));
        }
        __syncthreads(); /* the next iteration's prefetch overwrites this stage */
    }

    const float gv = w.gv[bhk];
    const float *vfix = w.vfix + bhk * DP; /* V's fix (the reference's v_mean_fix) */
    T *og = static_cast<T *>(p.o) + b * p.o_stride_b + hq * p.o_stride_h;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const float lr = quad_sum(l[r]);
        if (p.lse != nullptr) {
            /* corr = sm_scale * dot(Q[i], mean(K)): K smoothing shifted every score of the row by it */
            float corr = 0.f;
            if (p.smooth_k && row[r] < p.seq_q) {
                const T *qr = static_cast<const T *>(p.q) + b * p.q_stride_b + hq * p.q_stride_h + row[r] * p.q_stride_s;
                for (int64_t d = t; d < p.head_dim; d += 4)
                    corr += static_cast<float>(qr[d]) * w.kmean[bhk * DP + d];
            }
            corr = quad_sum(corr);
            if (t == 0 && row[r] < p.seq_q)
                p.lse[b * p.lse_stride_b + hq * p.lse_stride_h + row[r]] =
                    lr == 0.f ? -INFINITY : (m[r] + log2f(lr)) * kLn2 + corr * p.sm_scale;
        }
        if (row[r] >= p.seq_q) continue;
        T *orow = og + row[r] * p.o_stride_s;
#pragma unroll
        for (int nd = 0; nd < ND; ++nd) {
            const int col = 8 * nd + 2 * t;
            if (col >= p.head_dim) continue;
            const float a = lr == 0.f ? 0.f : __fadd_rn(__fdiv_rn(__fmul_rn(o[nd][2 * r], gv), lr), vfix[col]);
            const float c = lr == 0.f ? 0.f : __fadd_rn(__fdiv_rn(__fmul_rn(o[nd][2 * r + 1], gv), lr), vfix[col + 1]);
            *reinterpret_cast<uint32_t *>(orow + col) = sa3_pack2<T>(a, c);
        }
    }
}

template <int DP, typename T>
sa3_status run(const sa3_nvfp4_params &p, const sa3_nvfp4_ws &w, cudaStream_t s, char *err, size_t err_len) {
    const dim3 grid((unsigned)sa3_ceil_div(p.seq_q, kBQ), (unsigned)p.heads_q, (unsigned)p.batch);
    nvfp4_attn_kernel<DP, T><<<grid, 32 * kWarps, 0, s>>>(p, w);
    SA3_LAUNCH_CHECK("nvfp4 attention kernel");
    return SA3_OK;
}

} // namespace

sa3_status sa3_nvfp4_attention(const sa3_nvfp4_params &p, const sa3_nvfp4_ws &w, void *stream, char *err,
                               size_t err_len) {
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    const bool bf = p.dtype == SA3_DTYPE_BF16;
    if (w.dp == 64) return bf ? run<64, __nv_bfloat16>(p, w, s, err, err_len) : run<64, __half>(p, w, s, err, err_len);
    return bf ? run<128, __nv_bfloat16>(p, w, s, err, err_len) : run<128, __half>(p, w, s, err, err_len);
}
