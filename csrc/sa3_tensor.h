/* sa3_tensor.h - a borrowed view of one tensor, filled by csrc/sa3_intake.c from a torch
 * tensor (fast path: attributes read directly), any __dlpack__ exporter, or a NumPy array.
 *
 * Ownership: `data` is borrowed. `owner` is a new reference that keeps the memory alive
 * (the tensor object itself, or a DLPack capsule); release it with sa3_tensor_release().
 */
#ifndef SA3_TENSOR_H
#define SA3_TENSOR_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include "sa3_params.h"

#define SA3_MAX_NDIM 4

typedef enum sa3_device_kind {
    SA3_DEVICE_CPU = 1,
    SA3_DEVICE_CUDA = 2,
    SA3_DEVICE_OTHER = 3
} sa3_device_kind;

typedef struct sa3_tensor {
    void *data;              /* first element (DLPack data + byte_offset already applied) */
    int ndim;                /* 1..SA3_MAX_NDIM */
    int64_t shape[SA3_MAX_NDIM];
    int64_t strides[SA3_MAX_NDIM]; /* in elements */
    sa3_dtype dtype;         /* SA3_DTYPE_INVALID for anything we do not support */
    const char *dtype_name;  /* for messages, e.g. "torch.float32" or "int8"; static storage */
    sa3_device_kind device_kind;
    int device_id;           /* CUDA ordinal, 0 for CPU */
    int readonly;            /* 1 when the exporter marked the memory read-only */
    const char *source;      /* route it came by, for messages: "torch.Tensor", "numpy.ndarray"
                                or "DLPack"; static storage */
    PyObject *owner;         /* strong reference, see above; NULL when empty */
} sa3_tensor;

static inline void sa3_tensor_release(sa3_tensor *t) {
    Py_CLEAR(t->owner);
}

#endif /* SA3_TENSOR_H */
