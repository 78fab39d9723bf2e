/* mma_workspace.cuh - how the caller's workspace is carved up for the mma path. One function
 * computes the layout; the size query, the quantization kernels and the attention kernel all
 * use it, so they cannot disagree. Internal to cuda/. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "mma_params.h"
#include "sa3_cuda_common.cuh"

#define SA3_KV_CHUNK 4096 /* tokens summed by one partial-statistics block (larger = smaller workspace) */
#define SA3_KV_QUANT_TOKENS 256 /* tokens quantized by one kv_quant CTA (four 64-token blocks) */

typedef struct sa3_mma_ws {
    int8_t *kq;        /* [B*Hkv][Skp][DP] INT8 of K - mean(K), zero past Sk and past D      */
    float *kscale;     /* [B*Hkv][Skp/64][4] scale per 64-key block and key group (j % 8) / 2  */
    float *ksum;       /* [B*Hkv][nchunks][DP] per-chunk column sums of K (for the mean)       */
    float *kmean;      /* [B*Hkv][DP] the mean subtracted from K (0 without smoothing; the LSE) */
    float *vmax;       /* [B*Hkv][nchunks][DP] per-chunk column max|V| (FP8 PV only)          */
    uint8_t *vq;       /* [B*Hkv][DP][Skp] FP8 e4m3 of V^T, keys permuted per 32 (FP8 PV only) */
    float *vscale;     /* [B*Hkv][DP] max|V| / 448 per channel (FP8 PV only)                   */
    float *verr;       /* [B*Hkv][nquant][DP] per-quant-CTA sums of V's e4m3 rounding error    */
    float *vfix;       /* [B*Hkv][DP] minus the mean rounding error of V, added to each row    */
    uint32_t *vdone;   /* [B*Hkv] quant CTAs done (zeroed by kv_stats; the last one sums verr) */
    int64_t skp;       /* Sk rounded up to 64 */
    int64_t nchunks;   /* ceil(Sk / SA3_KV_CHUNK) */
    int64_t nquant;    /* ceil(Skp / SA3_KV_QUANT_TOKENS): CTAs per head of kv_quant */
    int dp;            /* padded head dim */
    size_t bytes;      /* total */
} sa3_mma_ws;

/* base may be NULL to only compute sizes. */
static inline sa3_mma_ws sa3_mma_ws_layout(void *base, int64_t batch, int64_t heads_kv, int64_t seq_k,
                                           int64_t head_dim, int fp8_pv) {
    sa3_mma_ws w;
    const int64_t bh = batch * heads_kv;
    w.dp = sa3_padded_head_dim(head_dim);
    w.skp = sa3_round_up(seq_k, 64);
    w.nchunks = sa3_ceil_div(seq_k, SA3_KV_CHUNK);
    w.nquant = sa3_ceil_div(w.skp, SA3_KV_QUANT_TOKENS);
    size_t off = 0;
    char *b = (char *)base;
    w.kq = sa3_carve<int8_t>(b, &off, bh * w.skp * w.dp);
    w.kscale = sa3_carve<float>(b, &off, bh * (w.skp / 16));
    w.ksum = sa3_carve<float>(b, &off, bh * w.nchunks * w.dp);
    w.kmean = sa3_carve<float>(b, &off, bh * w.dp);
    if (fp8_pv) {
        w.vmax = sa3_carve<float>(b, &off, bh * w.nchunks * w.dp);
        w.vq = sa3_carve<uint8_t>(b, &off, bh * w.dp * w.skp);
        w.vscale = sa3_carve<float>(b, &off, bh * w.dp);
        w.verr = sa3_carve<float>(b, &off, bh * w.nquant * w.dp);
        w.vfix = sa3_carve<float>(b, &off, bh * w.dp);
        w.vdone = sa3_carve<uint32_t>(b, &off, bh);
    } else {
        w.vmax = 0;
        w.vq = 0;
        w.vscale = 0;
        w.verr = 0;
        w.vfix = 0;
        w.vdone = 0;
    }
    w.bytes = off;
    return w;
}

/* Key order inside each 32-key group of the FP8 V^T buffer: position p holds key
 * sa3_fp8_key_of_pos(p). It mirrors how an m16n8k32 A fragment built from the QK^T
 * accumulators holds P (a thread owns keys 2t,2t+1 of two adjacent 8-key tiles), so P never
 * has to be shuffled between threads. */
__host__ __device__ static inline int sa3_fp8_key_of_pos(int pos) {
    int hi = pos >> 4, t = (pos & 15) >> 2, i = pos & 3;
    return hi * 16 + (i < 2 ? 2 * t + i : 8 + 2 * t + (i - 2));
}
__host__ __device__ static inline int sa3_fp8_pos_of_key(int key) {
    int hi = key >> 4, r = key & 15;
    int second = r >= 8;
    if (second) r -= 8;
    return hi * 16 + 4 * (r >> 1) + (second ? 2 : 0) + (r & 1);
}
