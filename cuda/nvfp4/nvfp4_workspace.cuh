/* nvfp4_workspace.cuh - how the caller's workspace is carved up for the nvfp4 family. One
 * function computes the layout; the size query, the kernels and the test hook all use it.
 *
 * Codes are e2m1 nibbles (lower nibble = lower index), scales e4m3 bytes, in the order the
 * MMA fragments read them (nvfp4_mma.cuh): Q and K row-major per token (groups of 16 along
 * d), V transposed per channel (groups of 16 tokens). Padding (tokens past S, channels past
 * D) is written as zero codes and zero scales by the quantization kernel. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "sa3_cuda_common.cuh"

#define SA3_NVFP4_CHUNK 256 /* tokens per partial statistic (K column sums, amax) */
#define SA3_NVFP4_TILE 64   /* tokens per quantization tile = keys per attention KV tile */

typedef struct sa3_nvfp4_ws {
    uint8_t *qc, *qs;  /* [B*Hq][Sqp][DP/2] codes, [B*Hq][Sqp][DP/16] scales */
    uint8_t *kc, *ks;  /* [B*Hkv][Skp][DP/2], [B*Hkv][Skp][DP/16] of K - mean(K) */
    uint8_t *vc, *vs;  /* [B*Hkv][DP][Skp/2], [B*Hkv][DP][Skp/16] */
    float *ksum;       /* [B*Hkv][nck][DP] column sums of K per chunk */
    float *kmean;      /* [B*Hkv][DP] (0 without smooth_k) */
    float *kamax;      /* [B*Hkv][nck] max |K - mean| per chunk */
    float *vamax;      /* [B*Hkv][nck] max |V| per chunk */
    float *qmean;      /* [B*Hq][Sqp/64][DP] mean of each 64-row Q block (= attention CTA tile) */
    float *qamax;      /* [B*Hq][ncq] max |Q - block mean| per chunk */
    float *gq, *gk, *gv; /* second-level scales: [B*Hq], [B*Hkv], [B*Hkv] */
    float *verr;       /* [B*Hkv][Skp/TILE][DP] per-tile sums of V's dequantized value minus V */
    float *vfix;       /* [B*Hkv][DP] minus their mean over the keys, added to each output row */
    uint32_t *vdone;   /* [B*Hkv] V tiles quantized (zeroed by the kmean kernel) */
    int64_t sqp, skp;  /* Sq, Sk rounded up to SA3_NVFP4_TILE */
    int64_t ncq, nck;  /* chunks of SA3_NVFP4_CHUNK tokens */
    int dp;            /* padded head dim (64 or 128) */
    size_t bytes;
} sa3_nvfp4_ws;

static inline int sa3_nvfp4_dp(int64_t d) { return d <= 64 ? 64 : 128; }

/* base may be NULL to only compute sizes. */
static inline sa3_nvfp4_ws sa3_nvfp4_ws_layout(void *base, int64_t batch, int64_t heads_q, int64_t heads_kv,
                                               int64_t seq_q, int64_t seq_k, int64_t head_dim) {
    sa3_nvfp4_ws w;
    const int64_t bhq = batch * heads_q, bhk = batch * heads_kv;
    w.dp = sa3_nvfp4_dp(head_dim);
    w.sqp = sa3_round_up(seq_q, SA3_NVFP4_TILE);
    w.skp = sa3_round_up(seq_k, SA3_NVFP4_TILE);
    w.ncq = sa3_ceil_div(seq_q, SA3_NVFP4_CHUNK);
    w.nck = sa3_ceil_div(seq_k, SA3_NVFP4_CHUNK);
    size_t off = 0;
    char *b = (char *)base;
    w.qc = sa3_carve<uint8_t>(b, &off, bhq * w.sqp * (w.dp / 2));
    w.qs = sa3_carve<uint8_t>(b, &off, bhq * w.sqp * (w.dp / 16));
    w.kc = sa3_carve<uint8_t>(b, &off, bhk * w.skp * (w.dp / 2));
    w.ks = sa3_carve<uint8_t>(b, &off, bhk * w.skp * (w.dp / 16));
    w.vc = sa3_carve<uint8_t>(b, &off, bhk * w.dp * (w.skp / 2));
    w.vs = sa3_carve<uint8_t>(b, &off, bhk * w.dp * (w.skp / 16));
    w.ksum = sa3_carve<float>(b, &off, bhk * w.nck * w.dp);
    w.kmean = sa3_carve<float>(b, &off, bhk * w.dp);
    w.kamax = sa3_carve<float>(b, &off, bhk * w.nck);
    w.vamax = sa3_carve<float>(b, &off, bhk * w.nck);
    w.qmean = sa3_carve<float>(b, &off, bhq * (w.sqp / SA3_NVFP4_TILE) * w.dp);
    w.qamax = sa3_carve<float>(b, &off, bhq * w.ncq);
    w.gq = sa3_carve<float>(b, &off, bhq);
    w.gk = sa3_carve<float>(b, &off, bhk);
    w.gv = sa3_carve<float>(b, &off, bhk);
    w.verr = sa3_carve<float>(b, &off, bhk * (w.skp / SA3_NVFP4_TILE) * w.dp);
    w.vfix = sa3_carve<float>(b, &off, bhk * w.dp);
    w.vdone = sa3_carve<uint32_t>(b, &off, bhk);
    w.bytes = off;
    return w;
}
