/* sa3_check.h - the one validation of an attention call (every public entry goes through it,
 * before anything decides kernel vs SDPA), and the checks of the `out` a launch writes.
 *
 * Outcomes:
 *   TypeError / ValueError  the call itself is wrong (SDPA would reject it, crash on it, or
 *                           silently compute something else): raised, naming the argument,
 *                           what it got and what it needs.
 *   SA3_OK                  the call is valid for SDPA; *p describes it. Whether a kernel
 *                           family serves it is a separate question (sa3_family.h supports()).
 * Nothing here reads or writes tensor memory; only pointers, shapes and strides.
 */
#ifndef SA3_CHECK_H
#define SA3_CHECK_H

#include <stdint.h>

#include "sa3_family.h"
#include "sa3_module.h"
#include "sa3_tensor.h"

/* None -> HND; "HND" / "NHD" / "NHD_FLAT" in any case. Returns 0, or -1 with TypeError
 * (not a str) or ValueError (unknown name) set. */
int sa3_parse_layout(PyObject *str_or_none, sa3_layout *out);

/* "HND", "NHD", "NHD_FLAT" (static storage). */
const char *sa3_layout_name(sa3_layout layout);

/* heads: None -> 0 ("not given"); else an int (not bool) > 0. Returns 0 or -1 with
 * TypeError/ValueError set. */
int sa3_parse_heads(PyObject *obj, int64_t *out);

/* Validate q, k, v for every backend and fill *p: sizes, canonical strides, dtype, device,
 * layout, scale = 1/sqrt(D) (1 when D == 0), is_causal = 0, o = lse = NULL.
 *
 * Rules: floating dtypes (float16/bfloat16/float32/float64), all equal; ranks per layout;
 * heads (> 0 and required for NHD_FLAT; for HND/NHD, when > 0, equal to q's); equal batch;
 * q/k head dims equal (v's may differ); k/v sequence lengths and heads equal; Hkv > 0 and
 * Hq % Hkv == 0; one device; every tensor's extent, element count, the output's and the
 * score matrix's element counts inside int64. heads <= 0 means "not given". */
sa3_status sa3_check_problem(sa3_module_state *st, const sa3_tensor *q, const sa3_tensor *k, const sa3_tensor *v,
                             sa3_layout layout, int64_t heads, sa3_problem *p);

/* sm_scale: NULL/None keeps p->scale (the default); else a real number (int, float or
 * anything with __float__; not bool, str or a tensor) that is finite and > 0 and stays so as
 * a float32. Returns 0 or -1 with TypeError/ValueError set. */
int sa3_parse_scale(sa3_module_state *st, PyObject *obj, sa3_problem *p);

/* is_causal: a bool (or the int 0/1). Returns 0 or -1 with TypeError set. */
int sa3_parse_causal(sa3_module_state *st, PyObject *obj, int *out);

/* attn_mask for SDPA: 2-4 dims broadcastable to (B, Hq, Sq, Sk), dtype bool or q's dtype,
 * on q's device, and not together with is_causal. */
sa3_status sa3_check_mask(sa3_module_state *st, const sa3_tensor *mask, const sa3_problem *p);

/* Validate `out` for *p (the caller's layout; q's (B, H, S) with v's head dim; p's dtype and
 * device; writable; extent inside int64; no two elements sharing memory; no overlap with q,
 * k or v) and set p->o and p->o_stride. An out whose strides interleave so that overlap can't
 * be ruled out is SA3_ERR_UNSUPPORTED (the caller falls back). */
sa3_status sa3_check_out(sa3_module_state *st, const sa3_tensor *o, sa3_problem *p);

/* Bytes per element of a dtype (0 for SA3_DTYPE_INVALID). */
int sa3_dtype_size(sa3_dtype dtype);

/* "float16", "bfloat16", "float32", "float64" or "invalid" (static storage). */
const char *sa3_dtype_str(sa3_dtype dtype);

#endif /* SA3_CHECK_H */
