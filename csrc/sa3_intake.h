/* sa3_intake.h - turn one Python tensor-like object into a borrowed sa3_tensor view.
 *
 * Routes, cheapest first:
 *   1. torch.Tensor (and subclasses): attributes read directly (data_ptr(), shape, stride(),
 *      dtype, is_cuda/get_device()/is_cpu), no DLPack export. torch is never imported by us:
 *      torch.Tensor and its dtypes are looked up in sys.modules and cached in the module state.
 *   2. numpy.ndarray (and subclasses): NumPy C API, no Python calls. Taken before DLPack
 *      because ndarray also has __dlpack__, which is slower and cannot export read-only
 *      arrays through the pre-1.0 protocol.
 *   3. anything with __dlpack__/__dlpack_device__: versioned capsule first (max_version
 *      (1, 0)), the pre-1.0 call on TypeError.
 * Nothing here reads or writes the tensor's memory.
 */
#ifndef SA3_INTAKE_H
#define SA3_INTAKE_H

#include <stddef.h>

#include "sa3_module.h"
#include "sa3_tensor.h"

/* Fill *out from `obj`. Returns 0, or -1 with a Python exception set (TypeError for types,
 * ValueError for ranks/strides) whose message starts with `argname`.
 *
 * `stream` is the consumer's CUDA stream handle as an integer (cudaStream_t cast to
 * intptr_t); it is used only by the DLPack route for CUDA tensors, where the producer makes
 * its work visible to that stream. 0 (the legacy default stream) is passed as 1 because
 * DLPack reserves 0 as ambiguous; -1 means "no synchronization" as in the protocol.
 *
 * On success out->owner is a new reference (the tensor/array itself, or the DLPack capsule,
 * which is never renamed so its destructor releases the export); release it with
 * sa3_tensor_release(), or sa3_intake_release() when an exception may be pending. On
 * failure *out is empty (owner NULL), so releasing it is harmless.
 * Unsupported dtypes are NOT an error here: out->dtype is SA3_DTYPE_INVALID and
 * out->dtype_name says what it was, so the caller can word the error. */
int sa3_intake(sa3_module_state *st, PyObject *obj, const char *argname, long long stream, sa3_tensor *out);

/* The torch route only, for the torch API (sageattn(), the custom op, the ComfyUI override):
 * anything but a torch.Tensor is a TypeError naming `argname`. Same contract otherwise. */
int sa3_intake_torch_only(sa3_module_state *st, PyObject *obj, const char *argname, sa3_tensor *out);

/* Like sa3_tensor_release(), but a pending Python exception survives the owner's
 * destructor (DLPack capsule destructors are producer code). Use it on error paths. */
void sa3_intake_release(sa3_tensor *t);

/* Release what sa3_intake cached lazily in the module state (module.c's m_clear calls this). */
void sa3_intake_clear_state(sa3_module_state *st);

/* Describe a view for error messages, e.g.
 * "torch.Tensor of shape (1, 8, 128, 64), strides (65536, 8192, 64, 1), torch.float16, cuda:0".
 * Always NUL-terminates (truncates to len). */
void sa3_tensor_describe(const sa3_tensor *t, char *buf, size_t len);

/* "(1, 8, 128, 64)"; always NUL-terminates. */
void sa3_tensor_shape_str(const sa3_tensor *t, char *buf, size_t len);

/* "(a, b, c)" (or "(a,)") of n ints; always NUL-terminates. */
void sa3_format_tuple(const int64_t *v, int n, char *buf, size_t len);

#endif /* SA3_INTAKE_H */
