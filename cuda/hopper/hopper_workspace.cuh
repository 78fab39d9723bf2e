/* hopper_workspace.cuh - how the caller's workspace is carved up for the hopper family, and
 * the shared-memory tile formats its pre-pass writes. One function computes the layout; the
 * size query, the pre-pass and the attention kernel all use it, so they cannot disagree.
 *
 * The pre-pass writes every K and V tile already in the byte order the attention kernel's
 * shared memory needs (wgmma's swizzled K-major layout), so one bulk copy per tile moves it
 * and the kernel does no transposes or shuffles. Internal to cuda/hopper/. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "sa3_cuda_common.cuh"
#include "sa3_family.h"

namespace sa3h {

constexpr int kBlockN = 128;    /* keys per KV tile */
/* K scales per tile: key j of a tile takes scale (j % 8) / 2, the lane of the accumulator quad
 * that holds its scores (wgmma's m64nNk32 layout: lane t of a quad has columns 8g + 2t, +1), so
 * each consumer thread multiplies all its scores of a tile by one K scale. */
constexpr int kKGroups = 4;

struct Workspace {
    int8_t *kq;     /* [B*Hkv][nblk][128 keys][DP] INT8 of K - mean(K), swizzled rows        */
    float *kscale;  /* [B*Hkv][nblk][kKGroups] amax / 127 of each key group of a 128-key block */
    uint8_t *vq;    /* [B*Hkv][nblk][DP][128 keys] e4m3 of V^T, keys permuted per 32, swizzled */
    float *vscale;  /* [B*Hkv][DP] max|V| / 448 per channel                                  */
    float *kmean;   /* [B*Hkv][DP] the mean subtracted from K (for the LSE)                  */
    float *vfix;    /* [B*Hkv][DP] minus the mean e4m3 rounding error of V (added to each row) */
    int64_t nblk;    /* ceil(Sk / 128) */
    int dp;          /* padded head dim: 64 or 128 */
    size_t bytes;
};

static inline int padded_head_dim(int64_t d) { return d <= 64 ? 64 : 128; }

/* base may be NULL to only compute sizes. */
static inline Workspace workspace_layout(void *base, int64_t batch, int64_t heads_kv, int64_t seq_k,
                                         int64_t head_dim) {
    Workspace w;
    const int64_t bh = batch * heads_kv;
    w.dp = padded_head_dim(head_dim);
    w.nblk = (seq_k + kBlockN - 1) / kBlockN;
    size_t off = 0;
    char *b = (char *)base;
    w.kq = sa3_carve<int8_t>(b, &off, bh * w.nblk * kBlockN * w.dp);
    w.vq = sa3_carve<uint8_t>(b, &off, bh * w.nblk * kBlockN * w.dp);
    w.kscale = sa3_carve<float>(b, &off, bh * w.nblk * kKGroups);
    w.vscale = sa3_carve<float>(b, &off, bh * w.dp);
    w.kmean = sa3_carve<float>(b, &off, bh * w.dp);
    w.vfix = sa3_carve<float>(b, &off, bh * w.dp);
    w.bytes = off;
    return w;
}

/* K/V heads per pass. The workspace holds one pass's quantized K and V (for self-attention as
 * many bytes as the output), so a call whose workspace would exceed both kWorkspaceFloor and
 * half the output runs in passes over groups of K/V heads (each: pre-pass, then attention for
 * those heads and their query heads), which keeps its peak extra memory near 1.5x the output.
 * Below the floor one pass is kept: every further pass costs the last wave's idle SMs and two
 * launches, and a short call's workspace is small in absolute terms. */
constexpr int64_t kWorkspaceFloor = (int64_t)256 << 20;
constexpr int64_t kElemBytes = 2; /* q, k, v and out are fp16/bf16 (sa3_problem_common_supports) */

static inline int64_t kv_heads_per_pass(int64_t batch, int64_t heads_q, int64_t heads_kv, int64_t seq_q,
                                        int64_t seq_k, int64_t head_dim) {
    const int64_t out_bytes = batch * heads_q * seq_q * head_dim * kElemBytes;
    const int64_t limit = out_bytes / 2 > kWorkspaceFloor ? out_bytes / 2 : kWorkspaceFloor;
    for (int64_t passes = 1; passes < heads_kv; ++passes) {
        const int64_t h = (heads_kv + passes - 1) / passes;
        if ((int64_t)workspace_layout(nullptr, batch, h, seq_k, head_dim).bytes <= limit) return h;
    }
    return 1;
}

/* Byte offset of 16-byte chunk `c` of row `r` in a tile of `row_bytes`-long rows under wgmma's
 * swizzle for that row length: 128-byte rows XOR the chunk with r % 8, 64-byte rows with
 * (r / 2) % 4 (the address bits 7..9 resp. 7..8 of a pattern-aligned tile). */
__host__ __device__ static inline int swizzled_offset(int r, int c, int row_bytes) {
    const int key = row_bytes == 128 ? (r & 7) : ((r >> 1) & 3);
    return r * row_bytes + ((c ^ key) << 4);
}


/* Key order inside each 32-key group of a V^T tile: position p holds key v_key_of_pos(p). It
 * mirrors how wgmma's 8-bit A fragment built from the QK^T accumulators holds P (a thread
 * owns keys 2t, 2t+1 of each 8-key column group), so P is never shuffled between threads. */
__host__ __device__ static inline int v_key_of_pos(int pos) {
    const int hi = pos >> 4, t = (pos & 15) >> 2, i = pos & 3;
    return hi * 16 + (i < 2 ? 2 * t + i : 8 + 2 * t + (i - 2));
}

} // namespace sa3h
