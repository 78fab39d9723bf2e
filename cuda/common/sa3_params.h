/* sa3_params.h - plain-C types shared by csrc/ (host, C11) and every kernel family in cuda/.
 *
 * No CUDA or Python types, so csrc/ can include it without nvcc. The problem, options and
 * launch context that families take are in sa3_family.h.
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

/* How P.V is computed (a family option; each family says which modes it takes). */
typedef enum sa3_pv_mode {
    SA3_PV_F16 = 0,       /* P and V in the input's 16-bit type (fp16 or bf16), fp32 accumulate */
    SA3_PV_FP8 = 1,       /* P and V in FP8 e4m3 (V per-channel scaled), fp32 accumulate */
    SA3_PV_FP8_F16ACC = 2 /* P and V in FP8 e4m3, each KV tile's product accumulated in fp16 (the
                             GeForce double-rate mma), then added to an fp32 accumulator */
} sa3_pv_mode;

/* SA3_PV_FP8_F16ACC: V is scaled so that max|V| of each channel becomes this (P keeps 448), so
 * an fp16 partial sum over one 64-key tile stays below 64 * 448 * 1.75 = 50176 < 65504 (the
 * derivation is next to the mma in cuda/mma/attn_mma.cu). 1.75 = 448 / 2^8: the e4m3 codes of V
 * are the FP32-accumulate mode's divided by 256 exactly, except where that lands in e4m3's
 * subnormal range. The C reference uses the same constant. */
#define SA3_PV_F16ACC_V_MAX 1.75f

/* How q/k/v/o are laid out by the caller. */
typedef enum sa3_layout {
    SA3_LAYOUT_HND = 0,     /* (B, H, S, D) */
    SA3_LAYOUT_NHD = 1,     /* (B, S, H, D) */
    SA3_LAYOUT_NHD_FLAT = 2 /* (B, S, H*D) with `heads` (of q) given; k/v heads follow from D */
} sa3_layout;

#ifdef __cplusplus
}
#endif
#endif /* SA3_PARAMS_H */
