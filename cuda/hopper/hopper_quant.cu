/* hopper_quant.cu - the hopper family's pre-pass: K to INT8 and V to FP8 e4m3, written as the
 * attention kernel's shared-memory tiles (hopper_workspace.cuh).
 *
 * CPU reference: csrc/sa3_reference.c, mode int8-fp8 with q_block 1 and k_block 128, granularity
 * "quad": K - mean(K) quantized with 4 scales per 128-key block (keys by (j % 8) / 2, the quad
 * lane that holds their scores in the attention kernel), V with one scale per channel (max|V|
 * over all tokens / 448).
 *
 * One launch, reading the caller's K/V in place (any (b, h, s) strides, unit d stride): one
 * thread block cluster per K head and one per V head, each CTA owning a run of 128-key blocks.
 *   1. statistics: each CTA's column sums of K (or column max|V|) over its blocks, combined
 *      through distributed shared memory in rank order.
 *   2. quantization: the CTA's blocks again, last first (the ones phase 1 read last are the
 *      ones the L2 still holds), into INT8 K tiles or FP8 V^T tiles. A V CTA also sums each
 *      channel's rounding error (code - V * vinv), combined through distributed shared memory
 *      in rank order at the end into vfix (the reference's v_mean_fix, step 7).
 * The mean and the V scale need every token before any token can be quantized; the cluster
 * barrier is that dependency, so there is no second launch and no partial result in global
 * memory. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <float.h>
#include <stdint.h>

#include "hopper_launch.cuh"
#include "hopper_sm90.cuh"
#include "hopper_workspace.cuh"

namespace sa3h {
namespace {

constexpr int kThreads = 256;

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
                                           Block<DP> &blkr, uint64_t policy) {
    const int tid = threadIdx.x, c = tid % Block<DP>::CPR;
#pragma unroll
    for (int i = 0; i < Block<DP>::PER; ++i) {
        const int64_t t = blk * kBlockN + (tid + i * kThreads) / Block<DP>::CPR;
        blkr.raw[i] = make_uint4(0u, 0u, 0u, 0u);
        if (t < p.seq_k && c * 8 < p.head_dim)
            blkr.raw[i] = ld_global_hint(base + t * stride_s + c * 8, policy);
    }
}

/* An opaque copy: the compiler cannot prove the values unchanged, so it does not reuse what it
 * computed from them before. */
template <int DP>
__device__ __forceinline__ void launder(Block<DP> &b) {
#pragma unroll
    for (int i = 0; i < Block<DP>::PER; ++i)
        asm volatile("" : "+r"(b.raw[i].x), "+r"(b.raw[i].y), "+r"(b.raw[i].z), "+r"(b.raw[i].w));
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
    /* Convert the raw values again rather than keep the 64 differences of the amax loop live
     * across the barrier, which spills at 64 registers: the copy hides that they are the same. */
    Block<DP> again = blkr;
    launder(again);
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int r = (tid + i * kThreads) / CPR;
        const float live_inv = r < live_rows ? live_col * inv : 0.f;
        uint32_t packed[2] = {0u, 0u};
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            int q = __float2int_rn((elem<T>(again.raw[i], e) - s_mean[c * 8 + e]) * live_inv);
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
                                              const float *s_vinv, uint8_t (*s_v8)[DP], float (&err)[8]) {
    constexpr int CPR = Block<DP>::CPR, PER = Block<DP>::PER;
    constexpr int kChunks = kBlockN / 16; /* 16-byte chunks per V^T row */
    const int tid = threadIdx.x, c = tid % CPR;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int r = (tid + i * kThreads) / CPR;
        const float *sv = s_vinv + c * 8;
        float x[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) x[e] = elem<T>(blkr.raw[i], e) * sv[e];
        /* cvt.rn.satfinite: RNE, clamp to +-448; padding is 0 and stays 0 (and adds no error) */
        const uint32_t lo = pack_e4m3(x[0], x[1], x[2], x[3]);
        const uint32_t hi = pack_e4m3(x[4], x[5], x[6], x[7]);
        *reinterpret_cast<uint2 *>(&s_v8[r][4 * v8_word<DP>(r, 2 * c)]) = make_uint2(lo, hi);
        float dq[8];
        unpack_e4m3(lo, reinterpret_cast<float (&)[4]>(dq[0]));
        unpack_e4m3(hi, reinterpret_cast<float (&)[4]>(dq[4]));
#pragma unroll
        for (int e = 0; e < 8; ++e) err[e] += dq[e] - x[e];
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

/* Phase 1 of one CTA: the column sums of K (IS_V false) or the column max|V| over tokens
 * [t0, t1) of one head, into s_stat[DP]. Thread (r0, c) covers columns 8c..8c+7 of rows r0,
 * r0 + RPP, ..., UNROLL rows in flight: the pass is bound by outstanding loads. */
template <int DP, typename T, bool IS_V>
__device__ __forceinline__ void column_stats(const T *base, int64_t stride_s, int64_t t0, int64_t t1,
                                             const sa3_problem &p, float (*red)[DP + 1], float *s_stat) {
    constexpr int CPR = DP / 8, RPP = kThreads / CPR, UNROLL = 8;
    const int c = threadIdx.x % CPR, r0 = threadIdx.x / CPR;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    /* Phase 2 reads all of it again: ask the L2 to keep it (phase 2's reads then drop it). */
    const uint64_t keep = l2_evict_last_policy();
    if (c * 8 < p.head_dim) {
        for (int64_t t = t0 + r0; t < t1; t += UNROLL * RPP) {
            uint4 raw[UNROLL]; /* converted only when combined, to keep registers low */
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const int64_t tu = t + u * RPP;
                raw[u] = make_uint4(0u, 0u, 0u, 0u);
                if (tu < t1) raw[u] = ld_global_hint(base + tu * stride_s + c * 8, keep);
            }
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    const float x = elem<T>(raw[u], i);
                    acc[i] = IS_V ? fmaxf(acc[i], fabsf(x)) : acc[i] + x;
                }
            }
        }
    }
    sa3_reduce_columns<DP, RPP, IS_V>(acc, red, r0, c, s_stat);
}

constexpr int kMaxCluster = 8;    /* the portable cluster size: every sm_90 part schedules it */
/* prep_kernel's CTAs per SM (__launch_bounds__). At D = 128 a thread holds a block's 32 pieces
 * while it issues the next block's prefetch, which 64 registers (4 CTAs) do not hold; 3 CTAs
 * give it 80. */
template <int DP>
constexpr int prep_ctas_per_sm() { return DP == 128 ? 3 : 4; }

/* The sum (MAX false) or max (MAX true) of the float at shared address `at` in every CTA of the
 * cluster, in rank order, so every caller gets the same bits, run after run. All loads are in
 * flight before the first use. */
template <bool MAX>
__device__ __forceinline__ float cluster_reduce_in_rank_order(const float *at) {
    const uint32_t n = cluster_size();
    float x[kMaxCluster];
#pragma unroll
    for (int r = 0; r < kMaxCluster; ++r) x[r] = (uint32_t)r < n ? ld_cluster_f32(at, r) : 0.f;
    float acc = 0.f; /* 0 is neutral for both: sums, and maxima of absolute values */
#pragma unroll
    for (int r = 0; r < kMaxCluster; ++r) acc = MAX ? fmaxf(acc, x[r]) : acc + x[r];
    return acc;
}

/* The head's mean of K (IS_V false) or 448 / max|V| (IS_V true) into s_col[DP], combined from
 * every CTA's s_stat in rank order (so every CTA of the cluster gets the same bits, run after
 * run); rank 0 also publishes what the attention kernel reads (kmean, vscale). Call between
 * a cluster barrier that follows the s_stat writes and the arrival that releases them. */
template <int DP, bool IS_V>
__device__ __forceinline__ void combine_cluster(const sa3_problem &p, const Workspace &w, int64_t bh, int smooth_k,
                                                const float *s_stat, float *s_col) {
    const int tid = threadIdx.x;
    if (tid >= DP) return;
    const float acc = cluster_reduce_in_rank_order<IS_V>(s_stat + tid);
    const bool publish = cluster_rank() == 0;
    if (IS_V) {
        s_col[tid] = acc >= FLT_MIN ? 448.f / acc : 0.f; /* subnormal max counts as 0 */
        if (publish) w.vscale[bh * DP + tid] = acc / 448.f;
    } else {
        const float mean = smooth_k ? acc / (float)p.seq_k : 0.f;
        s_col[tid] = mean;
        if (publish) w.kmean[bh * DP + tid] = mean;
    }
}

/* V's rounding-error sums of every CTA (s_err, after a cluster barrier) into vfix = -(sum /
 * vinv) / Sk per channel, summed in rank order; rank 0 only. */
template <int DP>
__device__ __forceinline__ void publish_vfix(const sa3_problem &p, const Workspace &w, int64_t bh,
                                             const float *s_err, const float *s_vinv) {
    const int tid = threadIdx.x;
    if (tid >= DP || cluster_rank() != 0) return;
    w.vfix[bh * DP + tid] = sa3_v_mean_fix(cluster_reduce_in_rank_order<false>(s_err + tid), s_vinv[tid], p.seq_k);
}

template <int DP>
struct PrepSmem {
    union {
        float red[kThreads / (DP / 8)][DP + 1];      /* phase 1: each row slot's partials */
        uint4 next[Block<DP>::PER][kThreads];        /* phase 2: the next block, each thread's pieces */
    } u;
    float stat[DP];            /* this CTA's column statistic, read by the whole cluster */
    float col[DP];             /* K: the mean; V: 448 / max|V| */
    float kred[kThreads / 16]; /* per half-warp: the K group amax */
    __align__(16) uint8_t v8[kBlockN][DP];
};

/* load_block's pieces of block blk into this thread's slots of `next`, asynchronously (one
 * commit group). The caller orders it after its last reads of those slots (a CTA barrier). */
template <int DP, typename T>
__device__ __forceinline__ void prefetch_block(const T *base, int64_t stride_s, int64_t blk, const sa3_problem &p,
                                               uint4 (*next)[kThreads], uint64_t policy) {
    const int tid = threadIdx.x, c = tid % Block<DP>::CPR;
#pragma unroll
    for (int i = 0; i < Block<DP>::PER; ++i) {
        const int64_t t = blk * kBlockN + (tid + i * kThreads) / Block<DP>::CPR;
        const bool live = t < p.seq_k && c * 8 < p.head_dim;
        cp_async_16(smem_u32(&next[i][tid]), live ? base + t * stride_s + c * 8 : base, live ? 16u : 0u, policy);
    }
    cp_async_commit();
}

/* The prefetched block into registers (this thread's own slots: no barrier needed). */
template <int DP>
__device__ __forceinline__ void take_prefetched(uint4 (*next)[kThreads], Block<DP> &blkr) {
    cp_async_wait_all();
#pragma unroll
    for (int i = 0; i < Block<DP>::PER; ++i) blkr.raw[i] = next[i][threadIdx.x];
}

/* Head bh's K (IS_V false) or V: its first element and its token stride. Recomputed where
 * used (from the kernel parameters) rather than kept in registers across the block loop. */
template <typename T, bool IS_V>
__device__ __forceinline__ const T *head_base(const sa3_problem &p, int bh) {
    const int64_t b = bh / p.heads_kv, h = bh % p.heads_kv;
    return IS_V ? static_cast<const T *>(p.v) + b * p.v_stride[0] + h * p.v_stride[1]
                : static_cast<const T *>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
}

/* One CTA of head bh's K cluster (IS_V false) or V cluster: its blocks [blk0, blk1). Phase 2
 * keeps one block in flight while it quantizes another (its first block in registers, the
 * rest prefetched into shared memory): each block is a short dependent chain (load, reduce,
 * store), and with its load exposed the CTA would wait on every one. */
template <int DP, typename T, bool IS_V>
__device__ __forceinline__ void prep_cta(const sa3_problem &p, const Workspace &w, int bh, int blk0, int blk1,
                                         int smooth_k, PrepSmem<DP> &sm) {
    const int64_t stride_s = IS_V ? p.v_stride[2] : p.k_stride[2];
    column_stats<DP, T, IS_V>(head_base<T, IS_V>(p, bh), stride_s, min(p.seq_k, (int64_t)blk0 * kBlockN),
                              min(p.seq_k, (int64_t)blk1 * kBlockN), p, sm.u.red, sm.stat);
    __syncthreads(); /* u.red is read; the prefetch may take u.next */
    /* Phase 2's first two blocks do not depend on the statistics: in flight during the barrier. */
    const uint64_t last_use = l2_evict_first_policy();
    Block<DP> blkr;
    int blk = blk1 - 1;
    load_block<DP, T>(head_base<T, IS_V>(p, bh), stride_s, blk, p, blkr, last_use);
    if (blk > blk0) prefetch_block<DP, T>(head_base<T, IS_V>(p, bh), stride_s, blk - 1, p, sm.u.next, last_use);
    cluster_arrive_release(); /* s_stat, to the cluster */
    cluster_wait_acquire();
    combine_cluster<DP, IS_V>(p, w, bh, smooth_k, sm.stat, sm.col);
    cluster_arrive_relaxed(); /* done reading the other CTAs' s_stat (they wait for it to exit) */
    __syncthreads();          /* s_col */
    float err[8] = {0, 0, 0, 0, 0, 0, 0, 0}; /* V: this thread's channels' rounding-error sums */
    for (;;) {
        if (IS_V) {
            quant_v_block<DP, T>(blkr, w, bh, blk, sm.col, sm.v8, err);
        } else {
            quant_k_block<DP, T>(blkr, p, w, bh, blk, sm.col, sm.kred);
        }
        if (--blk < blk0) break;
        take_prefetched<DP>(sm.u.next, blkr);
        /* The next block reuses v8 / kred; and the barrier orders this CTA's reads of u.next
         * before the copies that overwrite it. */
        __syncthreads();
        if (blk > blk0) prefetch_block<DP, T>(head_base<T, IS_V>(p, bh), stride_s, blk - 1, p, sm.u.next, last_use);
    }
    cluster_wait_acquire(); /* every CTA has read s_stat: it may be overwritten */
    if (IS_V) {
        /* u.red is free (no prefetch is in flight after the last block); the column sums of err
         * over this CTA's rows, then rank 0 combines them. */
        sa3_reduce_columns<DP, kThreads / (DP / 8), false>(err, sm.u.red, threadIdx.x / (DP / 8),
                                                           threadIdx.x % (DP / 8), sm.stat);
        cluster_arrive_release(); /* s_stat (now the error sums), to rank 0 */
        cluster_wait_acquire();
        publish_vfix<DP>(p, w, bh, sm.stat, sm.col);
        cluster_arrive_relaxed(); /* rank 0 has read them: the others may exit */
        cluster_wait_acquire();
    }
}

/* grid (C * 2 * B*Hkv) in clusters of C along x: cluster 2*bh quantizes head bh's K, 2*bh + 1
 * its V; rank r owns blocks [r*bpc, (r+1)*bpc). */
template <int DP, typename T>
__global__ void __launch_bounds__(kThreads, prep_ctas_per_sm<DP>())
    prep_kernel(const sa3_problem p, const Workspace w, int bpc, int smooth_k) {
    extern __shared__ __align__(16) unsigned char prep_smem[];
    PrepSmem<DP> &sm = *reinterpret_cast<PrepSmem<DP> *>(prep_smem);
    grid_dep_launch_dependents(); /* the attention kernel's CTAs may start during our tail */
    const uint32_t cid = cluster_index_x();
    const int bh = (int)(cid >> 1);                  /* < INT32_MAX / 16 (hopper_supports) */
    const int blk0 = (int)cluster_rank() * bpc;      /* nblk <= 65535 (hopper_supports) */
    const int blk1 = min((int)w.nblk, blk0 + bpc);
    if (cid & 1) {
        prep_cta<DP, T, true>(p, w, bh, blk0, blk1, smooth_k, sm);
    } else {
        prep_cta<DP, T, false>(p, w, bh, blk0, blk1, smooth_k, sm);
    }
}

/* CTAs per head (the cluster size, 1..kMaxCluster) and blocks per CTA. A CTA's blocks run one
 * after another, so the pass takes about (rounds of resident CTAs) x (blocks per CTA): the
 * size that minimizes that, the larger on ties (more SMs share the statistics reads). */
int prep_split(int64_t bh, int64_t nblk, int ctas_per_sm, int sm_count, int *cluster) {
    const int64_t slots = (int64_t)ctas_per_sm * (sm_count > 0 ? sm_count : 132);
    int64_t best_cost = INT64_MAX, best_bpc = nblk;
    *cluster = 1;
    for (int c = 1; c <= kMaxCluster && c <= nblk; ++c) {
        const int64_t bpc = (nblk + c - 1) / c;
        const int64_t used = (nblk + bpc - 1) / bpc; /* no rank without blocks */
        const int64_t cost = (2 * bh * used + slots - 1) / slots * bpc;
        if (cost <= best_cost) {
            best_cost = cost;
            best_bpc = bpc;
            *cluster = (int)used;
        }
    }
    return (int)best_bpc;
}

template <int DP, typename T>
sa3_status prep_typed(const sa3_problem *p, const Workspace *w, int smooth_k, int sm_count, cudaStream_t stream,
                      char *err, size_t err_len) {
    int cluster = 1;
    const int bpc = prep_split(p->batch * p->heads_kv, w->nblk, prep_ctas_per_sm<DP>(), sm_count, &cluster);
    const dim3 grid((unsigned)(cluster * 2 * p->batch * p->heads_kv));
    constexpr int smem = (int)sizeof(PrepSmem<DP>); /* over the 48 KB of static shared memory at D = 128 */
    constexpr auto kernel = prep_kernel<DP, T>;
    SA3_CUDA_TRY(sa3_allow_dynamic_smem<kernel>(p->device, smem), "hopper pre-pass smem attribute");
    SA3_CUDA_TRY(launch_clustered(kernel, grid, dim3(kThreads), smem, cluster, stream, *p, *w, bpc, smooth_k),
                 "hopper pre-pass launch");
    return SA3_OK;
}

template <typename T>
sa3_status prep_dp(const sa3_problem *p, const Workspace *w, int smooth_k, int sms, cudaStream_t s, char *err,
                   size_t n) {
    return w->dp == 64 ? prep_typed<64, T>(p, w, smooth_k, sms, s, err, n)
                       : prep_typed<128, T>(p, w, smooth_k, sms, s, err, n);
}

} // namespace

sa3_status quant_launch(const sa3_problem *p, const Workspace *w, int smooth_k, int sm_count, cudaStream_t stream,
                        char *err, size_t err_len) {
    return p->dtype == SA3_DTYPE_BF16 ? prep_dp<__nv_bfloat16>(p, w, smooth_k, sm_count, stream, err, err_len)
                                      : prep_dp<__half>(p, w, smooth_k, sm_count, stream, err, err_len);
}

} // namespace sa3h
