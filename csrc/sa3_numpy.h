/* sa3_numpy.h - include this (never numpy/arrayobject.h directly) in every csrc/ file that
 * uses the NumPy C API. NumPy's API table is one symbol shared by all our translation
 * units; module.c defines it (SA3_NUMPY_DEFINE_API) and fills it with import_array() in
 * the module's exec slot. */
#ifndef SA3_NUMPY_H
#define SA3_NUMPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL sa3_numpy_api
#ifndef SA3_NUMPY_DEFINE_API
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#endif /* SA3_NUMPY_H */
