/* nvfp4_launch.cuh - what the nvfp4 family's .cu files share: the kernels' parameters and
 * the launchers' entry points. Internal to cuda/nvfp4/. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "nvfp4_workspace.cuh"
#include "sa3_params.h"

typedef struct sa3_nvfp4_params {
    const void *q, *k, *v;
    void *o;
    float *lse; /* NULL: not wanted */
    int64_t q_stride_b, q_stride_h, q_stride_s;
    int64_t k_stride_b, k_stride_h, k_stride_s;
    int64_t v_stride_b, v_stride_h, v_stride_s;
    int64_t o_stride_b, o_stride_h, o_stride_s;
    int64_t lse_stride_b, lse_stride_h;
    int64_t batch, heads_q, heads_kv, seq_q, seq_k, head_dim;
    sa3_dtype dtype;
    float sm_scale;
    int is_causal;
    int smooth_k;
    int smooth_q; /* Q minus its 64-row block mean, the QK^T correction added in the kernel */
} sa3_nvfp4_params;

/* The four pre-pass launches (statistics, K mean, K amax, quantization) on `stream`. */
sa3_status sa3_nvfp4_quantize(const sa3_nvfp4_params &p, const sa3_nvfp4_ws &w, void *stream, char *err,
                              size_t err_len);
/* The attention kernel, reading the quantized workspace. */
sa3_status sa3_nvfp4_attention(const sa3_nvfp4_params &p, const sa3_nvfp4_ws &w, void *stream, char *err,
                               size_t err_len);
/* Test hook: runs the emulated MMA (and the native one where compiled) on packed fragments
 * in device memory; see nvfp4_mma_test.cu. */
sa3_status sa3_nvfp4_mma_test(const int64_t *args, int nargs, int64_t *out, int nout, void *stream, char *err,
                              size_t err_len);
