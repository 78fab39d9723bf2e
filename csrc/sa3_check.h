/* sa3_check.h - validate an attention call once on the host and fill sa3_attn_params.
 *
 * Three outcomes, so the Python layer knows what to do:
 *   TypeError / ValueError       the call itself is wrong (SDPA would reject it too): re-raise.
 *   sageattn3._C.UnsupportedError a valid call our kernels cannot serve: fall back to SDPA and
 *                                 log the reason once. The message is "<reason>; <details>":
 *                                 the part before the first "; " is fixed text per reason
 *                                 (nothing from the call in it), usable as a log-once/stats key.
 */
#ifndef SA3_CHECK_H
#define SA3_CHECK_H

#include <stdint.h>

#include "sa3_module.h"
#include "sa3_tensor.h"
#include "../cuda/sa3_params.h"

/* How q/k/v/o are laid out by the caller. */
typedef enum sa3_layout {
    SA3_LAYOUT_HND = 0,     /* (B, H, S, D) */
    SA3_LAYOUT_NHD = 1,     /* (B, S, H, D) */
    SA3_LAYOUT_NHD_FLAT = 2 /* (B, S, H*D) with `heads` (of q) given; k/v heads follow from D */
} sa3_layout;

/* None -> HND; "HND" / "NHD" / "NHD_FLAT" in any case. Returns 0, or -1 with TypeError
 * (not a str) or ValueError (unknown name) set. */
int sa3_parse_layout(PyObject *str_or_none, sa3_layout *out);

/* "HND", "NHD", "NHD_FLAT" (static storage). */
const char *sa3_layout_name(sa3_layout layout);

/* Validate q, k, v (and o when not NULL) for the GPU kernels and fill *p.
 *
 * heads: for NHD_FLAT the number of q heads (> 0 required); for HND/NHD, > 0 means "must
 * equal q's H" and <= 0 means "not given".
 * allow_cpu: accept CPU tensors (tests, diagnostics, the CPU reference); every other kernel
 * constraint still applies.
 *
 * Writes only: q, k, v, o (NULL when o is NULL), the twelve strides, batch, heads_q,
 * heads_kv, seq_q, seq_k, head_dim, dtype, sm_scale (= 1/sqrt(D), the default) and device
 * (CUDA ordinal; -1 for CPU). is_causal, pv_mode, smooth_k, workspace*, sm_arch are left
 * untouched for the caller. Strides are in elements, canonical (b, h, s) order; the stride
 * of a dimension of size 1 is reported as 0 because it never addresses anything. *p is
 * only written when the result is SA3_OK.
 *
 * Never reads or writes tensor memory. Returns SA3_OK, or a status with an exception set. */
sa3_status sa3_check_attention(sa3_module_state *st, const sa3_tensor *q, const sa3_tensor *k, const sa3_tensor *v,
                               const sa3_tensor *o, sa3_layout layout, int64_t heads, int allow_cpu,
                               sa3_attn_params *p);

/* Bytes per element of a dtype (0 for SA3_DTYPE_INVALID). */
int sa3_dtype_size(sa3_dtype dtype);

/* "float16", "bfloat16", "float32", "float64" or "invalid" (static storage). */
const char *sa3_dtype_str(sa3_dtype dtype);

#endif /* SA3_CHECK_H */
