/* hopper_quant.cu - the hopper family's pre-pass: K to INT8 and V to FP8 e4m3, written as the
 * attention kernel's shared-memory tiles (hopper_workspace.cuh).
 *
 * CPU reference: csrc/sa3_reference.c, mode int8-fp8 with q_block 1 and k_block 128, granularity
 * "quad": K - mean(K) quantized with 4 scales per 128-key block (keys by (j % 8) / 2, the quad
 * lane that holds their scores in the attention kernel), V with one scale per channel (max|V|
 * over all tokens / 448).
 *
 * Two launches, reading the caller's K/V in place (any (b, h, s) strides, unit d stride):
 *   1. stats: per chunk of tokens (Workspace::chunk), column sums of K and column max|V|.
 *   2. quant: per 128-key block, mean and V scale from the chunk results (fixed order, so
 *      deterministic), then the block's INT8 K tile (one CTA) and FP8 V^T tile (another).
 * The mean and the V scale need every token before any token can be quantized, hence two
 * passes; together they read K and V twice, a fraction of a percent of a long call. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <float.h>

#include "hopper_launch.cuh"
#include "hopper_sm90.cuh"
#include "hopper_workspace.cuh"

namespace sa3h {
namespace {

constexpr int kThreads = 256;

/* grid (B*Hkv, nchunks). Thread (r0, c) covers columns c*8..c*8+7 of rows r0, r0+RPP, ... */
template <int DP, typename T>
__global__ void __launch_bounds__(kThreads) stats_kernel(const sa3_problem p, const Workspace w) {
    grid_dep_launch_dependents(); /* the quant kernel's CTAs may load their blocks during our tail */
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
            uint4 rk[UNROLL], rv[UNROLL]; /* raw rows: converted only when added, to keep registers low */
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const int64_t tu = t + u * RPP;
                rk[u] = rv[u] = make_uint4(0u, 0u, 0u, 0u);
                if (tu < t1) {
                    rk[u] = *reinterpret_cast<const uint4 *>(kg + tu * p.k_stride[2] + c * 8);
                    rv[u] = *reinterpret_cast<const uint4 *>(vg + tu * p.v_stride[2] + c * 8);
                }
            }
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const T *hk = reinterpret_cast<const T *>(&rk[u]), *hv = reinterpret_cast<const T *>(&rv[u]);
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    sum[i] += static_cast<float>(hk[i]);
                    vmx[i] = fmaxf(vmx[i], fabsf(static_cast<float>(hv[i])));
                }
            }
        }
    }
    const int64_t out = (bh * w.nchunks + blockIdx.y) * DP;
    sa3_reduce_columns<DP, RPP, false>(sum, red, r0, c, w.ksum + out);
    __syncthreads();
    sa3_reduce_columns<DP, RPP, true>(vmx, red, r0, c, w.vmax + out);
}

/* The pieces of one 128-key block a thread holds: piece i is row (tid + i*kThreads) / CPR,
 * columns 8*c..8*c+7 with c = tid % CPR (the same for every i). */
template <int DP>
struct Block {
    static constexpr int CPR = DP / 8;                   /* 8-element pieces per row */
    static constexpr int PER = kBlockN * CPR / kThreads; /* pieces per thread */
    static constexpr int RPP = kThreads / CPR;           /* rows per pass of the CTA */
    uint4 raw[PER];                                      /* the caller's 16-bit values */
};

/* Rows [blk*128, blk*128+128) of one head of K or V as raw 16-bit pieces; rows past Sk and
 * columns past D read as zeros. */
template <int DP, typename T>
__device__ __forceinline__ void load_block(const T *base, int64_t stride_s, int64_t blk, const sa3_problem &p,
                                           Block<DP> &blkr) {
    const int tid = threadIdx.x, c = tid % Block<DP>::CPR;
#pragma unroll
    for (int i = 0; i < Block<DP>::PER; ++i) {
        const int64_t t = blk * kBlockN + (tid + i * kThreads) / Block<DP>::CPR;
        blkr.raw[i] = make_uint4(0u, 0u, 0u, 0u);
        if (t < p.seq_k && c * 8 < p.head_dim)
            blkr.raw[i] = *reinterpret_cast<const uint4 *>(base + t * stride_s + c * 8);
    }
}

template <typename T>
__device__ __forceinline__ float elem(const uint4 &raw, int e) {
    return static_cast<float>(reinterpret_cast<const T *>(&raw)[e]);
}

/* Scale group of key row r of a block (kKGroups per block, hopper_workspace.cuh). */
__device__ __forceinline__ int k_group_of_row(int r) { return (r & 7) >> 1; }

/* One 128-key block of K: the INT8 tile of K - mean, one scale per key group. */
template <int DP, typename T>
__device__ __forceinline__ void quant_k_block(const Block<DP> &blkr, const sa3_problem &p, const Workspace &w,
                                              int64_t bh, int64_t blk, const float *s_mean, float *s_red) {
    constexpr int CPR = Block<DP>::CPR, PER = Block<DP>::PER;
    /* A thread's rows are tid / CPR + i * RPP: with RPP a multiple of 8 they share one group,
     * and so do the 16 threads of each half-warp (one row at D = 128, two at D = 64). */
    static_assert(Block<DP>::RPP % 8 == 0 && 16 % CPR == 0, "rows of a half-warp share a K group");
    constexpr int kSegs = kThreads / 16; /* half-warps */
    const int tid = threadIdx.x, c = tid % CPR;
    const int group = k_group_of_row(tid / CPR);
    /* Padding rows (past Sk) and columns (past D) stay 0, not 0 - mean. */
    const float live_col = c * 8 < p.head_dim ? 1.f : 0.f;
    const int64_t live_rows = p.seq_k - blk * kBlockN;
    /* Group amax over its rows and all columns, then INT8 (same expressions as the reference). */
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const float live = (tid + i * kThreads) / CPR < live_rows ? live_col : 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) amax = fmaxf(amax, live * fabsf(elem<T>(blkr.raw[i], e) - s_mean[c * 8 + e]));
    }
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if ((tid & 15) == 0) s_red[tid / 16] = amax;
    __syncthreads();
    auto group_amax = [&](int g) {
        float a = 0.f;
#pragma unroll
        for (int seg = 0; seg < kSegs; ++seg)
            if (k_group_of_row(seg * 16 / CPR) == g) a = fmaxf(a, s_red[seg]);
        return a;
    };
    amax = group_amax(group);
    const float inv = amax >= FLT_MIN ? 127.f / amax : 0.f;
    if (tid < kKGroups) w.kscale[(bh * w.nblk + blk) * kKGroups + tid] = group_amax(tid) / 127.f;
    int8_t *ktile = w.kq + (bh * w.nblk + blk) * (int64_t)(kBlockN * DP);
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int r = (tid + i * kThreads) / CPR;
        const float live_inv = r < live_rows ? live_col * inv : 0.f;
        uint32_t packed[2] = {0u, 0u};
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            int q = __float2int_rn((elem<T>(blkr.raw[i], e) - s_mean[c * 8 + e]) * live_inv);
            q = max(-127, min(127, q));
            packed[e / 4] |= (uint32_t)(uint8_t)(int8_t)q << (8 * (e % 4));
        }
        *reinterpret_cast<uint2 *>(ktile + swizzled_offset(r, c >> 1, DP) + (c & 1) * 8) =
            make_uint2(packed[0], packed[1]);
    }
}

/* Byte j of each of a, b, c, d into word j: a 4x4 byte transpose. */
__device__ __forceinline__ void transpose4x4(uint32_t a, uint32_t b, uint32_t c, uint32_t d, uint32_t (&t)[4]) {
    const uint32_t x0 = __byte_perm(a, b, 0x5140), x1 = __byte_perm(a, b, 0x7362);
    const uint32_t y0 = __byte_perm(c, d, 0x5140), y1 = __byte_perm(c, d, 0x7362);
    t[0] = __byte_perm(x0, y0, 0x5410);
    t[1] = __byte_perm(x0, y0, 0x7632);
    t[2] = __byte_perm(x1, y1, 0x5410);
    t[3] = __byte_perm(x1, y1, 0x7632);
}

/* Word (4 channels) g of key row `key` in the e4m3 staging rows of a V block: XOR-swizzled by
 * the key's 16-key chunk, so that the transpose's reads below (a warp: 8 chunks x 4 groups) hit
 * distinct banks at D = 128 (at D = 64 two keys share a bank row: 2-way). The XOR keeps words
 * 2c, 2c+1 adjacent, so a row's 8-byte pieces stay 8-byte stores. */
template <int DP>
__device__ __forceinline__ int v8_word(int key, int g) {
    constexpr int kChunkMask = DP == 128 ? 7 : 3;
    return g ^ (((key >> 4) & kChunkMask) << 2);
}

/* One 128-key block of V: the FP8 V^T tile. Rows go to shared memory as e4m3 in key-major
 * order (8-byte stores, converted in pairs), then each thread reads 4 channels of 16 keys as
 * words and transposes them in registers into 4 output chunks. A warp's tasks are 8 key chunks
 * x 4 channel groups, so each of its 16-byte stores covers whole 128-byte rows of the tile
 * (full L2 sectors, not 16-byte pieces of a line from several warps). */
template <int DP, typename T>
__device__ __forceinline__ void quant_v_block(const Block<DP> &blkr, const Workspace &w, int64_t bh, int64_t blk,
                                              const float *s_vinv, uint8_t (*s_v8)[DP]) {
    constexpr int CPR = Block<DP>::CPR, PER = Block<DP>::PER;
    constexpr int kChunks = kBlockN / 16; /* 16-byte chunks per V^T row */
    const int tid = threadIdx.x, c = tid % CPR;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int r = (tid + i * kThreads) / CPR;
        const float *sv = s_vinv + c * 8;
        /* cvt.rn.satfinite: RNE, clamp to +-448; padding is 0 and stays 0 */
        const uint32_t lo = pack_e4m3(elem<T>(blkr.raw[i], 0) * sv[0], elem<T>(blkr.raw[i], 1) * sv[1],
                                      elem<T>(blkr.raw[i], 2) * sv[2], elem<T>(blkr.raw[i], 3) * sv[3]);
        const uint32_t hi = pack_e4m3(elem<T>(blkr.raw[i], 4) * sv[4], elem<T>(blkr.raw[i], 5) * sv[5],
                                      elem<T>(blkr.raw[i], 6) * sv[6], elem<T>(blkr.raw[i], 7) * sv[7]);
        *reinterpret_cast<uint2 *>(&s_v8[r][4 * v8_word<DP>(r, 2 * c)]) = make_uint2(lo, hi);
    }
    __syncthreads();
    /* Task (channel group g of 4, position chunk pc of 16): DP/4 * 8 tasks, pc fastest. */
    uint8_t *vtile = w.vq + (bh * w.nblk + blk) * (int64_t)(kBlockN * DP);
    for (int task = tid; task < (DP / 4) * kChunks; task += kThreads) {
        const int pc = task % kChunks, g = task / kChunks;
        uint32_t word[16];
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            const int pos = pc * 16 + i;
            const int key = (pos & ~31) + v_key_of_pos(pos & 31);
            word[i] = *reinterpret_cast<const uint32_t *>(&s_v8[key][4 * v8_word<DP>(key, g)]);
        }
        uint32_t out[4][4]; /* out[j] = the 16 bytes of channel 4g+j */
#pragma unroll
        for (int qd = 0; qd < 4; ++qd) {
            uint32_t t4[4];
            transpose4x4(word[4 * qd], word[4 * qd + 1], word[4 * qd + 2], word[4 * qd + 3], t4);
#pragma unroll
            for (int j = 0; j < 4; ++j) out[j][qd] = t4[j];
        }
#pragma unroll
        for (int j = 0; j < 4; ++j)
            *reinterpret_cast<uint4 *>(vtile + swizzled_offset(g * 4 + j, pc, kBlockN)) =
                make_uint4(out[j][0], out[j][1], out[j][2], out[j][3]);
    }
}

/* Head bh's mean of K (is_v false) or 448 / max|V| (is_v true) into s_col[DP], combined from
 * the nchunks chunk results, which PARTS threads per column read with independent loads and
 * combine in a fixed order (deterministic); with `publish` also the per-head results the
 * attention kernel reads (kmean, vscale). Ends with a CTA barrier. */
template <int DP>
__device__ __forceinline__ void combine_stats(const sa3_problem &p, const Workspace &w, int64_t bh, bool is_v,
                                              int smooth_k, bool publish, float (*s_part)[DP], float *s_col) {
    constexpr int PARTS = kThreads / DP;
    const int tid = threadIdx.x;
    {
        const int d = tid % DP, part = tid / DP;
        const float *src = (is_v ? w.vmax : w.ksum) + bh * w.nchunks * DP + d;
        float acc = 0.f;
#pragma unroll 4
        for (int64_t c = part; c < w.nchunks; c += PARTS) {
            const float x = src[c * DP];
            acc = is_v ? fmaxf(acc, x) : acc + x;
        }
        s_part[part][d] = acc;
    }
    __syncthreads();
    if (tid < DP) {
        float acc = 0.f;
#pragma unroll
        for (int i = 0; i < PARTS; ++i) acc = is_v ? fmaxf(acc, s_part[i][tid]) : acc + s_part[i][tid];
        if (is_v) {
            const float inv = acc >= FLT_MIN ? 448.f / acc : 0.f; /* subnormal max counts as 0 */
            s_col[tid] = inv;
            if (publish) w.vscale[bh * DP + tid] = acc / 448.f;
        } else {
            const float mean = smooth_k ? acc / (float)p.seq_k : 0.f;
            s_col[tid] = mean;
            if (publish) w.kmean[bh * DP + tid] = mean;
        }
    }
    __syncthreads();
}

/* Head (bh)'s K (is_v false) or V, block blk, into registers. */
template <int DP, typename T>
__device__ __forceinline__ void load_head_block(const sa3_problem &p, int64_t bh, bool is_v, int64_t blk,
                                                Block<DP> &blkr) {
    const int64_t b = bh / p.heads_kv, h = bh % p.heads_kv;
    if (is_v) {
        load_block<DP, T>(static_cast<const T *>(p.v) + b * p.v_stride[0] + h * p.v_stride[1], p.v_stride[2], blk,
                          p, blkr);
    } else {
        load_block<DP, T>(static_cast<const T *>(p.k) + b * p.k_stride[0] + h * p.k_stride[1], p.k_stride[2], blk,
                          p, blkr);
    }
}

template <int DP>
struct QuantSmem {
    float col[DP]; /* K: the mean; V: 448 / max|V| */
    float part[kThreads / DP][DP];
    float red[kThreads / 16]; /* per half-warp: the K group amax */
    __align__(16) uint8_t v8[kBlockN][DP];
};

/* grid (B*Hkv, 2, nblk): y = 0 quantizes a block of K, y = 1 the same block of V (separate
 * CTAs: more loads in flight than one CTA doing both in turn). Blocks go last first: the stats
 * kernel's last chunks are what the L2 still holds when this kernel starts (CTAs are dispatched
 * in grid order, x fastest). 4 CTAs per SM (64 registers): each CTA is a short dependent chain
 * (load and combine, reduce, store), so the number of resident CTAs, not the bytes in flight,
 * sets the pace. */
template <int DP, typename T>
__global__ void __launch_bounds__(kThreads, 4) quant_kernel(const sa3_problem p, const Workspace w, int smooth_k) {
    __shared__ QuantSmem<DP> sm;
    const int64_t bh = blockIdx.x;
    const bool is_v = blockIdx.y == 1;
    const int64_t blk = w.nblk - 1 - blockIdx.z;
    Block<DP> blkr;
    grid_dep_launch_dependents(); /* the attention kernel's CTAs may start during our tail */
    load_head_block<DP, T>(p, bh, is_v, blk, blkr); /* in flight during the combine */
    grid_dep_wait();                                       /* the stats kernel's results */
    combine_stats<DP>(p, w, bh, is_v, smooth_k, blk == 0, sm.part, sm.col);
    if (is_v) {
        quant_v_block<DP, T>(blkr, w, bh, blk, sm.col, sm.v8);
    } else {
        quant_k_block<DP, T>(blkr, p, w, bh, blk, sm.col, sm.red);
    }
}

template <int DP, typename T>
sa3_status quant_typed(const sa3_problem *p, const Workspace *w, int smooth_k, cudaStream_t stream, char *err,
                       size_t err_len) {
    const dim3 grid_stats((unsigned)(p->batch * p->heads_kv), (unsigned)w->nchunks);
    stats_kernel<DP, T><<<grid_stats, kThreads, 0, stream>>>(*p, *w);
    SA3_LAUNCH_CHECK("hopper stats launch");
    const dim3 grid_quant((unsigned)(p->batch * p->heads_kv), 2u, (unsigned)w->nblk);
    SA3_CUDA_TRY(launch_overlapping(quant_kernel<DP, T>, grid_quant, dim3(kThreads), 0, stream, *p, *w, smooth_k),
                 "hopper quant launch");
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
