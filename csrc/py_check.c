/* py_check.c - check_attention(): intake + validation only, for tests and diagnostics.
 *
 * Runs the validation every call gets (sa3_check_problem, sa3_check_out) plus what every kernel
 * family needs (sa3_problem_common_supports: UnsupportedError "<key>: <details>"), on any
 * intake route (torch, NumPy, DLPack), and reports the resulting sa3_problem as a dict, so
 * tests can pin the canonicalisation (strides, GQA heads, flat layouts) without a GPU.
 */
#include <stdint.h>
#include <string.h>

#include "sa3_check.h"
#include "sa3_intake.h"
#include "sa3_module.h"
#include "sa3_py.h"

static PyObject *sa3_strides3(int64_t b, int64_t h, int64_t s) {
    return Py_BuildValue("(LLL)", (long long)b, (long long)h, (long long)s);
}

/* check_attention(q, k, v, out=None, *, layout="HND", heads=None, allow_cpu=False, stream=None) -> dict */
PyObject *sa3_py_check_attention(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"q", "k", "v", "out", "layout", "heads", "allow_cpu", "stream", NULL};
    sa3_module_state *st = sa3_state(module);
    PyObject *q_obj, *k_obj, *v_obj, *o_obj = Py_None, *layout_obj = Py_None, *heads_obj = Py_None,
                                     *stream_obj = Py_None;
    PyObject *result = NULL, *qs = NULL, *ks = NULL, *vs = NULL, *os = NULL, *optr = NULL;
    int allow_cpu = 0, has_out;
    long long stream = 0;
    int64_t heads = 0;
    sa3_layout layout;
    sa3_tensor q = {0}, k = {0}, v = {0}, o = {0};
    sa3_problem p, pk;
    char detail[400];
    const char *why;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O$OOpO:check_attention", kwlist, &q_obj, &k_obj, &v_obj,
                                     &o_obj, &layout_obj, &heads_obj, &allow_cpu, &stream_obj))
        return NULL;
    if (sa3_parse_layout(layout_obj, &layout) < 0) return NULL;
    if (sa3_parse_heads(heads_obj, &heads) < 0) return NULL;
    if (stream_obj != Py_None) {
        if (!PyLong_Check(stream_obj) || PyBool_Check(stream_obj))
            return sa3_raise(st, SA3_ERR_TYPE, "stream must be an int (a cudaStream_t handle) or None, got %.100s",
                             Py_TYPE(stream_obj)->tp_name);
        stream = PyLong_AsLongLong(stream_obj);
        if (stream == -1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError))
                return sa3_raise(st, SA3_ERR_VALUE, "stream=%R is out of range", stream_obj);
            return NULL;
        }
    }
    has_out = o_obj != Py_None;

    if (sa3_intake(st, q_obj, "q", stream, &q) < 0) goto done;
    if (sa3_intake(st, k_obj, "k", stream, &k) < 0) goto done;
    if (sa3_intake(st, v_obj, "v", stream, &v) < 0) goto done;
    if (has_out && sa3_intake(st, o_obj, "out", stream, &o) < 0) goto done;
    if (sa3_check_problem(st, &q, &k, &v, layout, heads, &p) != SA3_OK) goto done;
    if (has_out && sa3_check_out(st, &o, &p) != SA3_OK) goto done;
    /* What every kernel family needs (families add their own rules: Problem.supports). */
    pk = p;
    if (allow_cpu && pk.device == SA3_DEVICE_NONE_CPU) pk.device = 0;
    why = sa3_problem_common_supports(&pk, detail, sizeof detail);
    if (why != NULL) {
        sa3_raise(st, SA3_ERR_UNSUPPORTED, "%s: %s", why, detail);
        goto done;
    }

    qs = sa3_strides3(p.q_stride[0], p.q_stride[1], p.q_stride[2]);
    ks = sa3_strides3(p.k_stride[0], p.k_stride[1], p.k_stride[2]);
    vs = sa3_strides3(p.v_stride[0], p.v_stride[1], p.v_stride[2]);
    os = has_out ? sa3_strides3(p.o_stride[0], p.o_stride[1], p.o_stride[2]) : Py_NewRef(Py_None);
    optr = has_out ? PyLong_FromVoidPtr(p.o) : Py_NewRef(Py_None);
    if (qs == NULL || ks == NULL || vs == NULL || os == NULL || optr == NULL) goto done;
    result = Py_BuildValue(
        "{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:s,s:d,s:s,s:i,s:s,s:O,s:O,s:O,s:O,s:O,s:K,s:K,s:K,s:O}", "batch",
        (long long)p.batch, "heads_q", (long long)p.heads_q, "heads_kv", (long long)p.heads_kv, "gqa_group",
        (long long)(p.heads_q / p.heads_kv), "seq_q", (long long)p.seq_q, "seq_k", (long long)p.seq_k, "head_dim",
        (long long)p.head_dim, "head_dim_v", (long long)p.head_dim_v, "dtype", sa3_dtype_str(p.dtype), "sm_scale",
        (double)p.scale, "device_type", p.device >= 0 ? "cuda" : "cpu", "device", p.device >= 0 ? p.device : -1,
        "layout", sa3_layout_name(layout), "q_strides", qs, "k_strides", ks, "v_strides", vs, "o_strides", os,
        "has_out", has_out ? Py_True : Py_False, "q_ptr", (unsigned long long)(uintptr_t)p.q, "k_ptr",
        (unsigned long long)(uintptr_t)p.k, "v_ptr", (unsigned long long)(uintptr_t)p.v, "o_ptr", optr);
done:
    Py_XDECREF(qs);
    Py_XDECREF(ks);
    Py_XDECREF(vs);
    Py_XDECREF(os);
    Py_XDECREF(optr);
    sa3_intake_release(&q);
    sa3_intake_release(&k);
    sa3_intake_release(&v);
    sa3_intake_release(&o);
    return result;
}
