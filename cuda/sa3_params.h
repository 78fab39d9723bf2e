/* sa3_params.h - the one parameter struct shared by csrc/ (host, C11) and cuda/ (kernels).
 *
 * Plain C: no CUDA or Python types, so csrc/ can include it without nvcc and the
 * launchers can take it by value. Everything is validated on the host (csrc/sa3_check.c)
 * before a launcher sees it; launchers trust it.
 *
 * Ownership: every pointer is borrowed from the caller for the duration of the call.
 * q, k, v are read-only (no kernel ever writes them). o and workspace are written.
 */
#ifndef SA3_PARAMS_H
#define SA3_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes returned by every launcher and by csrc/ helpers. Mapped to Python
 * exceptions in exactly one place (csrc/sa3_errors.c). */
typedef enum sa3_status {
    SA3_OK = 0,
    SA3_ERR_TYPE = 1,        /* wrong Python type or dtype             -> TypeError   */
    SA3_ERR_VALUE = 2,       /* inconsistent shapes/strides/arguments  -> ValueError  */
    SA3_ERR_UNSUPPORTED = 3, /* valid call the fast path cannot serve  -> sageattn3._C.UnsupportedError
                                (a ValueError); Python falls back to SDPA */
    SA3_ERR_NO_CUDA = 4,     /* extension built without CUDA kernels   -> UnsupportedError */
    SA3_ERR_CUDA = 5,        /* CUDA runtime reported an error         -> RuntimeError */
    SA3_ERR_OVERFLOW = 6,    /* size arithmetic would overflow int64   -> ValueError  */
    SA3_ERR_NOMEM = 7        /* host allocation failed (CPU reference) -> MemoryError */
} sa3_status;

/* Element types, numbered as in DLPack's (code, bits) pairs but flattened. */
typedef enum sa3_dtype {
    SA3_DTYPE_INVALID = 0,
    SA3_DTYPE_F16 = 1,
    SA3_DTYPE_BF16 = 2,
    SA3_DTYPE_F32 = 3,
    SA3_DTYPE_F64 = 4
} sa3_dtype;

/* How P.V is computed. */
typedef enum sa3_pv_mode {
    SA3_PV_F16 = 0, /* P and V in the input's 16-bit type (fp16 or bf16), fp32 accumulate */
    SA3_PV_FP8 = 1  /* P and V in FP8 e4m3 (V per-channel scaled), fp32 accumulate */
} sa3_pv_mode;

/* Kernel families the planner can choose. */
typedef enum sa3_kernel {
    SA3_KERNEL_NONE = 0,
    SA3_KERNEL_MMA = 1,    /* mma.sync, sm80..sm120 (cuda/attn_mma.cu)   */
    SA3_KERNEL_HOPPER = 2, /* wgmma + TMA, sm_90a (not built yet)        */
    SA3_KERNEL_NVFP4 = 3   /* block-scaled NVFP4, sm_100a/sm_120a (not built yet) */
} sa3_kernel;

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

    /* Caller-allocated device scratch (size from sa3_mma_workspace_bytes), 256-byte aligned. */
    void *workspace;
    size_t workspace_bytes;

    int device;  /* CUDA device ordinal the tensors live on */
    int sm_arch; /* 10*major+minor of that device, e.g. 90 */
} sa3_attn_params;

#ifdef __cplusplus
}
#endif
#endif /* SA3_PARAMS_H */
