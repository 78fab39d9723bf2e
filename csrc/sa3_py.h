/* sa3_py.h - every Python-facing function of sageattn3._C, one line each, with the file
 * that defines it. module.c puts them in the method table. */
#ifndef SA3_PY_H
#define SA3_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* module.c */
PyObject *sa3_py_build_info(PyObject *module, PyObject *unused);

/* py_reference.c: CPU reference of the quantized attention, on NumPy arrays. */
PyObject *sa3_py_reference_attention(PyObject *module, PyObject *args, PyObject *kwargs);
/* py_reference.c: element conversions exactly as the reference/kernels round (test hook). */
PyObject *sa3_py_convert(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *sa3_py_reference_nvfp4_quantize(PyObject *module, PyObject *args, PyObject *kwargs);

/* py_check.c: run intake + validation only; returns a dict describing the call (test hook). */
PyObject *sa3_py_check_attention(PyObject *module, PyObject *args, PyObject *kwargs);

/* py_problem.c: the hot path: problem() (vectorcall) and the Problem type (select, launch,
 * supports, workspace_bytes). */
PyObject *sa3_py_problem(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
int sa3_problem_type_init(PyObject *module);

/* py_device.c: device facts and the families compiled. */
PyObject *sa3_py_device_info(PyObject *module, PyObject *args);
PyObject *sa3_py_families(PyObject *module, PyObject *unused);
/* consumer limits (sa3_limits.h): set_consumer_limits(profile or None) -> previous,
 * consumer_limit_profiles() -> {name: facts}. */
PyObject *sa3_py_set_consumer_limits(PyObject *module, PyObject *arg);
PyObject *sa3_py_consumer_limit_profiles(PyObject *module, PyObject *unused);
PyObject *sa3_py_family_test(PyObject *module, PyObject *args);

#endif /* SA3_PY_H */
