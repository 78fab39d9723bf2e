/* sa3_module.h - per-module state of sageattn3._C (no mutable C globals anywhere).
 *
 * The module uses multi-phase init (PEP 489); every function that needs state gets it
 * from sa3_state(module). Strong references below are owned by the module and released
 * in its m_clear/m_free.
 */
#ifndef SA3_MODULE_H
#define SA3_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include "sa3_family.h"

#define SA3_MAX_DEVICES 64

/* Facts about one CUDA device, queried on first use (cuda/common/sa3_device.cu) and kept,
 * failure included (a driver older than the runtime fails the same way every time). */
typedef struct sa3_device_slot {
    int state; /* 0 not queried yet, 1 facts valid, -1 the query failed (status/error say why) */
    sa3_device_facts facts;
    sa3_status status;
    char error[200];
} sa3_device_slot;

typedef struct sa3_module_state {
    PyObject *unsupported_error; /* sageattn3._C.UnsupportedError, subclass of ValueError */

    /* torch objects, looked up lazily from sys.modules the first time a torch tensor is
     * seen (never imported by us: torch is optional). All NULL until then. */
    PyObject *torch_tensor_type;
    PyObject *torch_float16, *torch_bfloat16, *torch_float32, *torch_float64;

    /* Interned attribute names for the torch fast path. */
    PyObject *str_data_ptr, *str_stride, *str_shape, *str_dtype, *str_get_device, *str_is_cuda,
        *str_dlpack, *str_dlpack_device;

    /* Filled lazily by csrc/sa3_intake.c on its first call (module.c need not fill them) and
     * released by sa3_intake_clear_state() from the module's m_clear. */
    PyObject *str_is_cpu;               /* "is_cpu": tells CPU from meta/xpu/mps torch tensors */
    PyObject *dlpack_kwnames_versioned; /* ("stream", "max_version") for __dlpack__ vectorcall */
    PyObject *dlpack_kwnames;           /* ("stream",): the pre-1.0 call, on TypeError */
    PyObject *dlpack_max_version;       /* (1, 0): the newest DLPack ABI we can read */

    PyObject *problem_type; /* sageattn3._C.Problem (csrc/py_problem.c) */

    sa3_device_slot devices[SA3_MAX_DEVICES];
    /* consumer limits (csrc/sa3_limits.h): 1 + the profile's index, 0 = off. Applied to every
     * device's facts when they are queried; changing it drops the cached facts. */
    int limits_profile;
} sa3_module_state;

static inline sa3_module_state *sa3_state(PyObject *module) {
    return (sa3_module_state *)PyModule_GetState(module);
}

/* Set a Python exception for `status` with a printf-style message; always returns NULL so
 * callers can `return sa3_raise(...)`. Defined in sa3_errors.c (the one mapping place). */
PyObject *sa3_raise(sa3_module_state *st, sa3_status status, const char *fmt, ...);

/* Facts of CUDA device `device`, cached in the state. NULL with an exception set (ValueError
 * for a bad index, UnsupportedError/RuntimeError with the query's reason) when unknown; with
 * raise_error == 0 it returns NULL without raising and *slot_out says why. */
const sa3_device_facts *sa3_device(sa3_module_state *st, int device, int raise_error, const sa3_device_slot **slot_out);

#endif /* SA3_MODULE_H */
