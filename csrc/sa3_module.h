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
#include "../cuda/sa3_params.h"

#define SA3_MAX_DEVICES 64

/* Facts about one CUDA device, filled on first use (cuda/sa3_device.cu). */
typedef struct sa3_device_facts {
    int known;      /* 0 until queried */
    int sm_arch;    /* 10*major + minor */
    int sm_count;
    int smem_optin; /* max dynamic shared memory per block after opt-in, bytes */
} sa3_device_facts;

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

    sa3_device_facts devices[SA3_MAX_DEVICES];
} sa3_module_state;

static inline sa3_module_state *sa3_state(PyObject *module) {
    return (sa3_module_state *)PyModule_GetState(module);
}

/* Set a Python exception for `status` with a printf-style message; always returns NULL so
 * callers can `return sa3_raise(...)`. Defined in sa3_errors.c (the one mapping place). */
PyObject *sa3_raise(sa3_module_state *st, sa3_status status, const char *fmt, ...);

#endif /* SA3_MODULE_H */
