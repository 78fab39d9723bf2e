/* py_reference.c - Python bindings of the CPU reference (sa3_reference.c) and of the
 * scalar conversions (sa3_numerics.c), on NumPy arrays.
 *
 *   reference_attention(q, k, v, *, mode="int8-fp16", is_causal=False, sm_scale=None,
 *                       smooth_k=True, per_block_mean=False, q_block=32, k_block=64,
 *                       pv_dtype="bf16", layout="HND", granularity="block",
 *                       return_lse=False, v_mean_fix=False, l_quantized=False) -> float32 ndarray (q's layout)
 *       return_lse=True: (out, lse), lse a C-contiguous float32 (B, Hq, Sq) ndarray in every
 *       layout, natural log (step 8 of the spec in sa3_reference.c).
 *   convert(array, kind) -> float32 ndarray   (kind: e4m3, e2m1, bf16, f16, int8, f16_from_f64:
 *       binary16 rounding straight from float64, as the int8-fp8-f16acc mode accumulates)
 *
 * Inputs are only read: they are cast (NumPy, RNE for float64) and packed into private
 * contiguous float32 (B, H, S, D) buffers, so any strides, byte order and layout work and
 * the caller's memory is never written. The GIL is released while packing, computing and
 * unpacking (no Python object is touched then); the computation takes it back about every
 * 50 ms to run pending signal handlers, so Ctrl-C interrupts a long call (KeyboardInterrupt).
 */
#include "sa3_numpy.h"

#include "sa3_numerics.h"
#include "sa3_py.h"
#include "sa3_reference.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------------------- */

static int mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0 || (a != 0 && b > INT64_MAX / a)) {
        return 0;
    }
    *out = a * b;
    return 1;
}

/* "(2, 3, 4, 5)" into buf, for messages. */
static const char *format_shape(PyArrayObject *a, char *buf, size_t n) {
    int nd = PyArray_NDIM(a), i;
    size_t used = 0;
    const npy_intp *dims = PyArray_DIMS(a);
    buf[0] = '\0';
    used += (size_t)snprintf(buf + used, n - used, "(");
    for (i = 0; i < nd && used < n; ++i) {
        used += (size_t)snprintf(buf + used, n - used, i + 1 < nd || nd != 1 ? "%lld%s" : "%lld,%s",
                                 (long long)dims[i], i + 1 < nd ? ", " : "");
    }
    if (used < n) {
        snprintf(buf + used, n - used, ")");
    }
    return buf;
}

/* A flag argument: bool, numpy.bool_ or the ints 0/1. Anything else is a TypeError, so a
 * string like "no" cannot silently mean True. Returns 0 on success, -1 with an error set. */
static int parse_flag(PyObject *obj, const char *name, int *out) {
    if (PyBool_Check(obj) || PyArray_IsScalar(obj, Bool)) {
        int t = PyObject_IsTrue(obj);
        if (t < 0) {
            return -1;
        }
        *out = t;
        return 0;
    }
    if (PyLong_Check(obj)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (!overflow && (v == 0 || v == 1)) {
            *out = (int)v;
            return 0;
        }
    }
    PyErr_Format(PyExc_TypeError, "reference_attention(): %s must be a bool, got %.100s %R", name,
                 Py_TYPE(obj)->tp_name, obj);
    return -1;
}

/* q_block / k_block: an integer >= 1 (bools rejected). */
static int parse_block(PyObject *obj, const char *name, int64_t *out) {
    PyObject *idx;
    long long v;
    int overflow = 0;
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "reference_attention(): %s must be an int >= 1, got %.100s %R", name,
                     Py_TYPE(obj)->tp_name, obj);
        return -1;
    }
    idx = PyNumber_Index(obj);
    if (idx == NULL) {
        return -1;
    }
    v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow || v < 1) {
        PyErr_Format(PyExc_ValueError, "reference_attention(): %s must be an int in [1, 2**63), got %R", name, obj);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* sm_scale: None (-> 1/sqrt(D)) or a finite real number that fits fp32. */
static int parse_scale(PyObject *obj, int64_t head_dim, float *out) {
    double x;
    if (obj == Py_None) {
        *out = (float)(1.0 / sqrt((double)head_dim));
        return 0;
    }
    if (PyBool_Check(obj) || PyUnicode_Check(obj) || PyBytes_Check(obj) ||
        (!PyFloat_Check(obj) && !PyIndex_Check(obj) && Py_TYPE(obj)->tp_as_number == NULL)) {
        PyErr_Format(PyExc_TypeError, "reference_attention(): sm_scale must be None or a real number, got %.100s %R",
                     Py_TYPE(obj)->tp_name, obj);
        return -1;
    }
    x = PyFloat_AsDouble(obj);
    if (x == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) { /* e.g. 10**400: a value error, not a crash-like one */
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "reference_attention(): sm_scale must be finite and fit float32, got %R",
                         obj);
        } else if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "reference_attention(): sm_scale must be None or a real number, got %.100s %R",
                         Py_TYPE(obj)->tp_name, obj);
        }
        return -1;
    }
    if (!isfinite(x) || fabs(x) > (double)FLT_MAX) {
        PyErr_Format(PyExc_ValueError, "reference_attention(): sm_scale must be finite and fit float32, got %R", obj);
        return -1;
    }
    *out = (float)x;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Array intake
 * ------------------------------------------------------------------------------------- */

/* One q/k/v argument, described in canonical (b, h, s, d) order. */
typedef struct ref_input {
    const char *name;
    PyArrayObject *orig; /* borrowed: the caller's array */
    PyArrayObject *f32;  /* owned: aligned, native-order float32 view or cast copy */
    int64_t dim[4];      /* B, H, S, D */
    npy_intp stride[4];  /* byte strides of f32 in (b, h, s, d) order */
} ref_input;

/* Type, dtype, rank and non-empty checks of one array; fills dim[]. */
static int check_input(PyObject *obj, const char *name, int nhd, ref_input *in) {
    char shape[160];
    const npy_intp *dims;
    int t, i;
    in->name = name;
    in->orig = NULL;
    in->f32 = NULL;
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "reference_attention(): %s must be a numpy.ndarray, got %.100s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    in->orig = (PyArrayObject *)obj;
    t = PyArray_TYPE(in->orig);
    if (t != NPY_HALF && t != NPY_FLOAT && t != NPY_DOUBLE) {
        PyErr_Format(PyExc_TypeError,
                     "reference_attention(): %s must have dtype float16, float32 or float64, got dtype %S", name,
                     (PyObject *)PyArray_DESCR(in->orig));
        return -1;
    }
    if (PyArray_NDIM(in->orig) != 4) {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): %s must be 4-D %s for layout '%s', got shape %s (%d-D)", name,
                     nhd ? "(B, S, H, D)" : "(B, H, S, D)", nhd ? "NHD" : "HND",
                     format_shape(in->orig, shape, sizeof shape), PyArray_NDIM(in->orig));
        return -1;
    }
    dims = PyArray_DIMS(in->orig);
    for (i = 0; i < 4; ++i) {
        if (dims[i] < 1) {
            PyErr_Format(PyExc_ValueError,
                         "reference_attention(): %s has a zero-sized dimension, shape %s; every dimension must be >= 1",
                         name, format_shape(in->orig, shape, sizeof shape));
            return -1;
        }
    }
    in->dim[0] = dims[0];
    in->dim[1] = dims[nhd ? 2 : 1];
    in->dim[2] = dims[nhd ? 1 : 2];
    in->dim[3] = dims[3];
    return 0;
}

/* Element count of a (B, H, S, D) buffer, checked against int64 and size_t bytes. */
static int checked_count(const int64_t dim[4], const char *what, int64_t *count) {
    int64_t n = 1;
    int i;
    for (i = 0; i < 4; ++i) {
        if (!mul_ok(n, dim[i], &n)) {
            n = -1;
            break;
        }
    }
    /* The float32 copy (and, for q, the float32 result) must be a valid NumPy array, whose
     * byte size is limited to Py_ssize_t; that also bounds size_t and int64 arithmetic. A
     * float16 input of 2**61 elements exists as a NumPy view but fails here. */
    if (n < 0 || (uint64_t)n > (uint64_t)PY_SSIZE_T_MAX / sizeof(float) ||
        (uint64_t)n > (uint64_t)(SIZE_MAX / sizeof(float))) {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): %s of shape (B, H, S, D) = (%lld, %lld, %lld, %lld) is too large: "
                     "its float32 size in bytes overflows int64/size_t",
                     what, (long long)dim[0], (long long)dim[1], (long long)dim[2], (long long)dim[3]);
        return -1;
    }
    *count = n;
    return 0;
}

/* Cast (if needed) to aligned native float32 without forcing a copy for float32 inputs. */
static int cast_input(ref_input *in, int nhd) {
    PyArray_Descr *f32 = PyArray_DescrFromType(NPY_FLOAT32);
    const npy_intp *st;
    if (f32 == NULL) {
        return -1;
    }
    /* steals the descr reference; FORCECAST allows float64 -> float32 (RNE); never writes
     * to the input (no WRITEABLE/WRITEBACKIFCOPY) */
    in->f32 = (PyArrayObject *)PyArray_FromAny((PyObject *)in->orig, f32, 4, 4,
                                               NPY_ARRAY_ALIGNED | NPY_ARRAY_NOTSWAPPED | NPY_ARRAY_FORCECAST, NULL);
    if (in->f32 == NULL) {
        return -1;
    }
    st = PyArray_STRIDES(in->f32);
    in->stride[0] = st[0];
    in->stride[1] = st[nhd ? 2 : 1];
    in->stride[2] = st[nhd ? 1 : 2];
    in->stride[3] = st[3];
    return 0;
}

/* Copy a strided float32 (b, h, s, d) view into a contiguous buffer (GIL not needed). */
static void pack(const ref_input *in, float *dst) {
    const char *base = (const char *)PyArray_DATA(in->f32);
    int64_t b, h, s, d, n = 0;
    for (b = 0; b < in->dim[0]; ++b) {
        for (h = 0; h < in->dim[1]; ++h) {
            for (s = 0; s < in->dim[2]; ++s) {
                const char *row = base + (npy_intp)b * in->stride[0] + (npy_intp)h * in->stride[1] +
                                  (npy_intp)s * in->stride[2];
                for (d = 0; d < in->dim[3]; ++d) {
                    dst[n++] = *(const float *)(row + (npy_intp)d * in->stride[3]);
                }
            }
        }
    }
}

/* (B, H, S, D) contiguous -> (B, S, H, D) contiguous. */
static void to_nhd(const float *src, float *dst, int64_t B, int64_t H, int64_t S, int64_t D) {
    int64_t b, h, s;
    for (b = 0; b < B; ++b) {
        for (h = 0; h < H; ++h) {
            for (s = 0; s < S; ++s) {
                memcpy(dst + ((b * S + s) * H + h) * D, src + ((b * H + h) * S + s) * D, (size_t)D * sizeof(float));
            }
        }
    }
}

/* A str argument of function `fn`; TypeError naming it otherwise. */
static const char *parse_str(PyObject *obj, const char *fn, const char *name) {
    const char *s;
    Py_ssize_t len;
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must be a str, got %.100s %R", fn, name, Py_TYPE(obj)->tp_name, obj);
        return NULL;
    }
    s = PyUnicode_AsUTF8AndSize(obj, &len);
    if (s != NULL && strlen(s) != (size_t)len) {
        s = "<str with NUL>"; /* an embedded NUL matches no choice; keep the message printable */
    }
    return s;
}

static int parse_mode(const char *s, sa3_ref_mode *out) {
    if (strcmp(s, "exact") == 0) {
        *out = SA3_REF_EXACT;
    } else if (strcmp(s, "int8-fp8") == 0) {
        *out = SA3_REF_INT8_FP8;
    } else if (strcmp(s, "int8-fp8-f16acc") == 0) {
        *out = SA3_REF_INT8_FP8_F16ACC;
    } else if (strcmp(s, "int8-fp16") == 0) {
        *out = SA3_REF_INT8_FP16;
    } else if (strcmp(s, "nvfp4") == 0) {
        *out = SA3_REF_NVFP4;
    } else {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): mode must be one of 'exact', 'int8-fp8', 'int8-fp8-f16acc', 'int8-fp16', "
                     "'nvfp4', got '%s'",
                     s);
        return -1;
    }
    return 0;
}

static int parse_pv_dtype(const char *s, sa3_dtype *out) {
    if (strcmp(s, "bf16") == 0 || strcmp(s, "bfloat16") == 0) {
        *out = SA3_DTYPE_BF16;
    } else if (strcmp(s, "f16") == 0 || strcmp(s, "fp16") == 0 || strcmp(s, "float16") == 0) {
        *out = SA3_DTYPE_F16;
    } else {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): pv_dtype must be 'bf16' (or 'bfloat16') or 'f16' (or 'fp16', "
                     "'float16'), got '%s'",
                     s);
        return -1;
    }
    return 0;
}

static int parse_layout(const char *s, int *nhd) {
    if (strcmp(s, "HND") == 0) {
        *nhd = 0;
    } else if (strcmp(s, "NHD") == 0) {
        *nhd = 1;
    } else {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): layout must be 'HND' (B, H, S, D) or 'NHD' (B, S, H, D), got '%s'", s);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Signals during a call (the GIL is released while the reference runs)
 * ------------------------------------------------------------------------------------- */

#define SIGNAL_POLL_NS 50000000LL /* re-take the GIL at most every 50 ms: prompt, and cheap
                                     even when another thread holds the GIL for its 5 ms slice */

/* Per call, on the caller's stack: nothing shared between threads. */
typedef struct signal_poll {
    PyThreadState *saved; /* this thread's state while the GIL is released */
    struct timespec last;
    int interrupted;      /* a signal handler raised (KeyboardInterrupt): exception is set */
} signal_poll;

static long long elapsed_ns(const struct timespec *a, const struct timespec *b) {
    return (long long)(b->tv_sec - a->tv_sec) * 1000000000LL + (long long)(b->tv_nsec - a->tv_nsec);
}

/* sa3_ref_params.poll: run Python's signal handlers now and then. PyErr_CheckSignals does
 * nothing outside the main thread, so calls from worker threads only pay the clock read. */
static int poll_signals(void *ctx) {
    signal_poll *sp = (signal_poll *)ctx;
    struct timespec now;
    if (timespec_get(&now, TIME_UTC) == 0 || elapsed_ns(&sp->last, &now) < SIGNAL_POLL_NS) {
        return 0;
    }
    sp->last = now;
    PyEval_RestoreThread(sp->saved);
    if (PyErr_CheckSignals() < 0) {
        sp->interrupted = 1;
    }
    sp->saved = PyEval_SaveThread();
    return sp->interrupted;
}

/* ---------------------------------------------------------------------------------------
 * reference_attention
 * ------------------------------------------------------------------------------------- */

PyObject *sa3_py_reference_attention(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"q", "k", "v", "mode", "is_causal", "sm_scale", "smooth_k", "per_block_mean",
                             "q_block", "k_block", "pv_dtype", "layout", "granularity", "return_lse", "v_mean_fix",
                             "l_quantized", NULL};
    PyObject *qo, *ko, *vo, *causal_o = Py_False, *scale_o = Py_None, *smooth_o = Py_True, *pbm_o = Py_False;
    PyObject *qblk_o = NULL, *kblk_o = NULL, *mode_o = NULL, *pv_o = NULL, *layout_o = NULL, *gran_o = NULL;
    PyObject *lse_o = Py_False, *vfix_o = Py_False, *lq_o = Py_False;
    int want_lse = 0;
    PyArrayObject *lse = NULL;
    const char *mode_s = "int8-fp16", *pv_s = "bf16", *layout_s = "HND", *gran_s = "block";
    ref_input in[3];
    sa3_ref_params p;
    int nhd = 0, i;
    int64_t q_count = 0, kv_count = 0;
    float *bufs[4] = {NULL, NULL, NULL, NULL}; /* q, k, v, o (o only for NHD) */
    PyArrayObject *out = NULL;
    npy_intp out_dims[4];
    sa3_status st;
    signal_poll sig;
    char s0[160], s1[160];
    (void)module;

    memset(in, 0, sizeof in);
    memset(&p, 0, sizeof p);
    p.q_block = 32;
    p.k_block = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|$OOOOOOOOOOOOO:reference_attention", kwlist, &qo, &ko, &vo,
                                     &mode_o, &causal_o, &scale_o, &smooth_o, &pbm_o, &qblk_o, &kblk_o, &pv_o,
                                     &layout_o, &gran_o, &lse_o, &vfix_o, &lq_o)) {
        return NULL;
    }
    /* granularity: "block" (q_block/k_block rows per scale), "mma" (the mma kernel's
     * per-thread groups; q_block/k_block are then ignored for the INT8 scales) or "quad"
     * (Q per q_block rows; K per k_block block in 4 groups by key % 8 / 2, the wgmma lanes) */
    if (gran_o != NULL && (gran_s = parse_str(gran_o, "reference_attention", "granularity")) == NULL) {
        return NULL;
    }
    if (strcmp(gran_s, "block") == 0) {
        p.groups = SA3_REF_GROUPS_BLOCK;
    } else if (strcmp(gran_s, "mma") == 0) {
        p.groups = SA3_REF_GROUPS_MMA;
    } else if (strcmp(gran_s, "quad") == 0) {
        p.groups = SA3_REF_GROUPS_QUAD;
    } else {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): granularity must be 'block', 'mma' or 'quad', got '%s'", gran_s);
        return NULL;
    }
    if ((mode_o != NULL && (mode_s = parse_str(mode_o, "reference_attention", "mode")) == NULL) ||
        (pv_o != NULL && (pv_s = parse_str(pv_o, "reference_attention", "pv_dtype")) == NULL) ||
        (layout_o != NULL && (layout_s = parse_str(layout_o, "reference_attention", "layout")) == NULL)) {
        return NULL;
    }
    if (parse_mode(mode_s, &p.mode) < 0 || parse_pv_dtype(pv_s, &p.pv_dtype) < 0 || parse_layout(layout_s, &nhd) < 0 ||
        parse_flag(causal_o, "is_causal", &p.is_causal) < 0 || parse_flag(smooth_o, "smooth_k", &p.smooth_k) < 0 ||
        parse_flag(pbm_o, "per_block_mean", &p.per_block_mean) < 0 || parse_flag(lse_o, "return_lse", &want_lse) < 0 ||
        parse_flag(vfix_o, "v_mean_fix", &p.v_mean_fix) < 0 || parse_flag(lq_o, "l_quantized", &p.l_quantized) < 0 ||
        (qblk_o != NULL && parse_block(qblk_o, "q_block", &p.q_block) < 0) ||
        (kblk_o != NULL && parse_block(kblk_o, "k_block", &p.k_block) < 0)) {
        return NULL;
    }
    if (p.mode == SA3_REF_INT8_FP8_F16ACC && p.k_block % 32 != 0) {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): k_block must be a multiple of 32 for mode='int8-fp8-f16acc' (each fp16 "
                     "partial covers whole 32-key mma steps), got %lld",
                     (long long)p.k_block);
        return NULL;
    }
    if (p.l_quantized && p.mode != SA3_REF_NVFP4) {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): l_quantized is for mode='nvfp4' only (the row sum from P's "
                     "dequantized FP4 codes), got mode='%s'",
                     mode_s);
        return NULL;
    }
    if (p.mode == SA3_REF_NVFP4 && p.k_block % 16 != 0) {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): k_block must be a multiple of 16 for mode='nvfp4' (P and V share "
                     "NVFP4 scale groups of 16 keys), got %lld",
                     (long long)p.k_block);
        return NULL;
    }
    if (check_input(qo, "q", nhd, &in[0]) < 0 || check_input(ko, "k", nhd, &in[1]) < 0 ||
        check_input(vo, "v", nhd, &in[2]) < 0) {
        return NULL;
    }
    /* k and v must agree exactly (same layout, so compare the raw shapes) */
    if (memcmp(PyArray_DIMS(in[1].orig), PyArray_DIMS(in[2].orig), 4 * sizeof(npy_intp)) != 0) {
        PyErr_Format(PyExc_ValueError, "reference_attention(): k and v must have the same shape, got k %s and v %s",
                     format_shape(in[1].orig, s0, sizeof s0), format_shape(in[2].orig, s1, sizeof s1));
        return NULL;
    }
    if (in[0].dim[0] != in[1].dim[0]) {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): q and k must have the same batch size B, got q %s and k %s (layout %s)",
                     format_shape(in[0].orig, s0, sizeof s0), format_shape(in[1].orig, s1, sizeof s1), layout_s);
        return NULL;
    }
    if (in[0].dim[3] != in[1].dim[3]) {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): q and k must have the same head dim D (last axis), got q %s and k %s",
                     format_shape(in[0].orig, s0, sizeof s0), format_shape(in[1].orig, s1, sizeof s1));
        return NULL;
    }
    if (in[0].dim[1] % in[1].dim[1] != 0) {
        PyErr_Format(PyExc_ValueError,
                     "reference_attention(): q's head count (%lld) must be a multiple of k/v's (%lld) for GQA/MQA, "
                     "got q %s and k %s (layout %s)",
                     (long long)in[0].dim[1], (long long)in[1].dim[1], format_shape(in[0].orig, s0, sizeof s0),
                     format_shape(in[1].orig, s1, sizeof s1), layout_s);
        return NULL;
    }
    if (checked_count(in[0].dim, "q", &q_count) < 0 || checked_count(in[1].dim, "k/v", &kv_count) < 0) {
        return NULL;
    }
    if (parse_scale(scale_o, in[0].dim[3], &p.sm_scale) < 0) {
        return NULL;
    }

    p.batch = in[0].dim[0];
    p.heads_q = in[0].dim[1];
    p.seq_q = in[0].dim[2];
    p.head_dim = in[0].dim[3];
    p.heads_kv = in[1].dim[1];
    p.seq_k = in[1].dim[2];

    for (i = 0; i < 3; ++i) {
        if (cast_input(&in[i], nhd) < 0) {
            goto fail;
        }
    }
    out_dims[0] = (npy_intp)p.batch;
    out_dims[1] = (npy_intp)(nhd ? p.seq_q : p.heads_q);
    out_dims[2] = (npy_intp)(nhd ? p.heads_q : p.seq_q);
    out_dims[3] = (npy_intp)p.head_dim;
    out = (PyArrayObject *)PyArray_SimpleNew(4, out_dims, NPY_FLOAT32);
    if (out == NULL) {
        goto fail;
    }
    if (want_lse) {
        npy_intp lse_dims[3];
        lse_dims[0] = (npy_intp)p.batch;
        lse_dims[1] = (npy_intp)p.heads_q;
        lse_dims[2] = (npy_intp)p.seq_q;
        lse = (PyArrayObject *)PyArray_SimpleNew(3, lse_dims, NPY_FLOAT32);
        if (lse == NULL) {
            goto fail;
        }
        p.lse = (float *)PyArray_DATA(lse); /* fresh, C-contiguous: (B, Hq, Sq) in every layout */
    }
    bufs[0] = (float *)malloc((size_t)q_count * sizeof(float));
    bufs[1] = (float *)malloc((size_t)kv_count * sizeof(float));
    bufs[2] = (float *)malloc((size_t)kv_count * sizeof(float));
    if (nhd) {
        bufs[3] = (float *)malloc((size_t)q_count * sizeof(float));
    }
    if (bufs[0] == NULL || bufs[1] == NULL || bufs[2] == NULL || (nhd && bufs[3] == NULL)) {
        PyErr_NoMemory();
        goto fail;
    }
    p.q = bufs[0];
    p.k = bufs[1];
    p.v = bufs[2];
    p.o = nhd ? bufs[3] : (float *)PyArray_DATA(out); /* a fresh C-contiguous array */

    memset(&sig, 0, sizeof sig);
    timespec_get(&sig.last, TIME_UTC);
    p.poll = poll_signals;
    p.poll_ctx = &sig;
    sig.saved = PyEval_SaveThread();
    for (i = 0; i < 3; ++i) {
        pack(&in[i], bufs[i]);
    }
    st = sa3_reference_attention(&p);
    if (st == SA3_OK && nhd) {
        to_nhd(bufs[3], (float *)PyArray_DATA(out), p.batch, p.heads_q, p.seq_q, p.head_dim);
    }
    PyEval_RestoreThread(sig.saved);

    if (sig.interrupted) {
        goto fail; /* the signal handler's exception (KeyboardInterrupt) is set */
    }
    switch (st) {
    case SA3_OK:
        break;
    case SA3_ERR_NOMEM:
        PyErr_NoMemory();
        goto fail;
    case SA3_ERR_OVERFLOW:
        PyErr_SetString(PyExc_ValueError, "reference_attention(): workspace size overflows int64/size_t");
        goto fail;
    default:
        PyErr_Format(PyExc_ValueError, "reference_attention(): invalid parameters (status %d)", (int)st);
        goto fail;
    }
    for (i = 0; i < 4; ++i) {
        free(bufs[i]);
    }
    for (i = 0; i < 3; ++i) {
        Py_XDECREF(in[i].f32);
    }
    if (lse != NULL) {
        PyObject *pair = PyTuple_Pack(2, (PyObject *)out, (PyObject *)lse);
        Py_DECREF(out);
        Py_DECREF(lse);
        return pair;
    }
    return (PyObject *)out;

fail:
    for (i = 0; i < 4; ++i) {
        free(bufs[i]);
    }
    for (i = 0; i < 3; ++i) {
        Py_XDECREF(in[i].f32);
    }
    Py_XDECREF(out);
    Py_XDECREF(lse);
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * convert
 * ------------------------------------------------------------------------------------- */

typedef enum convert_kind { CONVERT_E4M3, CONVERT_E2M1, CONVERT_BF16, CONVERT_F16, CONVERT_INT8, CONVERT_F16_F64 } convert_kind;

PyObject *sa3_py_convert(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"array", "kind", NULL};
    PyObject *obj, *kind_o;
    const char *kind_s;
    convert_kind kind;
    PyArray_Descr *f32;
    PyArrayObject *arr, *out;
    float *x;
    npy_intp n, i;
    int t;
    (void)module;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:convert", kwlist, &obj, &kind_o)) {
        return NULL;
    }
    kind_s = parse_str(kind_o, "convert", "kind");
    if (kind_s == NULL) {
        return NULL;
    }
    if (strcmp(kind_s, "e4m3") == 0) {
        kind = CONVERT_E4M3;
    } else if (strcmp(kind_s, "e2m1") == 0) {
        kind = CONVERT_E2M1;
    } else if (strcmp(kind_s, "bf16") == 0) {
        kind = CONVERT_BF16;
    } else if (strcmp(kind_s, "f16") == 0) {
        kind = CONVERT_F16;
    } else if (strcmp(kind_s, "int8") == 0) {
        kind = CONVERT_INT8;
    } else if (strcmp(kind_s, "f16_from_f64") == 0) {
        kind = CONVERT_F16_F64;
    } else {
        PyErr_Format(PyExc_ValueError,
                     "convert(): kind must be one of 'e4m3', 'e2m1', 'bf16', 'f16', 'int8', 'f16_from_f64', got '%s'",
                     kind_s);
        return NULL;
    }
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "convert(): array must be a numpy.ndarray, got %.100s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    arr = (PyArrayObject *)obj;
    t = PyArray_TYPE(arr);
    if (t != NPY_HALF && t != NPY_FLOAT && t != NPY_DOUBLE) {
        PyErr_Format(PyExc_TypeError, "convert(): array must have dtype float16, float32 or float64, got dtype %S",
                     (PyObject *)PyArray_DESCR(arr));
        return NULL;
    }
    if (kind == CONVERT_F16_F64) { /* rounded from the float64 value itself, never via fp32 */
        PyArrayObject *src;
        const double *d;
        src = (PyArrayObject *)PyArray_FromAny(obj, PyArray_DescrFromType(NPY_FLOAT64), 0, 0,
                                               NPY_ARRAY_CARRAY_RO | NPY_ARRAY_FORCECAST, NULL);
        if (src == NULL) {
            return NULL;
        }
        out = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(src), PyArray_DIMS(src), NPY_FLOAT32);
        if (out == NULL) {
            Py_DECREF(src);
            return NULL;
        }
        d = (const double *)PyArray_DATA(src);
        x = (float *)PyArray_DATA(out);
        n = PyArray_SIZE(out);
        for (i = 0; i < n; ++i) {
            x[i] = (float)sa3_round_f16_f64(d[i]);
        }
        Py_DECREF(src);
        return (PyObject *)out;
    }
    f32 = PyArray_DescrFromType(NPY_FLOAT32);
    if (f32 == NULL) {
        return NULL;
    }
    /* Always a fresh C-contiguous float32 copy: the conversion runs in place on it. A
     * float64 input is first rounded to float32 (RNE), as the kernels only convert fp32. */
    out = (PyArrayObject *)PyArray_FromAny(obj, f32, 0, 0, NPY_ARRAY_CARRAY | NPY_ARRAY_ENSURECOPY | NPY_ARRAY_FORCECAST, NULL);
    if (out == NULL) {
        return NULL;
    }
    x = (float *)PyArray_DATA(out);
    n = PyArray_SIZE(out);
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < n; ++i) {
        switch (kind) {
        case CONVERT_E4M3:
            x[i] = sa3_round_e4m3(x[i]);
            break;
        case CONVERT_E2M1:
            x[i] = sa3_round_e2m1(x[i]);
            break;
        case CONVERT_BF16:
            x[i] = sa3_round_bf16(x[i]);
            break;
        case CONVERT_F16:
            x[i] = sa3_round_f16(x[i]);
            break;
        case CONVERT_INT8:
            x[i] = (float)sa3_quant_int8(x[i]);
            break;
        case CONVERT_F16_F64: /* handled above */
            break;
        }
    }
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

/* ---------------------------------------------------------------------------------------
 * nvfp4_quantize (tests: the reference's NVFP4 quantization of one head, bit for bit)
 * ------------------------------------------------------------------------------------- */

/* reference_nvfp4_quantize(x, groups="rows", smooth="none", block=64) -> dict(codes, scales, g,
 * mean): x a 2-D float array (rows, cols); groups "rows" (16 along each row: Q, K) or "cols" (16
 * rows per column: V); smooth "none", "mean" (K: column mean over all rows, the NVFP4 mode's
 * order) or "block" (Q: column mean per block of `block` rows). */
PyObject *sa3_py_reference_nvfp4_quantize(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"x", "groups", "smooth", "block", NULL};
    PyObject *obj;
    const char *groups = "rows", *smooth_s = "none";
    long long block = 64;
    int smooth, along_rows;
    PyArray_Descr *f32;
    PyArrayObject *x = NULL, *codes = NULL, *scales = NULL, *mean = NULL;
    npy_intp rows, cols, sdims[2], mdims[2];
    float g = 0.0f;
    sa3_status st;
    PyObject *res = NULL;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|ssL:reference_nvfp4_quantize", kwlist, &obj, &groups,
                                     &smooth_s, &block)) {
        return NULL;
    }
    if (strcmp(groups, "rows") == 0) {
        along_rows = 1;
    } else if (strcmp(groups, "cols") == 0) {
        along_rows = 0;
    } else {
        PyErr_Format(PyExc_ValueError, "reference_nvfp4_quantize(): groups must be 'rows' or 'cols', got '%s'", groups);
        return NULL;
    }
    if (strcmp(smooth_s, "none") == 0) {
        smooth = 0;
    } else if (strcmp(smooth_s, "mean") == 0) {
        smooth = 1;
    } else if (strcmp(smooth_s, "block") == 0) {
        smooth = 2;
    } else {
        PyErr_Format(PyExc_ValueError, "reference_nvfp4_quantize(): smooth must be 'none', 'mean' or 'block', got '%s'",
                     smooth_s);
        return NULL;
    }
    if (block < 1) {
        PyErr_Format(PyExc_ValueError, "reference_nvfp4_quantize(): block must be >= 1, got %lld", block);
        return NULL;
    }
    f32 = PyArray_DescrFromType(NPY_FLOAT32);
    x = (PyArrayObject *)PyArray_FromAny(obj, f32, 2, 2, NPY_ARRAY_CARRAY | NPY_ARRAY_FORCECAST, NULL);
    if (x == NULL) {
        return NULL;
    }
    rows = PyArray_DIM(x, 0);
    cols = PyArray_DIM(x, 1);
    if (rows < 1 || cols < 1) {
        PyErr_Format(PyExc_ValueError, "reference_nvfp4_quantize(): x must be non-empty, got (%zd, %zd)",
                     (Py_ssize_t)rows, (Py_ssize_t)cols);
        goto done;
    }
    sdims[0] = along_rows ? rows : (rows + 15) / 16;
    sdims[1] = along_rows ? (cols + 15) / 16 : cols;
    mdims[0] = smooth == 2 ? (npy_intp)((rows + block - 1) / block) : 1;
    mdims[1] = cols;
    codes = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(x), NPY_FLOAT32);
    scales = (PyArrayObject *)PyArray_SimpleNew(2, sdims, NPY_FLOAT32);
    mean = (PyArrayObject *)PyArray_ZEROS(2, mdims, NPY_FLOAT32, 0);
    if (codes == NULL || scales == NULL || mean == NULL) {
        goto done;
    }
    st = sa3_reference_nvfp4_quantize((const float *)PyArray_DATA(x), rows, cols, smooth, block, along_rows,
                                      (float *)PyArray_DATA(mean), (float *)PyArray_DATA(codes),
                                      (float *)PyArray_DATA(scales), &g);
    if (st == SA3_ERR_NOMEM) {
        PyErr_NoMemory();
        goto done;
    }
    if (st != SA3_OK) {
        PyErr_SetString(PyExc_ValueError, "reference_nvfp4_quantize(): invalid arguments");
        goto done;
    }
    res = Py_BuildValue("{s:O,s:O,s:d,s:O}", "codes", codes, "scales", scales, "g", (double)g, "mean",
                        smooth ? (PyObject *)mean : Py_None);
done:
    Py_XDECREF(x);
    Py_XDECREF(codes);
    Py_XDECREF(scales);
    Py_XDECREF(mean);
    return res;
}
