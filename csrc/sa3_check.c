/* sa3_check.c - the one validation of an attention call (see sa3_check.h).
 *
 * Order matters: TypeErrors first (dtypes), then ValueErrors in the order a reader would
 * look (ranks, heads, shapes, devices, sizes). Nothing here touches tensor memory; only
 * pointers, shapes and strides are read. Messages are formatted on the failure path only.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sa3_check.h"
#include "sa3_intake.h"

/* Raise and return the status from the enclosing function (which has `st` in scope). */
#define SA3_FAIL(status, ...)                  \
    do {                                       \
        sa3_raise(st, (status), __VA_ARGS__); \
        return (status);                       \
    } while (0)

/* Room for one sa3_tensor_describe() line. */
#define SA3_DESC_LEN 320

int sa3_dtype_size(sa3_dtype dtype) {
    switch (dtype) {
    case SA3_DTYPE_F16:
    case SA3_DTYPE_BF16: return 2;
    case SA3_DTYPE_F32: return 4;
    case SA3_DTYPE_F64: return 8;
    default: return 0;
    }
}

const char *sa3_dtype_str(sa3_dtype dtype) {
    switch (dtype) {
    case SA3_DTYPE_F16: return "float16";
    case SA3_DTYPE_BF16: return "bfloat16";
    case SA3_DTYPE_F32: return "float32";
    case SA3_DTYPE_F64: return "float64";
    default: return "invalid";
    }
}

const char *sa3_layout_name(sa3_layout layout) {
    switch (layout) {
    case SA3_LAYOUT_HND: return "HND";
    case SA3_LAYOUT_NHD: return "NHD";
    case SA3_LAYOUT_NHD_FLAT: return "NHD_FLAT";
    default: return "?";
    }
}

static const char *sa3_layout_shape(sa3_layout layout) {
    return layout == SA3_LAYOUT_HND ? "(B, H, S, D)" : layout == SA3_LAYOUT_NHD ? "(B, S, H, D)" : "(B, S, H*D)";
}

/* ASCII case-insensitive equality of a counted string with a NUL-terminated one
 * (strcasecmp is POSIX, not C11/MSVC). */
static int sa3_ieq(const char *s, Py_ssize_t n, const char *lit) {
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        char a = s[i], b = lit[i];
        if (b == '\0') return 0;
        if (a >= 'a' && a <= 'z') a = (char)(a - 'a' + 'A');
        if (a != b) return 0;
    }
    return lit[n] == '\0';
}

int sa3_parse_layout(PyObject *str_or_none, sa3_layout *out) {
    const char *s;
    Py_ssize_t n;
    if (str_or_none == NULL || str_or_none == Py_None) {
        *out = SA3_LAYOUT_HND;
        return 0;
    }
    if (!PyUnicode_Check(str_or_none)) {
        sa3_raise(NULL, SA3_ERR_TYPE, "layout must be a str ('HND', 'NHD' or 'NHD_FLAT') or None, got %.100s",
                  Py_TYPE(str_or_none)->tp_name);
        return -1;
    }
    s = PyUnicode_AsUTF8AndSize(str_or_none, &n);
    if (s == NULL) return -1;
    if (sa3_ieq(s, n, "HND")) {
        *out = SA3_LAYOUT_HND;
    } else if (sa3_ieq(s, n, "NHD")) {
        *out = SA3_LAYOUT_NHD;
    } else if (sa3_ieq(s, n, "NHD_FLAT")) {
        *out = SA3_LAYOUT_NHD_FLAT;
    } else {
        sa3_raise(NULL, SA3_ERR_VALUE,
                  "layout must be 'HND' (B, H, S, D), 'NHD' (B, S, H, D) or 'NHD_FLAT' (B, S, H*D), got %R",
                  str_or_none);
        return -1;
    }
    return 0;
}

int sa3_parse_heads(PyObject *obj, int64_t *out) {
    long long h;
    *out = 0;
    if (obj == NULL || obj == Py_None) return 0;
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        sa3_raise(NULL, SA3_ERR_TYPE, "heads must be an int or None, got %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    h = PyLong_AsLongLong(obj);
    if (h == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        sa3_raise(NULL, SA3_ERR_VALUE, "heads=%R is out of range", obj);
        return -1;
    }
    if (h <= 0) {
        sa3_raise(NULL, SA3_ERR_VALUE, "heads must be positive, got %lld", h);
        return -1;
    }
    *out = (int64_t)h;
    return 0;
}

/* One tensor in canonical (b, h, s, d) order. */
typedef struct sa3_canon {
    int64_t n[4]; /* sizes   b, h, s, d */
    int64_t s[4]; /* strides b, h, s, d (elements) */
} sa3_canon;

/* |a * b| <= INT64_MAX for a >= 0; returns 0 on overflow. */
static int sa3_mul_abs(int64_t a, int64_t b, int64_t *r) {
    int64_t ab;
    if (b == INT64_MIN) return 0;
    ab = b < 0 ? -b : b;
    if (a != 0 && ab > INT64_MAX / a) return 0;
    *r = a * ab;
    return 1;
}

static int sa3_add(int64_t a, int64_t b, int64_t *r) { /* a, b >= 0 */
    if (a > INT64_MAX - b) return 0;
    *r = a + b;
    return 1;
}

/* Product of n sizes (each >= 0) inside int64: 1, else 0. A zero size makes it 0, whatever
 * the others are. */
static int sa3_count(const int64_t *sizes, int n, int64_t *r) {
    int64_t acc = 1;
    int i, overflow = 0;
    for (i = 0; i < n; i++) {
        if (sizes[i] == 0) {
            *r = 0;
            return 1;
        }
    }
    for (i = 0; i < n; i++) {
        if (!sa3_mul_abs(acc, sizes[i], &acc)) overflow = 1;
    }
    *r = acc;
    return !overflow;
}

/* Memory a tensor spans, relative to its data pointer, in bytes: [lo, hi). */
typedef struct sa3_span {
    int empty;
    int64_t lo, hi;
    uintptr_t base;
} sa3_span;

/* Byte span of n dims with every step checked for int64 overflow and for the address range
 * wrapping around. Returns 1, or 0 on overflow. */
static int sa3_compute_span(const void *data, const int64_t *shape, const int64_t *strides, int n, int itemsize,
                            sa3_span *sp) {
    int64_t neg = 0, pos = 0, term, bytes_neg, bytes_pos, total;
    int i;
    sp->empty = 0;
    sp->base = (uintptr_t)data;
    for (i = 0; i < n; i++) {
        if (shape[i] == 0) {
            sp->empty = 1;
            sp->lo = sp->hi = 0;
            return 1;
        }
    }
    for (i = 0; i < n; i++) {
        if (!sa3_mul_abs(shape[i] - 1, strides[i], &term)) return 0;
        if (strides[i] < 0) {
            if (!sa3_add(neg, term, &neg)) return 0;
        } else {
            if (!sa3_add(pos, term, &pos)) return 0;
        }
    }
    if (!sa3_add(neg, pos, &total) || !sa3_mul_abs(itemsize, total, &total)) return 0;
    if (!sa3_mul_abs(itemsize, neg, &bytes_neg) || !sa3_mul_abs(itemsize, pos, &bytes_pos)) return 0;
    if (!sa3_add(bytes_pos, itemsize, &bytes_pos)) return 0; /* the last element's own bytes */
    /* No wrap-around of the address space on either side of the base pointer. */
    if ((uint64_t)bytes_neg > (uint64_t)sp->base) return 0;
    if ((uint64_t)bytes_pos > (uint64_t)(UINTPTR_MAX - sp->base)) return 0;
    sp->lo = -bytes_neg;
    sp->hi = bytes_pos;
    return 1;
}

static int sa3_spans_overlap(const sa3_span *a, const sa3_span *b) {
    /* Compare as unsigned addresses; compute_span guaranteed no wrap. */
    uint64_t alo, ahi, blo, bhi;
    if (a->empty || b->empty) return 0;
    alo = (uint64_t)a->base - (uint64_t)(-a->lo);
    ahi = (uint64_t)a->base + (uint64_t)a->hi;
    blo = (uint64_t)b->base - (uint64_t)(-b->lo);
    bhi = (uint64_t)b->base + (uint64_t)b->hi;
    return alo < bhi && blo < ahi;
}

/* 0: provably no two indices of t share an element; 1: some size>1 dim has stride 0 (every
 * write to it would land on the same element: certain overlap); 2: cannot prove either way
 * (e.g. interleaved strides). Sufficient test: sorted by |stride|, each stride must step past
 * everything the smaller dims span. */
static int sa3_self_overlap(const sa3_tensor *t) {
    int64_t sz[SA3_MAX_NDIM], sd[SA3_MAX_NDIM], extent = 1, term;
    int n = 0, i, j;
    for (i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0) return 0;
        if (t->shape[i] == 1) continue;
        if (t->strides[i] == 0) return 1;
        sz[n] = t->shape[i];
        sd[n] = t->strides[i] < 0 ? -t->strides[i] : t->strides[i];
        n++;
    }
    for (i = 1; i < n; i++) { /* insertion sort by stride, at most 4 entries */
        int64_t a = sz[i], b = sd[i];
        for (j = i - 1; j >= 0 && sd[j] > b; j--) {
            sz[j + 1] = sz[j];
            sd[j + 1] = sd[j];
        }
        sz[j + 1] = a;
        sd[j + 1] = b;
    }
    for (i = 0; i < n; i++) {
        if (sd[i] < extent) return 2;
        if (!sa3_mul_abs(sz[i] - 1, sd[i], &term) || !sa3_add(extent, term, &extent)) return 2;
    }
    return 0;
}

static void sa3_device_str(const sa3_tensor *t, char *buf, size_t len) {
    if (t->device_kind == SA3_DEVICE_CUDA)
        snprintf(buf, len, "cuda:%d", t->device_id);
    else if (t->device_kind == SA3_DEVICE_CPU)
        snprintf(buf, len, "cpu");
    else
        snprintf(buf, len, "a non-CPU/CUDA device");
}

/* Canonical view of a 4-d tensor under HND/NHD. */
static void sa3_canon4(const sa3_tensor *t, sa3_layout layout, sa3_canon *c) {
    /* HND: (b, h, s, d) = dims (0, 1, 2, 3); NHD: (0, 2, 1, 3). */
    int hd = layout == SA3_LAYOUT_NHD ? 2 : 1, sd = layout == SA3_LAYOUT_NHD ? 1 : 2;
    c->n[0] = t->shape[0];
    c->s[0] = t->strides[0];
    c->n[1] = t->shape[hd];
    c->s[1] = t->strides[hd];
    c->n[2] = t->shape[sd];
    c->s[2] = t->strides[sd];
    c->n[3] = t->shape[3];
    c->s[3] = t->strides[3];
}

/* Canonical view of a (B, S, H*D) tensor split into h heads of d (h * d == last dim). A
 * head is d consecutive elements of the last dim, whatever its stride. */
static int sa3_canon_flat(const sa3_tensor *t, int64_t h, int64_t d, sa3_canon *c) {
    c->n[0] = t->shape[0];
    c->s[0] = t->strides[0];
    c->n[1] = h;
    c->n[2] = t->shape[1];
    c->s[2] = t->strides[1];
    c->n[3] = d;
    c->s[3] = t->strides[2];
    if (d == 0) {
        c->s[1] = 0;
        return 1;
    }
    if (!sa3_mul_abs(d, t->strides[2], &c->s[1])) return 0;
    if (t->strides[2] < 0) c->s[1] = -c->s[1];
    return 1;
}

/* The problem's strides of a size-1 dimension are 0 (they never address anything). */
static void sa3_store(const sa3_canon *c, int64_t *dst) {
    int j;
    for (j = 0; j < 3; j++) dst[j] = c->n[j] > 1 ? c->s[j] : 0;
    dst[3] = c->n[3] > 1 ? c->s[3] : 1; /* a head dim of 0 or 1 is trivially contiguous */
}

sa3_status sa3_check_problem(sa3_module_state *st, const sa3_tensor *q, const sa3_tensor *k, const sa3_tensor *v,
                             sa3_layout layout, int64_t heads, sa3_problem *p) {
    const sa3_tensor *ts[3];
    static const char *const names[3] = {"q", "k", "v"};
    sa3_canon c[3];
    sa3_span span;
    char desc[SA3_DESC_LEN];
    const char *lname = sa3_layout_name(layout);
    int i, need_ndim, itemsize;
    int64_t d_qk = 0, d_v = 0, hkv = 0, count, dims[4];

    if (q == NULL || k == NULL || v == NULL || p == NULL)
        SA3_FAIL(SA3_ERR_VALUE, "sa3_check_problem: q, k, v and the problem are required");
    if (layout != SA3_LAYOUT_HND && layout != SA3_LAYOUT_NHD && layout != SA3_LAYOUT_NHD_FLAT)
        SA3_FAIL(SA3_ERR_VALUE, "unknown layout code %d", (int)layout);
    ts[0] = q;
    ts[1] = k;
    ts[2] = v;

    /* ---- TypeError: dtypes ---- */
    for (i = 0; i < 3; i++) {
        if (ts[i]->dtype == SA3_DTYPE_INVALID) {
            sa3_tensor_describe(ts[i], desc, sizeof desc);
            SA3_FAIL(SA3_ERR_TYPE, "%s: dtype must be a floating type (float16, bfloat16, float32 or float64), got %s (%s)",
                     names[i], ts[i]->dtype_name ? ts[i]->dtype_name : "unknown", desc);
        }
    }
    for (i = 1; i < 3; i++) {
        if (ts[i]->dtype != q->dtype)
            SA3_FAIL(SA3_ERR_TYPE, "%s: dtype %s differs from q's %s; q, k and v must share one dtype", names[i],
                     sa3_dtype_str(ts[i]->dtype), sa3_dtype_str(q->dtype));
    }
    itemsize = sa3_dtype_size(q->dtype);

    /* ---- ValueError: ranks ---- */
    need_ndim = layout == SA3_LAYOUT_NHD_FLAT ? 3 : 4;
    for (i = 0; i < 3; i++) {
        if (ts[i]->ndim != need_ndim) {
            sa3_tensor_describe(ts[i], desc, sizeof desc);
            SA3_FAIL(SA3_ERR_VALUE, "%s: layout %s needs a %d-d %s tensor, got %s", names[i], lname, need_ndim,
                     sa3_layout_shape(layout), desc);
        }
    }

    /* ---- ValueError: heads, and the canonical (b, h, s, d) views ---- */
    if (layout == SA3_LAYOUT_NHD_FLAT) {
        if (heads <= 0)
            SA3_FAIL(SA3_ERR_VALUE, "heads must be a positive int for layout NHD_FLAT (B, S, H*D), got %lld",
                     (long long)heads);
        if (q->shape[2] % heads != 0) {
            sa3_tensor_describe(q, desc, sizeof desc);
            SA3_FAIL(SA3_ERR_VALUE, "q: last dim %lld is not heads (%lld) * head dim: %s", (long long)q->shape[2],
                     (long long)heads, desc);
        }
        d_qk = q->shape[2] / heads;
        if (d_qk == 0) {
            /* H*0 columns everywhere: k/v heads can't be read off; take q's. */
            for (i = 1; i < 3; i++) {
                if (ts[i]->shape[2] != 0) {
                    sa3_tensor_describe(ts[i], desc, sizeof desc);
                    SA3_FAIL(SA3_ERR_VALUE, "%s: last dim %lld, but q's head dim is 0 (q's last dim 0, heads %lld): %s",
                             names[i], (long long)ts[i]->shape[2], (long long)heads, desc);
                }
            }
            hkv = heads;
        } else {
            if (k->shape[2] % d_qk != 0 || k->shape[2] == 0) {
                sa3_tensor_describe(k, desc, sizeof desc);
                SA3_FAIL(SA3_ERR_VALUE,
                         "k: last dim %lld is not a positive multiple of the head dim %lld (q's last dim %lld / heads "
                         "%lld): %s",
                         (long long)k->shape[2], (long long)d_qk, (long long)q->shape[2], (long long)heads, desc);
            }
            hkv = k->shape[2] / d_qk;
            if (v->shape[2] % hkv != 0) {
                sa3_tensor_describe(v, desc, sizeof desc);
                SA3_FAIL(SA3_ERR_VALUE, "v: last dim %lld is not k/v's %lld heads * a head dim: %s",
                         (long long)v->shape[2], (long long)hkv, desc);
            }
        }
        d_v = hkv > 0 ? v->shape[2] / hkv : 0;
        if (!sa3_canon_flat(q, heads, d_qk, &c[0]) || !sa3_canon_flat(k, hkv, d_qk, &c[1]) ||
            !sa3_canon_flat(v, hkv, d_v, &c[2])) {
            SA3_FAIL(SA3_ERR_OVERFLOW, "q/k/v: head strides (head dim * last stride) overflow int64");
        }
    } else {
        for (i = 0; i < 3; i++) sa3_canon4(ts[i], layout, &c[i]);
        d_qk = c[0].n[3];
        d_v = c[2].n[3];
        hkv = c[1].n[1];
        if (heads > 0 && c[0].n[1] != heads) {
            sa3_tensor_describe(q, desc, sizeof desc);
            SA3_FAIL(SA3_ERR_VALUE, "heads=%lld but q (layout %s) has %lld heads: %s", (long long)heads, lname,
                     (long long)c[0].n[1], desc);
        }
    }

    /* ---- ValueError: shapes agree ---- */
    for (i = 1; i < 3; i++) {
        if (c[i].n[0] != c[0].n[0]) {
            sa3_tensor_describe(ts[i], desc, sizeof desc);
            SA3_FAIL(SA3_ERR_VALUE, "%s: batch %lld differs from q's batch %lld (batches are not broadcast): %s",
                     names[i], (long long)c[i].n[0], (long long)c[0].n[0], desc);
        }
    }
    if (c[1].n[3] != d_qk) {
        sa3_tensor_describe(k, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_VALUE, "k: head dim %lld differs from q's head dim %lld: %s", (long long)c[1].n[3],
                 (long long)d_qk, desc);
    }
    if (hkv <= 0) {
        sa3_tensor_describe(k, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_VALUE, "k: has 0 heads; k/v need at least one head (q's heads are groups of k/v's): %s",
                 desc);
    }
    if (c[2].n[1] != c[1].n[1] || c[2].n[2] != c[1].n[2]) {
        char kd[SA3_DESC_LEN];
        sa3_tensor_describe(k, kd, sizeof kd);
        sa3_tensor_describe(v, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_VALUE, "v: heads/sequence length (%lld, %lld) differ from k's (%lld, %lld); v is %s, k is %s",
                 (long long)c[2].n[1], (long long)c[2].n[2], (long long)c[1].n[1], (long long)c[1].n[2], desc, kd);
    }
    if (c[0].n[1] % hkv != 0) {
        SA3_FAIL(SA3_ERR_VALUE,
                 "q has %lld heads, not a multiple of k/v's %lld heads (grouped-query attention needs Hq %% Hkv == 0)",
                 (long long)c[0].n[1], (long long)hkv);
    }

    /* ---- ValueError: devices ---- */
    for (i = 1; i < 3; i++) {
        if (ts[i]->device_kind != q->device_kind ||
            (q->device_kind != SA3_DEVICE_CPU && ts[i]->device_id != q->device_id)) {
            char a[48], b[48];
            sa3_device_str(q, a, sizeof a);
            sa3_device_str(ts[i], b, sizeof b);
            SA3_FAIL(SA3_ERR_VALUE, "%s is on %s but q is on %s; all tensors must be on one device", names[i], b, a);
        }
    }

    /* ---- ValueError (overflow): extents and element counts fit int64 ---- */
    for (i = 0; i < 3; i++) {
        if (!sa3_compute_span(ts[i]->data, ts[i]->shape, ts[i]->strides, ts[i]->ndim, itemsize, &span)) {
            sa3_tensor_describe(ts[i], desc, sizeof desc);
            SA3_FAIL(SA3_ERR_OVERFLOW, "%s: the memory its shape and strides span overflows int64 byte offsets: %s",
                     names[i], desc);
        }
        if (!sa3_count(ts[i]->shape, ts[i]->ndim, &count)) {
            sa3_tensor_describe(ts[i], desc, sizeof desc);
            SA3_FAIL(SA3_ERR_OVERFLOW, "%s: its element count overflows int64: %s", names[i], desc);
        }
    }
    dims[0] = c[0].n[0], dims[1] = c[0].n[1], dims[2] = c[0].n[2], dims[3] = d_v;
    if (!sa3_count(dims, 4, &count))
        SA3_FAIL(SA3_ERR_OVERFLOW, "the output (B=%lld, H=%lld, S=%lld, Dv=%lld) has more elements than int64 counts",
                 (long long)dims[0], (long long)dims[1], (long long)dims[2], (long long)dims[3]);
    dims[3] = c[1].n[2];
    if (!sa3_count(dims, 4, &count))
        SA3_FAIL(SA3_ERR_OVERFLOW,
                 "the attention scores (B=%lld, H=%lld, Sq=%lld, Sk=%lld) have more elements than int64 counts",
                 (long long)dims[0], (long long)dims[1], (long long)dims[2], (long long)dims[3]);

    /* ---- All good ---- */
    memset(p, 0, sizeof *p);
    p->q = q->data;
    p->k = k->data;
    p->v = v->data;
    p->o = NULL;
    sa3_store(&c[0], p->q_stride);
    sa3_store(&c[1], p->k_stride);
    sa3_store(&c[2], p->v_stride);
    p->batch = c[0].n[0];
    p->heads_q = c[0].n[1];
    p->heads_kv = hkv;
    p->seq_q = c[0].n[2];
    p->seq_k = c[1].n[2];
    p->head_dim = d_qk;
    p->head_dim_v = d_v;
    p->layout = layout;
    p->dtype = q->dtype;
    p->is_causal = 0;
    p->scale = d_qk > 0 ? (float)(1.0 / sqrt((double)d_qk)) : 1.0f;
    p->device = q->device_kind == SA3_DEVICE_CUDA ? q->device_id
                : q->device_kind == SA3_DEVICE_CPU ? SA3_DEVICE_NONE_CPU
                                                   : SA3_DEVICE_NONE_OTHER;
    p->lse = NULL;
    return SA3_OK;
}

int sa3_parse_scale(sa3_module_state *st, PyObject *obj, sa3_problem *p) {
    double x;
    float f;
    if (obj == NULL || obj == Py_None) return 0;
    if (PyBool_Check(obj) || PyUnicode_Check(obj) || PyBytes_Check(obj) ||
        (st->torch_tensor_type != NULL && PyObject_TypeCheck(obj, (PyTypeObject *)st->torch_tensor_type)) ||
        !(PyFloat_Check(obj) || PyLong_Check(obj) || (Py_TYPE(obj)->tp_as_number != NULL &&
                                                      Py_TYPE(obj)->tp_as_number->nb_float != NULL))) {
        sa3_raise(st, SA3_ERR_TYPE, "sm_scale must be a real number (int or float) or None, got %.100s",
                  Py_TYPE(obj)->tp_name);
        return -1;
    }
    x = PyFloat_AsDouble(obj);
    if (x == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            sa3_raise(st, SA3_ERR_VALUE, "sm_scale must be a finite number > 0, got an int too large for a float");
            return -1;
        }
        sa3_raise(st, SA3_ERR_TYPE, "sm_scale must be a real number (int or float) or None, got %.100s",
                  Py_TYPE(obj)->tp_name);
        return -1;
    }
    f = (float)x;
    if (!(x > 0.0) || !isfinite(x) || !isfinite(f) || !(f > 0.0f)) {
        PyObject *r = PyFloat_FromDouble(x);
        if (r == NULL) return -1;
        sa3_raise(st, SA3_ERR_VALUE,
                  "sm_scale must be a finite number > 0 that a float32 holds (about 1.2e-38 to 3.4e38), got %R", r);
        Py_DECREF(r);
        return -1;
    }
    p->scale = f;
    return 0;
}

int sa3_parse_causal(sa3_module_state *st, PyObject *obj, int *out) {
    if (obj == NULL || obj == Py_False) {
        *out = 0;
        return 0;
    }
    if (obj == Py_True) {
        *out = 1;
        return 0;
    }
    if (PyLong_CheckExact(obj)) {
        long v = PyLong_AsLong(obj);
        if (v == 0 || v == 1) {
            *out = (int)v;
            return 0;
        }
        if (v == -1 && PyErr_Occurred()) PyErr_Clear();
    }
    sa3_raise(st, SA3_ERR_TYPE, "is_causal must be a bool, got %.100s", Py_TYPE(obj)->tp_name);
    return -1;
}

sa3_status sa3_check_mask(sa3_module_state *st, const sa3_tensor *m, const sa3_problem *p) {
    char desc[SA3_DESC_LEN];
    int64_t want[4];
    int i, is_bool;
    const char *dn = m->dtype_name ? m->dtype_name : "";
    want[0] = p->batch, want[1] = p->heads_q, want[2] = p->seq_q, want[3] = p->seq_k;
    is_bool = strcmp(dn, "torch.bool") == 0 || strcmp(dn, "bool") == 0;
    if (m->ndim < 2) {
        sa3_tensor_describe(m, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_VALUE, "attn_mask: needs 2 to 4 dims broadcastable to (B, Hq, Sq, Sk), got %s", desc);
    }
    if (!is_bool && m->dtype != p->dtype) {
        sa3_tensor_describe(m, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_TYPE, "attn_mask: dtype must be bool or q's %s, got %s (%s)", sa3_dtype_str(p->dtype),
                 m->dtype_name ? m->dtype_name : "unknown", desc);
    }
    if (m->device_kind != (p->device >= 0 ? SA3_DEVICE_CUDA : p->device == SA3_DEVICE_NONE_CPU ? SA3_DEVICE_CPU
                                                                                                : SA3_DEVICE_OTHER) ||
        (p->device >= 0 && m->device_id != p->device)) {
        sa3_tensor_describe(m, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_VALUE, "attn_mask: must be on q's device, got %s", desc);
    }
    for (i = 0; i < m->ndim; i++) {
        int64_t have = m->shape[m->ndim - 1 - i], need = want[3 - i];
        if (have != 1 && have != need) {
            sa3_tensor_describe(m, desc, sizeof desc);
            SA3_FAIL(SA3_ERR_VALUE,
                     "attn_mask: shape must broadcast to (B, Hq, Sq, Sk) = (%lld, %lld, %lld, %lld) (each dim 1 or "
                     "equal, aligned from the right), got %s",
                     (long long)want[0], (long long)want[1], (long long)want[2], (long long)want[3], desc);
        }
    }
    if (p->is_causal)
        SA3_FAIL(SA3_ERR_VALUE, "attn_mask and is_causal=True were both given; pass one (a causal mask, or is_causal)");
    return SA3_OK;
}

sa3_status sa3_check_out(sa3_module_state *st, const sa3_tensor *o, sa3_problem *p) {
    sa3_canon c;
    sa3_span so, sx;
    char desc[SA3_DESC_LEN];
    const char *lname = sa3_layout_name(p->layout);
    const void *ptr[3];
    const int64_t *str[3];
    static const char *const names[3] = {"q", "k", "v"};
    int64_t sizes[3][4];
    int i, itemsize = sa3_dtype_size(p->dtype), overlap;

    if (o->dtype != p->dtype) {
        sa3_tensor_describe(o, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_TYPE, "out: dtype must be q's %s, got %s (%s)", sa3_dtype_str(p->dtype),
                 o->dtype_name ? o->dtype_name : "unknown", desc);
    }
    if (o->ndim != (p->layout == SA3_LAYOUT_NHD_FLAT ? 3 : 4)) {
        sa3_tensor_describe(o, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_VALUE, "out: layout %s needs a %d-d %s tensor, got %s", lname,
                 p->layout == SA3_LAYOUT_NHD_FLAT ? 3 : 4, sa3_layout_shape(p->layout), desc);
    }
    if (p->layout == SA3_LAYOUT_NHD_FLAT) {
        int ok;
        if (o->shape[2] != p->heads_q * p->head_dim_v) {
            sa3_tensor_describe(o, desc, sizeof desc);
            SA3_FAIL(SA3_ERR_VALUE, "out: shape must be (B, Sq, Hq*Dv) = (%lld, %lld, %lld) in layout NHD_FLAT, got %s",
                     (long long)p->batch, (long long)p->seq_q, (long long)(p->heads_q * p->head_dim_v), desc);
        }
        ok = sa3_canon_flat(o, p->heads_q, p->head_dim_v, &c);
        if (!ok) SA3_FAIL(SA3_ERR_OVERFLOW, "out: head stride overflows int64");
    } else {
        sa3_canon4(o, p->layout, &c);
    }
    if (c.n[0] != p->batch || c.n[1] != p->heads_q || c.n[2] != p->seq_q || c.n[3] != p->head_dim_v) {
        sa3_tensor_describe(o, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_VALUE,
                 "out: shape must match q's (with v's head dim) in layout %s: (B, H, S, Dv) = (%lld, %lld, %lld, "
                 "%lld); out is %s",
                 lname, (long long)p->batch, (long long)p->heads_q, (long long)p->seq_q, (long long)p->head_dim_v, desc);
    }
    if (o->readonly) {
        sa3_tensor_describe(o, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_VALUE, "out: is read-only, but the result is written into it: %s", desc);
    }
    if (o->device_kind != (p->device >= 0 ? SA3_DEVICE_CUDA : p->device == SA3_DEVICE_NONE_CPU ? SA3_DEVICE_CPU
                                                                                                : SA3_DEVICE_OTHER) ||
        (p->device >= 0 && o->device_id != p->device)) {
        char b[48];
        sa3_device_str(o, b, sizeof b);
        SA3_FAIL(SA3_ERR_VALUE, "out is on %s but q is not; all tensors must be on one device", b);
    }
    if (!sa3_compute_span(o->data, o->shape, o->strides, o->ndim, itemsize, &so)) {
        sa3_tensor_describe(o, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_OVERFLOW, "out: the memory its shape and strides span overflows int64 byte offsets: %s", desc);
    }
    overlap = sa3_self_overlap(o);
    if (overlap == 1) {
        sa3_tensor_describe(o, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_VALUE, "out: has stride 0 in a dimension of size > 1, so results would overwrite "
                                "each other (expanded/broadcast output?): %s",
                 desc);
    }
    ptr[0] = p->q, ptr[1] = p->k, ptr[2] = p->v;
    str[0] = p->q_stride, str[1] = p->k_stride, str[2] = p->v_stride;
    for (i = 0; i < 4; i++) {
        sizes[0][i] = i == 0 ? p->batch : i == 1 ? p->heads_q : i == 2 ? p->seq_q : p->head_dim;
        sizes[1][i] = i == 0 ? p->batch : i == 1 ? p->heads_kv : i == 2 ? p->seq_k : p->head_dim;
        sizes[2][i] = i == 0 ? p->batch : i == 1 ? p->heads_kv : i == 2 ? p->seq_k : p->head_dim_v;
    }
    for (i = 0; i < 3; i++) {
        /* q/k/v spans were checked by sa3_check_problem; recomputed from the canonical form */
        if (sa3_compute_span(ptr[i], sizes[i], str[i], 4, itemsize, &sx) && sa3_spans_overlap(&so, &sx)) {
            sa3_tensor_describe(o, desc, sizeof desc);
            SA3_FAIL(SA3_ERR_VALUE,
                     "out: its memory overlaps %s's (in-place attention is not supported; use a separate output "
                     "buffer); out is %s at %p, %s at %p",
                     names[i], desc, o->data, names[i], ptr[i]);
        }
    }
    if (overlap == 2) {
        sa3_tensor_describe(o, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_UNSUPPORTED, "out_strides: out's strides interleave in a way that cannot be checked for overlap: %s",
                 desc);
    }
    p->o = o->data;
    sa3_store(&c, p->o_stride);
    return SA3_OK;
}
