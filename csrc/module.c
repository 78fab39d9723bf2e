/* module.c - sageattn3._C: module definition, multi-phase init, module state, build_info.
 *
 * Layout follows CPython's Modules/_bisectmodule.c: state lives in the module object
 * (sa3_module_state), exec fills it, traverse/clear/free release it. The functions
 * themselves live in py_*.c files, one job each (see sa3_py.h).
 */
#define SA3_NUMPY_DEFINE_API
#include "sa3_numpy.h"

#include <stdint.h>

#include "sa3_intake.h"
#include "sa3_module.h"
#include "sa3_py.h"
#include "sa3_registry.h"

#ifndef SA3_CUDA_ARCHS
#define SA3_CUDA_ARCHS ""
#endif
#ifndef SA3_CUDA_VERSION
#define SA3_CUDA_VERSION ""
#endif
#ifndef SA3_WHY_NO_CUDA
#define SA3_WHY_NO_CUDA "unknown"
#endif

#if defined(_MSC_VER)
#define SA3_COMPILER "msvc"
#elif defined(__clang__)
#define SA3_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define SA3_COMPILER "gcc " __VERSION__
#else
#define SA3_COMPILER "unknown"
#endif

/* build_info() -> dict: what was compiled in, and why not when CUDA is missing. */
PyObject *sa3_py_build_info(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    PyObject *archs = NULL, *sep = NULL, *all = NULL, *d = NULL, *kernels = NULL;
    int i;
    kernels = PyList_New(0);
    if (kernels == NULL) return NULL;
    for (i = 0; i < sa3_registry_count(); i++) {
        PyObject *name = PyUnicode_FromString(sa3_registry_at(i)->name);
        if (name == NULL || PyList_Append(kernels, name) < 0) {
            Py_XDECREF(name);
            goto done;
        }
        Py_DECREF(name);
    }
#ifdef SA3_HAVE_CUDA
    all = PyUnicode_FromString(SA3_CUDA_ARCHS);
    sep = PyUnicode_FromString(";");
    if (all == NULL || sep == NULL) goto done;
    archs = PyUnicode_Split(all, sep, -1);
    if (archs == NULL) goto done;
    d = Py_BuildValue("{s:O,s:O,s:O,s:s,s:s,s:O}", "cuda", Py_True, "why_no_cuda", Py_None, "cuda_archs", archs,
                      "cuda_version", SA3_CUDA_VERSION, "compiler", SA3_COMPILER, "kernels", kernels);
#else
    archs = PyList_New(0);
    if (archs == NULL) goto done;
    d = Py_BuildValue("{s:O,s:s,s:O,s:O,s:s,s:O}", "cuda", Py_False, "why_no_cuda", SA3_WHY_NO_CUDA, "cuda_archs",
                      archs, "cuda_version", Py_None, "compiler", SA3_COMPILER, "kernels", kernels);
#endif
done:
    Py_XDECREF(all);
    Py_XDECREF(sep);
    Py_XDECREF(archs);
    Py_XDECREF(kernels);
    return d;
}

static PyMethodDef sa3_methods[] = {
    {"build_info", (PyCFunction)sa3_py_build_info, METH_NOARGS,
     "build_info() -> dict: compiled CUDA archs, CUDA version, compiler, why no CUDA."},
    {"reference_attention", (PyCFunction)(void (*)(void))sa3_py_reference_attention, METH_VARARGS | METH_KEYWORDS,
     "reference_attention(q, k, v, *, mode, is_causal, sm_scale, smooth_k, per_block_mean, q_block, k_block, "
     "pv_dtype, layout) -> float32 ndarray: CPU reference of the quantized math."},
    {"convert", (PyCFunction)(void (*)(void))sa3_py_convert, METH_VARARGS | METH_KEYWORDS,
     "convert(array, kind) -> float32 ndarray rounded as the kernels round (e4m3, e2m1, bf16, f16, int8)."},
    {"check_attention", (PyCFunction)(void (*)(void))sa3_py_check_attention, METH_VARARGS | METH_KEYWORDS,
     "check_attention(q, k, v, out=None, *, layout, heads, allow_cpu, stream) -> dict: validation only."},
    {"problem", (PyCFunction)(void (*)(void))sa3_py_problem, METH_FASTCALL | METH_KEYWORDS,
     "problem(q, k, v, layout=None, heads=None, is_causal=False, sm_scale=None, attn_mask=None) -> Problem: "
     "the one validation of an attention call (TypeError/ValueError naming the argument)."},
    {"families", (PyCFunction)sa3_py_families, METH_NOARGS,
     "families() -> tuple of {'name', 'archs'}: the kernel families compiled into this build."},
    {"device_info", (PyCFunction)sa3_py_device_info, METH_VARARGS,
     "device_info(index) -> dict: name, sm_arch, sm_count, smem_optin, families (compiled ones that run here)."},
    {NULL, NULL, 0, NULL},
};

static int sa3_intern(PyObject **slot, const char *s) {
    *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

static int sa3_exec(PyObject *module) {
    sa3_module_state *st = sa3_state(module);
    import_array1(-1); /* fills NumPy's API table (sa3_numpy.h) */
    st->unsupported_error = PyErr_NewExceptionWithDoc(
        "sageattn3._C.UnsupportedError",
        "A valid call the compiled kernels cannot serve (the Python layer falls back to SDPA).",
        PyExc_ValueError, NULL);
    if (st->unsupported_error == NULL) return -1;
    if (PyModule_AddObjectRef(module, "UnsupportedError", st->unsupported_error) < 0) return -1;
    if (sa3_problem_type_init(module) < 0) return -1;
    if (sa3_intern(&st->str_data_ptr, "data_ptr") < 0 || sa3_intern(&st->str_stride, "stride") < 0 ||
        sa3_intern(&st->str_shape, "shape") < 0 || sa3_intern(&st->str_dtype, "dtype") < 0 ||
        sa3_intern(&st->str_get_device, "get_device") < 0 || sa3_intern(&st->str_is_cuda, "is_cuda") < 0 ||
        sa3_intern(&st->str_dlpack, "__dlpack__") < 0 ||
        sa3_intern(&st->str_dlpack_device, "__dlpack_device__") < 0)
        return -1;
#ifdef SA3_HAVE_CUDA
    if (PyModule_AddIntConstant(module, "HAS_CUDA", 1) < 0) return -1;
#else
    if (PyModule_AddIntConstant(module, "HAS_CUDA", 0) < 0) return -1;
#endif
    return 0;
}

static int sa3_traverse(PyObject *module, visitproc visit, void *arg) {
    sa3_module_state *st = sa3_state(module);
    Py_VISIT(st->unsupported_error);
    Py_VISIT(st->problem_type);
    Py_VISIT(st->torch_tensor_type);
    Py_VISIT(st->torch_float16);
    Py_VISIT(st->torch_bfloat16);
    Py_VISIT(st->torch_float32);
    Py_VISIT(st->torch_float64);
    return 0;
}

static int sa3_clear(PyObject *module) {
    sa3_module_state *st = sa3_state(module);
    sa3_intake_clear_state(st);
    Py_CLEAR(st->unsupported_error);
    Py_CLEAR(st->problem_type);
    Py_CLEAR(st->torch_tensor_type);
    Py_CLEAR(st->torch_float16);
    Py_CLEAR(st->torch_bfloat16);
    Py_CLEAR(st->torch_float32);
    Py_CLEAR(st->torch_float64);
    Py_CLEAR(st->str_data_ptr);
    Py_CLEAR(st->str_stride);
    Py_CLEAR(st->str_shape);
    Py_CLEAR(st->str_dtype);
    Py_CLEAR(st->str_get_device);
    Py_CLEAR(st->str_is_cuda);
    Py_CLEAR(st->str_dlpack);
    Py_CLEAR(st->str_dlpack_device);
    return 0;
}

static void sa3_free(void *module) {
    sa3_clear((PyObject *)module);
}

static PyModuleDef_Slot sa3_slots[] = {
    /* The slot holds a void *; ISO C converts a function pointer to an object pointer only
     * through an integer (C11 6.3.2.3), so -pedantic-errors builds accept this form. */
    {Py_mod_exec, (void *)(uintptr_t)sa3_exec},
    {0, NULL},
};

static struct PyModuleDef sa3_module_def = {
    PyModuleDef_HEAD_INIT,
    "sageattn3._C",
    "sageattn3 C core: argument checking, tensor intake, CPU reference, CUDA launchers.",
    sizeof(sa3_module_state),
    sa3_methods,
    sa3_slots,
    sa3_traverse,
    sa3_clear,
    sa3_free,
};

PyMODINIT_FUNC PyInit__C(void) {
    return PyModuleDef_Init(&sa3_module_def);
}
