/* quant_kv.cu - K and V quantization for the mma attention path.
 *
 * CPU reference: csrc/sa3_reference.c (steps 1, 2 and the FP8 V scaling); GPU tests compare
 * the whole attention against it (tests/test_gpu_mma.py).
 *
 * Two launches, both reading the caller's K/V in place (any (b, h, s) strides, unit d
 * stride), never writing them:
 *   1. kv_stats:  per 4096-token chunk, column sums of K (and column max|V| for FP8 PV).
 *   2. kv_quant:  mean = sum of chunk sums / Sk (fixed order: deterministic), then per
 *                 64-token block: K - mean -> INT8 with one scale per key group of the block
 *                 (key j in group (j % 8) / 2: the 16 keys one thread of the attention
 *                 kernel's mma layout multiplies, so each thread needs one scale per tile);
 *                 V -> FP8 e4m3
 *                 with one scale per channel (max|V| -> 448, or -> 1.75 for fp16-accumulated
 *                 P.V: attn_mma.cu), written transposed for the PV mma. Each CTA also sums
 *                 V's rounding error per channel; the last CTA of a head to finish adds the
 *                 CTAs' sums in index order (so the bits do not depend on which finished
 *                 last) into vfix, the reference's v_mean_fix (step 7).
 * The mean needs every token before any token can be quantized, hence two passes (the extra
 * read of K is small next to the attention: NOTES.md).
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "mma_workspace.cuh"
#include "quant_kv.cuh"

namespace {

constexpr int kThreads = 256;

/* grid (B*Hkv, nchunks). Thread (r0, c) sums columns c*8..c*8+7 of rows r0, r0+RPP, ... */
template <int DP, typename T, bool FP8>
__global__ void __launch_bounds__(kThreads) sa3_kv_stats_kernel(const sa3_attn_params p, const sa3_mma_ws w) {
    constexpr int CPR = DP / 8;
    constexpr int RPP = kThreads / CPR;
    __shared__ float red[RPP][DP + 1];
    const int64_t bh = blockIdx.x;
    const int64_t b = bh / p.heads_kv, h = bh % p.heads_kv;
    const int c = threadIdx.x % CPR, r0 = threadIdx.x / CPR;
    const int64_t t0 = (int64_t)blockIdx.y * SA3_KV_CHUNK;
    const int64_t t1 = min(p.seq_k, t0 + SA3_KV_CHUNK);
    const T *kg = static_cast<const T *>(p.k) + b * p.k_stride_b + h * p.k_stride_h;
    const T *vg = static_cast<const T *>(p.v) + b * p.v_stride_b + h * p.v_stride_h;
    float sum[8] = {0, 0, 0, 0, 0, 0, 0, 0}, vmx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (c * 8 < p.head_dim) {
        for (int64_t t = t0 + r0; t < t1; t += RPP) {
            float x[8];
            sa3_load8(kg + t * p.k_stride_s + c * 8, x);
#pragma unroll
            for (int i = 0; i < 8; ++i) sum[i] += x[i];
            if (FP8) {
                sa3_load8(vg + t * p.v_stride_s + c * 8, x);
#pragma unroll
                for (int i = 0; i < 8; ++i) vmx[i] = fmaxf(vmx[i], fabsf(x[i]));
            }
        }
    }
    const int64_t out = (bh * w.nchunks + blockIdx.y) * DP;
    /* kv_quant's completion count for this head starts at 0 (the launches are stream-ordered) */
    if (FP8 && blockIdx.y == 0 && threadIdx.x == 0) w.vdone[bh] = 0u;
    sa3_reduce_columns<DP, RPP, false>(sum, red, r0, c, w.ksum + out);
    if (FP8) {
        __syncthreads();
        sa3_reduce_columns<DP, RPP, true>(vmx, red, r0, c, w.vmax + out);
    }
}

/* Block-wide max of four per-thread values at once (one per key group). */
__device__ __forceinline__ void sa3_block_max4(float (&v)[4], float (*scratch)[4]) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int g = 0; g < 4; ++g) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v[g] = fmaxf(v[g], __shfl_xor_sync(0xffffffffu, v[g], o));
        if (lane == 0) scratch[warp][g] = v[g];
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < 4; ++g) {
        float m = scratch[0][g];
#pragma unroll
        for (int i = 1; i < kThreads / 32; ++i) m = fmaxf(m, scratch[i][g]);
        v[g] = m;
    }
    __syncthreads(); /* scratch is reused by the next call */
}

/* After every CTA of head bh has written its column sums of V's rounding error (verr): the
 * last one to finish turns their sum into vfix = -(sum / vinv) / Sk. */
template <int DP>
__device__ __forceinline__ void sa3_publish_vfix(const sa3_attn_params &p, const sa3_mma_ws &w, int64_t bh,
                                                 const float *s_vinv) {
    float sum;
    if (!sa3_last_cta_column_sums<DP>(w.verr + bh * w.nquant * DP, w.nquant, w.vdone + bh, gridDim.y, sum) ||
        threadIdx.x >= DP)
        return;
    w.vfix[bh * DP + threadIdx.x] = sa3_v_mean_fix(sum, s_vinv[threadIdx.x], p.seq_k);
}

/* grid (B*Hkv, nquant): four 64-token blocks per CTA. */
template <int DP, typename T, bool FP8>
__global__ void __launch_bounds__(kThreads) sa3_kv_quant_kernel(const sa3_attn_params p, const sa3_mma_ws w) {
    constexpr int CPR = DP / 8;
    constexpr int PER = 64 * CPR / kThreads; /* 16-byte chunks per thread per block */
    __shared__ float s_mean[DP];
    __shared__ float s_vinv[FP8 ? DP : 1];
    __shared__ float s_red[kThreads / 32][4];
    __shared__ __align__(16) uint8_t s_vt[FP8 ? DP : 1][FP8 ? 64 + 16 : 1];
    constexpr int RPP = kThreads / CPR; /* rows of one pass */
    __shared__ float s_err[FP8 ? RPP : 1][FP8 ? DP + 1 : 1];
    /* V: this thread's rounding-error sums of channels c*8..c*8+7, c = tid % CPR (the same c in
     * every pass: kThreads is a multiple of CPR) */
    float err[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t bh = blockIdx.x;
    const int64_t b = bh / p.heads_kv, h = bh % p.heads_kv;
    const T *kg = static_cast<const T *>(p.k) + b * p.k_stride_b + h * p.k_stride_h;
    const T *vg = static_cast<const T *>(p.v) + b * p.v_stride_b + h * p.v_stride_h;
    const int tid = threadIdx.x;

    if (tid < DP) {
        float s = 0.f, m = 0.f;
        for (int64_t c = 0; c < w.nchunks; ++c) {
            s += w.ksum[(bh * w.nchunks + c) * DP + tid];
            if (FP8) m = fmaxf(m, w.vmax[(bh * w.nchunks + c) * DP + tid]);
        }
        s_mean[tid] = p.smooth_k ? s / (float)p.seq_k : 0.f;
        if (blockIdx.y == 0) w.kmean[bh * DP + tid] = s_mean[tid]; /* the attention epilogue's LSE term */
        if (FP8) { /* max|V| -> 448, or SA3_PV_F16ACC_V_MAX where P.V accumulates in fp16 */
            const float vt = p.pv_mode == SA3_PV_FP8_F16ACC ? SA3_PV_F16ACC_V_MAX : 448.f;
            s_vinv[tid] = m >= 1.17549435e-38f ? vt / m : 0.f; /* subnormal max counts as 0 */
            if (blockIdx.y == 0) w.vscale[bh * DP + tid] = m / vt;
        }
    }
    __syncthreads();

    for (int blk = 0; blk < 4; ++blk) {
        const int64_t tok0 = (int64_t)blockIdx.y * SA3_KV_QUANT_TOKENS + blk * 64;
        if (tok0 >= w.skp) break;
        float x[PER][8];
        /* Every row this thread touches is in the same key group (r & 7) >> 1 (a pass moves
         * kThreads / CPR rows, a multiple of 8): one running max in a register. Indexing
         * amax[4] by the group instead put it in local memory (a 32-byte stack frame). */
        static_assert((kThreads / CPR) % 8 == 0, "rows per pass keep a thread's key group");
        const int my_g = ((tid / CPR) & 7) >> 1;
        float my_max = 0.f;
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int idx = tid + i * kThreads, r = idx / CPR, c = idx % CPR;
            const int64_t t = tok0 + r;
            if (t < p.seq_k && c * 8 < p.head_dim) {
                sa3_load8(kg + t * p.k_stride_s + c * 8, x[i]);
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    x[i][e] -= s_mean[c * 8 + e];
                    my_max = fmaxf(my_max, fabsf(x[i][e]));
                }
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) x[i][e] = 0.f;
            }
        }
        float amax[4];
#pragma unroll
        for (int g = 0; g < 4; ++g) amax[g] = g == my_g ? my_max : 0.f;
        sa3_block_max4(amax, s_red);
        /* Same expressions as the reference: inv = 127/amax, q = rn(x*inv), scale = amax/127. */
        float inv[4];
#pragma unroll
        for (int g = 0; g < 4; ++g) inv[g] = amax[g] >= 1.17549435e-38f ? 127.f / amax[g] : 0.f;
        float my_inv = inv[0];
#pragma unroll
        for (int g = 1; g < 4; ++g) my_inv = g == my_g ? inv[g] : my_inv;
        if (tid == 0) {
#pragma unroll
            for (int g = 0; g < 4; ++g) w.kscale[bh * (w.skp / 16) + tok0 / 16 + g] = amax[g] / 127.f;
        }
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int idx = tid + i * kThreads, r = idx / CPR, c = idx % CPR;
            uint32_t packed[2] = {0u, 0u};
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                int q = __float2int_rn(x[i][e] * my_inv);
                q = max(-127, min(127, q));
                packed[e / 4] |= (uint32_t)(uint8_t)(int8_t)q << (8 * (e % 4));
            }
            *reinterpret_cast<uint2 *>(w.kq + (bh * w.skp + tok0 + r) * DP + c * 8) = make_uint2(packed[0], packed[1]);
        }
        if (FP8) {
#pragma unroll
            for (int i = 0; i < PER; ++i) {
                const int idx = tid + i * kThreads, r = idx / CPR, c = idx % CPR;
                const int64_t t = tok0 + r;
                float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                if (t < p.seq_k && c * 8 < p.head_dim) sa3_load8(vg + t * p.v_stride_s + c * 8, v);
                const int pos = (r & ~31) + sa3_fp8_pos_of_key(r & 31);
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    /* cvt.rn.satfinite.e4m3: round to nearest even, clamp to +-448. */
                    const float xs = v[e] * s_vinv[c * 8 + e];
                    __nv_fp8_e4m3 q(xs);
                    s_vt[c * 8 + e][pos] = *reinterpret_cast<uint8_t *>(&q);
                    err[e] += static_cast<float>(q) - xs; /* padding: 0 - 0 */
                }
            }
            __syncthreads();
            for (int i = tid; i < DP * 4; i += kThreads) {
                const int d = i / 4, c = i % 4;
                *reinterpret_cast<uint4 *>(w.vq + (bh * DP + d) * w.skp + tok0 + c * 16) =
                    *reinterpret_cast<const uint4 *>(&s_vt[d][c * 16]);
            }
            __syncthreads();
        }
    }
    if constexpr (FP8) {
        sa3_reduce_columns<DP, RPP, false>(err, s_err, tid / CPR, tid % CPR,
                                           w.verr + (bh * w.nquant + blockIdx.y) * DP);
        sa3_publish_vfix<DP>(p, w, bh, s_vinv);
    }
}

template <int DP, typename T, bool FP8>
sa3_status sa3_quant_kv_typed(const sa3_attn_params *p, const sa3_mma_ws *w, cudaStream_t stream, char *err,
                              size_t err_len) {
    const dim3 grid_stats((unsigned)(p->batch * p->heads_kv), (unsigned)w->nchunks);
    sa3_kv_stats_kernel<DP, T, FP8><<<grid_stats, kThreads, 0, stream>>>(*p, *w);
    SA3_LAUNCH_CHECK("kv_stats launch");
    const dim3 grid_quant((unsigned)(p->batch * p->heads_kv), (unsigned)w->nquant);
    sa3_kv_quant_kernel<DP, T, FP8><<<grid_quant, kThreads, 0, stream>>>(*p, *w);
    SA3_LAUNCH_CHECK("kv_quant launch");
    return SA3_OK;
}

template <int DP, typename T>
sa3_status sa3_quant_kv_pv(const sa3_attn_params *p, const sa3_mma_ws *w, cudaStream_t s, char *err, size_t n) {
    return sa3_pv_is_fp8(p->pv_mode) ? sa3_quant_kv_typed<DP, T, true>(p, w, s, err, n)
                                    : sa3_quant_kv_typed<DP, T, false>(p, w, s, err, n);
}

template <typename T>
sa3_status sa3_quant_kv_dp(const sa3_attn_params *p, const sa3_mma_ws *w, cudaStream_t s, char *err, size_t n) {
    switch (w->dp) {
    case 64: return sa3_quant_kv_pv<64, T>(p, w, s, err, n);
    case 128: return sa3_quant_kv_pv<128, T>(p, w, s, err, n);
    default: return sa3_quant_kv_pv<256, T>(p, w, s, err, n);
    }
}

} // namespace

sa3_status sa3_quant_kv_launch(const sa3_attn_params *p, const sa3_mma_ws *w, cudaStream_t stream, char *err,
                               size_t err_len) {
    if (w->nchunks > 65535 || w->nquant > 65535) {
        snprintf(err, err_len, "seq_k=%lld is beyond the quantization grid (max %d tokens)", (long long)p->seq_k,
                 65535 * SA3_KV_QUANT_TOKENS);
        return SA3_ERR_UNSUPPORTED;
    }
    return p->dtype == SA3_DTYPE_BF16 ? sa3_quant_kv_dp<__nv_bfloat16>(p, w, stream, err, err_len)
                                      : sa3_quant_kv_dp<__half>(p, w, stream, err, err_len);
}
