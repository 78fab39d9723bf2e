/* mma_params.h - the kernel parameters of the mma family, filled by its launch
 * (mma_family.cu) from the validated sa3_problem, the family's options and the launch
 * context. The kernels take it by value; launchers trust it.
 *
 * Ownership: every pointer is borrowed from the caller for the duration of the call.
 * q, k, v are read-only (no kernel ever writes them). o, lse (when set) and workspace are
 * written.
 */
#ifndef SA3_MMA_PARAMS_H
#define SA3_MMA_PARAMS_H

#include "sa3_params.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Quantization granularity used by the mma kernel; the CPU reference takes the same
 * numbers so a GPU result can be compared tightly against it. */
#define SA3_MMA_K_BLOCK 64 /* tokens of K sharing one INT8 scale (= the kernel's KV tile) */

/* One attention call. Tensors are described in canonical (b, h, s, d) order with
 * element strides; the d stride is always 1. */
typedef struct sa3_attn_params {
    const void *q; /* (B, Hq,  Sq, D) fp16/bf16, read-only */
    const void *k; /* (B, Hkv, Sk, D) fp16/bf16, read-only */
    const void *v; /* (B, Hkv, Sk, D) fp16/bf16, read-only */
    void *o;       /* (B, Hq,  Sq, D) same dtype as q, written */
    /* Optional (B, Hq, Sq) fp32 log-sum-exp (natural log), unit s stride; NULL = not wanted. */
    float *lse;
    int64_t lse_stride_b, lse_stride_h;

    int64_t q_stride_b, q_stride_h, q_stride_s;
    int64_t k_stride_b, k_stride_h, k_stride_s;
    int64_t v_stride_b, v_stride_h, v_stride_s;
    int64_t o_stride_b, o_stride_h, o_stride_s;

    int64_t batch;
    int64_t heads_q;
    int64_t heads_kv; /* heads_q % heads_kv == 0 (GQA/MQA) */
    int64_t seq_q;
    int64_t seq_k;
    int64_t head_dim; /* D; kernels pad internally to their tile width */

    sa3_dtype dtype; /* SA3_DTYPE_F16 or SA3_DTYPE_BF16 */
    float sm_scale;  /* softmax scale, default 1/sqrt(D) */
    int is_causal;   /* top-left aligned, as torch SDPA's is_causal: key j visible to query i iff j <= i */
    sa3_pv_mode pv_mode;
    int smooth_k; /* subtract the per-(b,h) channel mean of K over tokens before quantizing */

    /* Caller-allocated device scratch (size from the family's workspace_bytes), 256-byte aligned. */
    void *workspace;
    size_t workspace_bytes;

    int device;  /* CUDA device ordinal the tensors live on */
    int sm_arch; /* 10*major+minor the family decided for (sa3_device_facts.sm_arch), e.g. 90 */
    int cfg_class; /* sa3_mma_class (mma_configs.h) whose configurations run this call */
    int smem_carveout; /* sa3_device_facts.smem_carveout: -1, or the percentage consumer limits ask for */
} sa3_attn_params;

/* Both FP8 P.V modes quantize V to FP8 (workspace V^T, per-channel scales); they differ in V's
 * target range and in the P.V accumulator. */
static inline int sa3_pv_is_fp8(sa3_pv_mode m) { return m == SA3_PV_FP8 || m == SA3_PV_FP8_F16ACC; }

#ifdef __cplusplus
}
#endif
#endif /* SA3_MMA_PARAMS_H */
