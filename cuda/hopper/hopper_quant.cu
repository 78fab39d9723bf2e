/* hopper_quant.cu - the hopper family's pre-pass: K to INT8 and V to FP8 e4m3, written as the
 * attention kernel's shared-memory tiles (hopper_workspace.cuh).
 *
 * CPU reference: csrc/sa3_reference.c, mode int8-fp8 with q_block 1 and k_block 128 (block
 * granularity): K - mean(K) quantized with one scale per 128-key block, V with one scale per
 * channel (max|V| over all tokens / 448).
 *
 * Two launches, reading the caller's K/V in place (any (b, h, s) strides, unit d stride):
 *   1. stats: per chunk of tokens (Workspace::chunk), column sums of K and column max|V|.
 *   2. quant: per 128-key block, mean and V scale from the chunk results (fixed order, so
 *      deterministic), then the block's INT8 K tile (one CTA) and FP8 V^T tile (another).
 * The mean and the V scale need every token before any token can be quantized, hence two
 * passes; together they read K and V twice, a fraction of a percent of a long call. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <float.h>

#include "hopper_launch.cuh"
#include "hopper_workspace.cuh"

namespace sa3h {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ void load8(const T *src, float (&x)[8]) {
    uint4 raw = *reinterpret_cast<const uint4 *>(src);
    const T *h = reinterpret_cast<const T *>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = static_cast<float>(h[i]);
}

/* grid (B*Hkv, nchunks). Thread (r0, c) covers columns c*8..c*8+7 of rows r0, r0+RPP, ... */
template <int DP, typename T>
__global__ void __launch_bounds__(kThreads) stats_kernel(const sa3_problem p, const Workspace w) {
    constexpr int CPR = DP / 8;
    constexpr int RPP = kThreads / CPR;
    __shared__ float red[RPP][DP + 1];
    const int64_t bh = blockIdx.x;
    const int64_t b = bh / p.heads_kv, h = bh % p.heads_kv;
    const int c = threadIdx.x % CPR, r0 = threadIdx.x / CPR;
    const int64_t t0 = (int64_t)blockIdx.y * w.chunk;
    const int64_t t1 = min(p.seq_k, t0 + w.chunk);
    const T *kg = static_cast<const T *>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
    const T *vg = static_cast<const T *>(p.v) + b * p.v_stride[0] + h * p.v_stride[1];
    float sum[8] = {0, 0, 0, 0, 0, 0, 0, 0}, vmx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (c * 8 < p.head_dim) {
        /* UNROLL rows in flight per thread: a pass over K and V is bound by outstanding loads. */
        constexpr int UNROLL = 4;
        for (int64_t t = t0 + r0; t < t1; t += UNROLL * RPP) {
            float x[UNROLL][8], y[UNROLL][8];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const int64_t tu = t + u * RPP;
                if (tu < t1) {
                    load8(kg + tu * p.k_stride[2] + c * 8, x[u]);
                    load8(vg + tu * p.v_stride[2] + c * 8, y[u]);
                } else {
#pragma unroll
                    for (int i = 0; i < 8; ++i) x[u][i] = y[u][i] = 0.f;
                }
            }
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    sum[i] += x[u][i];
                    vmx[i] = fmaxf(vmx[i], fabsf(y[u][i]));
                }
            }
        }
    }
    const int64_t out = (bh * w.nchunks + blockIdx.y) * DP;
#pragma unroll
    for (int i = 0; i < 8; ++i) red[r0][c * 8 + i] = sum[i];
    __syncthreads();
    if (threadIdx.x < DP) {
        float s = 0.f;
        for (int r = 0; r < RPP; ++r) s += red[r][threadIdx.x];
        w.ksum[out + threadIdx.x] = s;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 8; ++i) red[r0][c * 8 + i] = vmx[i];
    __syncthreads();
    if (threadIdx.x < DP) {
        float m = 0.f;
        for (int r = 0; r < RPP; ++r) m = fmaxf(m, red[r][threadIdx.x]);
        w.vmax[out + threadIdx.x] = m;
    }
}

/* One 128-key block of K: the INT8 tile of K - mean, one scale for the block. */
template <int DP, typename T>
__device__ __forceinline__ void quant_k_block(const sa3_problem &p, const Workspace &w, int64_t bh, int64_t blk,
                                              const float *s_mean, float *s_red) {
    constexpr int CPR = DP / 8;                    /* 8-element pieces per row */
    constexpr int PER = kBlockN * CPR / kThreads;  /* pieces per thread */
    const int64_t b = bh / p.heads_kv, h = bh % p.heads_kv;
    const T *kg = static_cast<const T *>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
    const int tid = threadIdx.x;
    const int64_t tok0 = blk * kBlockN;
    /* K: block amax over all rows and columns, then INT8 (same expressions as the reference). */
    float x[PER][8];
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int idx = tid + i * kThreads, r = idx / CPR, c = idx % CPR;
        const int64_t t = tok0 + r;
        if (t < p.seq_k && c * 8 < p.head_dim) {
            load8(kg + t * p.k_stride[2] + c * 8, x[i]);
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                x[i][e] -= s_mean[c * 8 + e];
                amax = fmaxf(amax, fabsf(x[i][e]));
            }
        } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) x[i][e] = 0.f;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if ((tid & 31) == 0) s_red[tid / 32] = amax;
    __syncthreads();
    amax = s_red[0];
#pragma unroll
    for (int i = 1; i < kThreads / 32; ++i) amax = fmaxf(amax, s_red[i]);
    const float inv = amax >= FLT_MIN ? 127.f / amax : 0.f;
    if (tid == 0) w.kscale[bh * w.nblk + blk] = amax / 127.f;
    int8_t *ktile = w.kq + (bh * w.nblk + blk) * (int64_t)(kBlockN * DP);
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int idx = tid + i * kThreads, r = idx / CPR, c = idx % CPR;
        uint32_t packed[2] = {0u, 0u};
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            int q = __float2int_rn(x[i][e] * inv);
            q = max(-127, min(127, q));
            packed[e / 4] |= (uint32_t)(uint8_t)(int8_t)q << (8 * (e % 4));
        }
        *reinterpret_cast<uint2 *>(ktile + swizzled_offset(r, c >> 1, DP) + (c & 1) * 8) =
            make_uint2(packed[0], packed[1]);
    }

}

/* One 128-key block of V: the FP8 V^T tile, transposed through shared memory. */
template <int DP, typename T>
__device__ __forceinline__ void quant_v_block(const sa3_problem &p, const Workspace &w, int64_t bh, int64_t blk,
                                              const float *s_vinv, uint8_t (*s_vt)[kBlockN + 16]) {
    constexpr int CPR = DP / 8;
    constexpr int PER = kBlockN * CPR / kThreads;
    const int64_t b = bh / p.heads_kv, h = bh % p.heads_kv;
    const T *vg = static_cast<const T *>(p.v) + b * p.v_stride[0] + h * p.v_stride[1];
    const int tid = threadIdx.x;
    const int64_t tok0 = blk * kBlockN;
    /* V: e4m3 with the per-channel scale, transposed through shared memory into the permuted key order. */
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int idx = tid + i * kThreads, r = idx / CPR, c = idx % CPR;
        const int64_t t = tok0 + r;
        float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (t < p.seq_k && c * 8 < p.head_dim) load8(vg + t * p.v_stride[2] + c * 8, v);
        const int pos = (r & ~31) + v_pos_of_key(r & 31);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            __nv_fp8_e4m3 q(v[e] * s_vinv[c * 8 + e]); /* cvt.rn.satfinite: RNE, clamp to +-448 */
            s_vt[c * 8 + e][pos] = *reinterpret_cast<uint8_t *>(&q);
        }
    }
    __syncthreads();
    uint8_t *vtile = w.vq + (bh * w.nblk + blk) * (int64_t)(kBlockN * DP);
    for (int i = tid; i < DP * (kBlockN / 16); i += kThreads) {
        const int d = i / (kBlockN / 16), c = i % (kBlockN / 16);
        *reinterpret_cast<uint4 *>(vtile + swizzled_offset(d, c, kBlockN)) =
            *reinterpret_cast<const uint4 *>(&s_vt[d][c * 16]);
    }
}

/* grid (B*Hkv, nblk, 2): z = 0 quantizes a block of K, z = 1 the same block of V (separate
 * CTAs: more loads in flight than one CTA doing both in turn). */
template <int DP, typename T>
__global__ void __launch_bounds__(kThreads) quant_kernel(const sa3_problem p, const Workspace w, int smooth_k) {
    constexpr int PARTS = kThreads / DP; /* threads reducing one column's chunk results */
    __shared__ float s_mean[DP];
    __shared__ float s_vinv[DP];
    __shared__ float s_part[2][PARTS][DP];
    __shared__ float s_red[kThreads / 32];
    __shared__ __align__(16) uint8_t s_vt[DP][kBlockN + 16];
    const int64_t bh = blockIdx.x;
    const int tid = threadIdx.x;

    /* Column d's chunk results, split over PARTS threads (loads unrolled: they are independent),
     * combined in a fixed order: deterministic. */
    {
        const int d = tid % DP, part = tid / DP;
        const float *ks = w.ksum + bh * w.nchunks * DP + d, *vm = w.vmax + bh * w.nchunks * DP + d;
        float s = 0.f, m = 0.f;
#pragma unroll 4
        for (int64_t c = part; c < w.nchunks; c += PARTS) {
            s += ks[c * DP];
            m = fmaxf(m, vm[c * DP]);
        }
        s_part[0][part][d] = s;
        s_part[1][part][d] = m;
    }
    __syncthreads();
    if (tid < DP) {
        float s = 0.f, m = 0.f;
#pragma unroll
        for (int i = 0; i < PARTS; ++i) {
            s += s_part[0][i][tid];
            m = fmaxf(m, s_part[1][i][tid]);
        }
        const float mean = smooth_k ? s / (float)p.seq_k : 0.f;
        s_mean[tid] = mean;
        s_vinv[tid] = m >= FLT_MIN ? 448.f / m : 0.f; /* subnormal max counts as 0 */
        if (blockIdx.y == 0 && blockIdx.z == 0) {
            w.vscale[bh * DP + tid] = m / 448.f;
            w.kmean[bh * DP + tid] = mean;
        }
    }
    __syncthreads();
    if (blockIdx.z == 0) {
        quant_k_block<DP, T>(p, w, bh, blockIdx.y, s_mean, s_red);
    } else {
        quant_v_block<DP, T>(p, w, bh, blockIdx.y, s_vinv, s_vt);
    }
}
template <int DP, typename T>
sa3_status quant_typed(const sa3_problem *p, const Workspace *w, int smooth_k, cudaStream_t stream, char *err,
                       size_t err_len) {
    const dim3 grid_stats((unsigned)(p->batch * p->heads_kv), (unsigned)w->nchunks);
    stats_kernel<DP, T><<<grid_stats, kThreads, 0, stream>>>(*p, *w);
    SA3_LAUNCH_CHECK("hopper stats launch");
    const dim3 grid_quant((unsigned)(p->batch * p->heads_kv), (unsigned)w->nblk, 2u);
    quant_kernel<DP, T><<<grid_quant, kThreads, 0, stream>>>(*p, *w, smooth_k);
    SA3_LAUNCH_CHECK("hopper quant launch");
    return SA3_OK;
}

template <typename T>
sa3_status quant_dp(const sa3_problem *p, const Workspace *w, int smooth_k, cudaStream_t s, char *err, size_t n) {
    return w->dp == 64 ? quant_typed<64, T>(p, w, smooth_k, s, err, n) : quant_typed<128, T>(p, w, smooth_k, s, err, n);
}

} // namespace

sa3_status quant_launch(const sa3_problem *p, const Workspace *w, int smooth_k, cudaStream_t stream, char *err,
                        size_t err_len) {
    return p->dtype == SA3_DTYPE_BF16 ? quant_dp<__nv_bfloat16>(p, w, smooth_k, stream, err, err_len)
                                      : quant_dp<__half>(p, w, smooth_k, stream, err, err_len);
}

} // namespace sa3h
