/* sa3_errors.c - the one place that maps sa3_status to a Python exception type.
 *
 * Every csrc/ function that fails with a status calls sa3_raise(), so the mapping below is
 * the whole contract between the C core and the Python layer:
 *   SA3_ERR_TYPE                      -> TypeError
 *   SA3_ERR_VALUE, SA3_ERR_OVERFLOW   -> ValueError
 *   SA3_ERR_UNSUPPORTED, SA3_ERR_NO_CUDA -> sageattn3._C.UnsupportedError (a ValueError subclass;
 *                                        the Python layer falls back to SDPA on it)
 *   SA3_ERR_CUDA                      -> RuntimeError
 *   SA3_ERR_NOMEM                     -> MemoryError
 */
#include "sa3_module.h" /* Python.h first, with PY_SSIZE_T_CLEAN */

#include <stdarg.h>

static PyObject *sa3_exception_type(sa3_module_state *st, sa3_status status) {
    switch (status) {
    case SA3_ERR_TYPE: return PyExc_TypeError;
    case SA3_ERR_VALUE:
    case SA3_ERR_OVERFLOW: return PyExc_ValueError;
    case SA3_ERR_UNSUPPORTED:
    case SA3_ERR_NO_CUDA:
        /* Before the module's exec has run (never in practice) ValueError is the closest. */
        return (st != NULL && st->unsupported_error != NULL) ? st->unsupported_error : PyExc_ValueError;
    case SA3_ERR_CUDA: return PyExc_RuntimeError;
    case SA3_ERR_NOMEM: return PyExc_MemoryError;
    case SA3_OK:
    default:
        /* A caller raising "success" or an unknown code is a bug in csrc/, not in user input. */
        return PyExc_SystemError;
    }
}

/* Takes the pending exception, if any (new reference, or NULL), so a new one can be chained
 * to it. PyErr_Fetch is deprecated from 3.12 on; use the replacement there. */
static PyObject *sa3_take_pending(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

PyObject *sa3_raise(sa3_module_state *st, sa3_status status, const char *fmt, ...) {
    PyObject *cause, *msg, *type, *exc;
    va_list va;

    /* If something below us already failed (e.g. torch's data_ptr() raised), keep it as
     * __cause__: the user sees our message naming the argument and theirs underneath. */
    cause = sa3_take_pending();

    va_start(va, fmt);
    msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    if (msg == NULL) { /* formatting failed (MemoryError); that exception stands */
        Py_XDECREF(cause);
        return NULL;
    }
    type = sa3_exception_type(st, status);
    if (status == SA3_OK || type == PyExc_SystemError) {
        PyObject *wrapped = PyUnicode_FromFormat("sa3_raise called with status %d: %U", (int)status, msg);
        Py_DECREF(msg);
        if (wrapped == NULL) {
            Py_XDECREF(cause);
            return NULL;
        }
        msg = wrapped;
    }
    exc = PyObject_CallOneArg(type, msg);
    Py_DECREF(msg);
    if (exc == NULL) {
        Py_XDECREF(cause);
        return NULL;
    }
    if (cause != NULL) {
        PyException_SetCause(exc, cause); /* steals cause */
    }
    PyErr_SetObject(type, exc);
    Py_DECREF(exc);
    return NULL;
}
