/* nvfp4_quant.cu - the nvfp4 pre-pass: Q, K (smoothed) and V to NVFP4 in the workspace.
 *
 * CPU reference: csrc/sa3_reference.c (NVFP4 block comment). Bit-exact: the K mean is summed
 * in the reference's order (per 256-token chunk in token order, then the chunk sums in chunk
 * order), every quantization step is one IEEE fp32 operation (nvfp4_numerics.cuh), and maxima
 * do not depend on order. Four launches, because each needs all of the previous one:
 *   1. stats:  per 256-token chunk: K column sums, max |V|; Q's 64-row block means (row order,
 *              as the reference's per_block_mean with q_block 64) and max |Q - block mean|
 *   2. kmean:  per (b, hk): the mean of K over tokens (0 without smooth_k)
 *   3. kamax:  per chunk: max |K - mean|
 *   4. quant:  per 64-token tile of Q, K or V: second-level scale from the chunk maxima, then
 *              e4m3 block scales and e2m1 codes in the MMA's order (nvfp4_workspace.cuh).
 * The caller's tensors are read in place (any (b, h, s) strides, unit d stride), never written.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "nvfp4_launch.cuh"
#include "nvfp4_numerics.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kQuantThreads = 128;

/* Block-wide max of one value per thread (all threads get it). */
template <int NT>
__device__ __forceinline__ float block_max(float v, float *scratch) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = scratch[0];
#pragma unroll
    for (int i = 1; i < NT / 32; ++i) m = fmaxf(m, scratch[i]);
    return m;
}

/* max |x| over rows [t0, t1) x D of one head (minus mean[d] when mean != NULL). */
template <typename T>
__device__ float tile_amax(const T *base, int64_t stride_s, int64_t t0, int64_t t1, int64_t D, const float *mean) {
    const int64_t per = D / 8, total = (t1 - t0) * per;
    float m = 0.f;
    for (int64_t i = threadIdx.x; i < total; i += blockDim.x) {
        const int64_t t = t0 + i / per;
        const int c = (int)(i % per) * 8;
        float x[8];
        sa3_load8(base + t * stride_s + c, x);
#pragma unroll
        for (int e = 0; e < 8; ++e) m = fmaxf(m, fabsf(mean ? __fsub_rn(x[e], mean[c + e]) : x[e]));
    }
    return m;
}

template <int DP, typename T>
__global__ void __launch_bounds__(kThreads) nvfp4_stats_kernel(const sa3_nvfp4_params p, const sa3_nvfp4_ws w) {
    __shared__ float scratch[kThreads / 32];
    const int64_t bhk = p.batch * p.heads_kv;
    const int64_t c = blockIdx.y;
    if (blockIdx.x < bhk) {
        if (c >= w.nck) return;
        const int64_t bh = blockIdx.x, b = bh / p.heads_kv, h = bh % p.heads_kv;
        const int64_t t0 = c * SA3_NVFP4_CHUNK, t1 = min(p.seq_k, t0 + SA3_NVFP4_CHUNK);
        const T *kg = static_cast<const T *>(p.k) + b * p.k_stride_b + h * p.k_stride_h;
        const T *vg = static_cast<const T *>(p.v) + b * p.v_stride_b + h * p.v_stride_h;
        if (threadIdx.x < DP) {
            /* the reference's order: token order inside the chunk */
            float s = 0.f;
            if (threadIdx.x < p.head_dim) {
                const T *col = kg + t0 * p.k_stride_s + threadIdx.x;
                for (int64_t t = t0; t < t1; ++t, col += p.k_stride_s) s = __fadd_rn(s, static_cast<float>(*col));
            }
            w.ksum[(bh * w.nck + c) * DP + threadIdx.x] = s;
        }
        const float m = block_max<kThreads>(tile_amax(vg, p.v_stride_s, t0, t1, p.head_dim, nullptr), scratch);
        if (threadIdx.x == 0) w.vamax[bh * w.nck + c] = m;
    } else {
        constexpr int NB = SA3_NVFP4_CHUNK / SA3_NVFP4_TILE; /* Q blocks per chunk */
        __shared__ float qm[NB][DP];
        if (c >= w.ncq) return;
        const int64_t bh = blockIdx.x - bhk, b = bh / p.heads_q, h = bh % p.heads_q;
        const int64_t t0 = c * SA3_NVFP4_CHUNK, t1 = min(p.seq_q, t0 + SA3_NVFP4_CHUNK);
        const T *qg = static_cast<const T *>(p.q) + b * p.q_stride_b + h * p.q_stride_h;
        /* block means: thread (blk, d) sums its block's rows in row order */
        for (int i = threadIdx.x; i < NB * DP; i += kThreads) {
            const int blk = i / DP, d = i % DP;
            const int64_t r0 = t0 + (int64_t)blk * SA3_NVFP4_TILE, r1 = min(t1, r0 + SA3_NVFP4_TILE);
            float mean = 0.f;
            if (r0 < t1) {
                if (p.smooth_q && d < p.head_dim) {
                    float s = 0.f;
                    const T *col = qg + r0 * p.q_stride_s + d;
                    for (int64_t r = r0; r < r1; ++r, col += p.q_stride_s) s = __fadd_rn(s, static_cast<float>(*col));
                    mean = __fdiv_rn(s, (float)(r1 - r0));
                }
                w.qmean[(bh * (w.sqp / SA3_NVFP4_TILE) + r0 / SA3_NVFP4_TILE) * DP + d] = mean;
            }
            qm[blk][d] = mean;
        }
        __syncthreads();
        const int64_t per = p.head_dim / 8, total = (t1 - t0) * per;
        float m = 0.f;
        for (int64_t i = threadIdx.x; i < total; i += kThreads) {
            const int64_t t = t0 + i / per;
            const int cc = (int)(i % per) * 8;
            const float *mean = qm[(t - t0) / SA3_NVFP4_TILE];
            float x[8];
            sa3_load8(qg + t * p.q_stride_s + cc, x);
#pragma unroll
            for (int e = 0; e < 8; ++e) m = fmaxf(m, fabsf(__fsub_rn(x[e], mean[cc + e])));
        }
        m = block_max<kThreads>(m, scratch);
        if (threadIdx.x == 0) w.qamax[bh * w.ncq + c] = m;
    }
}

template <int DP>
__global__ void __launch_bounds__(DP) nvfp4_kmean_kernel(const sa3_nvfp4_params p, const sa3_nvfp4_ws w) {
    const int64_t bh = blockIdx.x;
    float s = 0.f;
    for (int64_t c = 0; c < w.nck; ++c) s = __fadd_rn(s, w.ksum[(bh * w.nck + c) * DP + threadIdx.x]);
    w.kmean[bh * DP + threadIdx.x] =
        (p.smooth_k && threadIdx.x < p.head_dim) ? __fdiv_rn(s, (float)p.seq_k) : 0.f;
    if (threadIdx.x == 0) w.vdone[bh] = 0u; /* the quant kernel's V tiles count up from here */
}

template <int DP, typename T>
__global__ void __launch_bounds__(kThreads) nvfp4_kamax_kernel(const sa3_nvfp4_params p, const sa3_nvfp4_ws w) {
    __shared__ float scratch[kThreads / 32];
    __shared__ float mean[DP];
    const int64_t bh = blockIdx.x, b = bh / p.heads_kv, h = bh % p.heads_kv, c = blockIdx.y;
    if (threadIdx.x < DP) mean[threadIdx.x] = w.kmean[bh * DP + threadIdx.x];
    __syncthreads();
    const int64_t t0 = c * SA3_NVFP4_CHUNK, t1 = min(p.seq_k, t0 + SA3_NVFP4_CHUNK);
    const T *kg = static_cast<const T *>(p.k) + b * p.k_stride_b + h * p.k_stride_h;
    const float m = block_max<kThreads>(tile_amax(kg, p.k_stride_s, t0, t1, p.head_dim, mean), scratch);
    if (threadIdx.x == 0) w.kamax[bh * w.nck + c] = m;
}

/* The head's second-level scale from its chunk maxima (every thread). */
__device__ __forceinline__ float head_global(const float *amax, int64_t n) {
    float m = 0.f;
    for (int64_t i = 0; i < n; ++i) m = fmaxf(m, amax[i]);
    return __fdiv_rn(m, SA3_NVFP4_SECOND_LEVEL);
}

/* sum over i of (value(code i) * bs) * g - x[i]: what the group's dequantization adds to its
 * 16 values (the reference's v_mean_fix terms, in its order of operations). */
__device__ __forceinline__ float dequant_error16(const float (&x)[16], uint2 codes, uint32_t bs, float g) {
    const float bsf = sa3_e4m3_to_f32(bs);
    const uint32_t word[2] = {codes.x, codes.y};
    float e = 0.f;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        const float deq = __fmul_rn(__fmul_rn(sa3_e2m1_value(word[i / 8] >> (4 * (i % 8))), bsf), g);
        e = __fadd_rn(e, __fsub_rn(deq, x[i]));
    }
    return e;
}

/* 16 floats -> 8 code bytes (as uint2) and the scale byte. */
__device__ __forceinline__ uint2 quant16(const float (&x)[16], float g, float rg, uint32_t &bs) {
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < 16; ++i) amax = fmaxf(amax, fabsf(x[i]));
    float inv;
    bs = sa3_nvfp4_scale(amax, g, rg, inv);
    uint32_t word[2] = {0u, 0u};
#pragma unroll
    for (int i = 0; i < 16; ++i) word[i / 8] |= sa3_nvfp4_code(x[i], inv) << (4 * (i % 8));
    return make_uint2(word[0], word[1]);
}

template <int DP, typename T>
__global__ void __launch_bounds__(kQuantThreads) nvfp4_quant_kernel(const sa3_nvfp4_params p, const sa3_nvfp4_ws w) {
    constexpr int NG = DP / 16;
    __shared__ float tile[SA3_NVFP4_TILE][DP + 1]; /* V only */
    __shared__ float mean[DP];
    const int64_t bhq = p.batch * p.heads_q, bhk = p.batch * p.heads_kv;
    const int64_t x = blockIdx.x, r0 = (int64_t)blockIdx.y * SA3_NVFP4_TILE;
    const int tid = threadIdx.x;
    if (x < bhq + bhk) {
        /* Q or K: groups of 16 along d, one (token, group) per thread and step */
        const bool is_q = x < bhq;
        const int64_t bh = is_q ? x : x - bhq;
        const int64_t heads = is_q ? p.heads_q : p.heads_kv;
        const int64_t b = bh / heads, h = bh % heads;
        const int64_t S = is_q ? p.seq_q : p.seq_k, Sp = is_q ? w.sqp : w.skp;
        if (r0 >= Sp) return;
        const T *src = static_cast<const T *>(is_q ? p.q : p.k) + b * (is_q ? p.q_stride_b : p.k_stride_b) +
                       h * (is_q ? p.q_stride_h : p.k_stride_h);
        const int64_t ss = is_q ? p.q_stride_s : p.k_stride_s;
        const float g = is_q ? head_global(w.qamax + bh * w.ncq, w.ncq) : head_global(w.kamax + bh * w.nck, w.nck);
        const float rg = sa3_nvfp4_rg(g);
        if (tid < DP) mean[tid] = is_q ? w.qmean[(bh * (Sp / SA3_NVFP4_TILE) + r0 / SA3_NVFP4_TILE) * DP + tid]
                                       : w.kmean[bh * DP + tid];
        if (blockIdx.y == 0 && tid == 0) (is_q ? w.gq : w.gk)[bh] = g;
        __syncthreads();
        uint8_t *codes = (is_q ? w.qc : w.kc) + (bh * Sp + r0) * (DP / 2);
        uint8_t *scales = (is_q ? w.qs : w.ks) + (bh * Sp + r0) * NG;
        for (int it = tid; it < SA3_NVFP4_TILE * NG; it += kQuantThreads) {
            const int row = it / NG, grp = it % NG, d0 = grp * 16;
            const int64_t t = r0 + row;
            float v[16];
#pragma unroll
            for (int i = 0; i < 16; ++i) v[i] = 0.f;
            if (t < S) {
#pragma unroll
                for (int hlf = 0; hlf < 2; ++hlf) {
                    const int d = d0 + 8 * hlf;
                    if (d < p.head_dim) {
                        float y[8];
                        sa3_load8(src + t * ss + d, y);
#pragma unroll
                        for (int e = 0; e < 8; ++e) v[8 * hlf + e] = __fsub_rn(y[e], mean[d + e]);
                    }
                }
            }
            uint32_t bs;
            const uint2 c = quant16(v, g, rg, bs);
            *reinterpret_cast<uint2 *>(codes + (int64_t)row * (DP / 2) + grp * 8) = c;
            scales[(int64_t)row * NG + grp] = (uint8_t)bs;
        }
    } else {
        /* V: groups of 16 tokens per channel, written transposed */
        const int64_t bh = x - bhq - bhk, b = bh / p.heads_kv, h = bh % p.heads_kv;
        if (r0 >= w.skp) return;
        const T *src = static_cast<const T *>(p.v) + b * p.v_stride_b + h * p.v_stride_h;
        const float g = head_global(w.vamax + bh * w.nck, w.nck);
        const float rg = sa3_nvfp4_rg(g);
        if (blockIdx.y == 0 && tid == 0) w.gv[bh] = g;
        for (int it = tid; it < SA3_NVFP4_TILE * (DP / 8); it += kQuantThreads) {
            const int row = it / (DP / 8), c8 = (it % (DP / 8)) * 8;
            const int64_t t = r0 + row;
            float y[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            if (t < p.seq_k && c8 < p.head_dim) sa3_load8(src + t * p.v_stride_s + c8, y);
#pragma unroll
            for (int e = 0; e < 8; ++e) tile[row][c8 + e] = y[e];
        }
        __syncthreads();
        const int64_t ntiles = w.skp / SA3_NVFP4_TILE;
        float *verr = w.verr + bh * ntiles * DP;
        /* a channel's 4 groups are the 4 lanes of a quad (it = 4 ch + grp, uniform trip count) */
        for (int it = tid; it < DP * 4; it += kQuantThreads) {
            const int ch = it / 4, grp = it % 4;
            float v[16];
#pragma unroll
            for (int i = 0; i < 16; ++i) v[i] = tile[grp * 16 + i][ch];
            uint32_t bs;
            const uint2 c = quant16(v, g, rg, bs);
            *reinterpret_cast<uint2 *>(w.vc + (bh * DP + ch) * (w.skp / 2) + r0 / 2 + grp * 8) = c;
            w.vs[(bh * DP + ch) * (w.skp / 16) + r0 / 16 + grp] = (uint8_t)bs;
            float e = dequant_error16(v, c, bs, g); /* padding (zero values, zero codes): 0 */
            e = __fadd_rn(e, __shfl_xor_sync(0xffffffffu, e, 1));
            e = __fadd_rn(e, __shfl_xor_sync(0xffffffffu, e, 2));
            if (grp == 0) verr[(r0 / SA3_NVFP4_TILE) * DP + ch] = e;
        }
        float sum;
        if (sa3_last_cta_column_sums<DP>(verr, ntiles, w.vdone + bh, (uint32_t)ntiles, sum) && tid < DP)
            w.vfix[bh * DP + tid] = -sum / (float)p.seq_k; /* the reference's vfix, with v_mean_fix */
    }
}

template <int DP, typename T>
sa3_status run(const sa3_nvfp4_params &p, const sa3_nvfp4_ws &w, cudaStream_t s, char *err, size_t err_len) {
    const int64_t bhq = p.batch * p.heads_q, bhk = p.batch * p.heads_kv;
    nvfp4_stats_kernel<DP, T><<<dim3((unsigned)(bhk + bhq), (unsigned)max(w.nck, w.ncq)), kThreads, 0, s>>>(p, w);
    SA3_LAUNCH_CHECK("nvfp4 stats kernel");
    nvfp4_kmean_kernel<DP><<<(unsigned)bhk, DP, 0, s>>>(p, w);
    SA3_LAUNCH_CHECK("nvfp4 kmean kernel");
    nvfp4_kamax_kernel<DP, T><<<dim3((unsigned)bhk, (unsigned)w.nck), kThreads, 0, s>>>(p, w);
    SA3_LAUNCH_CHECK("nvfp4 kamax kernel");
    const int64_t tiles = max(w.sqp, w.skp) / SA3_NVFP4_TILE;
    nvfp4_quant_kernel<DP, T><<<dim3((unsigned)(bhq + 2 * bhk), (unsigned)tiles), kQuantThreads, 0, s>>>(p, w);
    SA3_LAUNCH_CHECK("nvfp4 quant kernel");
    return SA3_OK;
}

} // namespace

sa3_status sa3_nvfp4_quantize(const sa3_nvfp4_params &p, const sa3_nvfp4_ws &w, void *stream, char *err,
                              size_t err_len) {
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    const bool bf = p.dtype == SA3_DTYPE_BF16;
    if (w.dp == 64) return bf ? run<64, __nv_bfloat16>(p, w, s, err, err_len) : run<64, __half>(p, w, s, err, err_len);
    return bf ? run<128, __nv_bfloat16>(p, w, s, err, err_len) : run<128, __half>(p, w, s, err, err_len);
}
