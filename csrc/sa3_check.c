/* sa3_check.c - host-side validation of one attention call (see sa3_check.h).
 *
 * Order matters: TypeErrors, then ValueErrors (the call is wrong whatever runs it), then
 * UnsupportedErrors (the call is fine, our kernels can't take it, SDPA will). Nothing here
 * touches tensor memory; only pointers, shapes and strides are read.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sa3_check.h"
#include "sa3_intake.h"

#define SA3_MIN_HEAD_DIM 32
#define SA3_MAX_HEAD_DIM 256
#define SA3_VEC_BYTES 16 /* kernels load 16-byte vectors: base and strides must allow it */

/* Raise and return the status from the enclosing function (which has `st` in scope). */
#define SA3_FAIL(status, ...)                  \
    do {                                       \
        sa3_raise(st, (status), __VA_ARGS__); \
        return (status);                       \
    } while (0)

/* Unsupported: "<reason>; <shapes of every tensor>". The shapes are formatted only here, on
 * the failure path, to keep the success path free of string work. */
#define SA3_UNSUPPORTED(...)                                  \
    do {                                                      \
        sa3_all_shapes(ts, names, nt, all, sizeof all);       \
        SA3_FAIL(SA3_ERR_UNSUPPORTED, __VA_ARGS__);           \
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

/* One tensor in canonical (b, h, s, d) order. */
typedef struct sa3_canon {
    int64_t n[4]; /* sizes   b, h, s, d */
    int64_t s[4]; /* strides b, h, s, d (elements) */
} sa3_canon;

/* Memory a tensor spans, in bytes relative to its data pointer: [lo, hi). */
typedef struct sa3_span {
    int empty;
    int64_t lo, hi;
    uintptr_t base;
} sa3_span;

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

/* Byte span of t, with every step checked for int64 overflow and for the address range
 * wrapping around. Returns 1, or 0 on overflow. */
static int sa3_compute_span(const sa3_tensor *t, int itemsize, sa3_span *sp) {
    int64_t neg = 0, pos = 0, term, bytes_neg, bytes_pos, total;
    int i;
    sp->empty = 0;
    sp->base = (uintptr_t)t->data;
    for (i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0) {
            sp->empty = 1;
            sp->lo = sp->hi = 0;
            return 1;
        }
    }
    for (i = 0; i < t->ndim; i++) {
        if (!sa3_mul_abs(t->shape[i] - 1, t->strides[i], &term)) return 0;
        if (t->strides[i] < 0) {
            if (!sa3_add(neg, term, &neg)) return 0;
        } else {
            if (!sa3_add(pos, term, &pos)) return 0;
        }
    }
    /* The brief's "max byte offset" is the sum of |extent| over dims times the item size. */
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

/* "q (1, 8, 128, 40) strides (...) float16 cuda:0, k ..., v ..., out ..." for Unsupported
 * messages (the Python layer logs them once per reason). */
static void sa3_all_shapes(const sa3_tensor *const *ts, const char *const *names, int nt, char *buf, size_t len) {
    size_t pos = 0;
    int i;
    buf[0] = '\0';
    for (i = 0; i < nt && pos < len; i++) {
        char shape[128], strides[192], dev[48];
        int w;
        sa3_format_tuple(ts[i]->shape, ts[i]->ndim, shape, sizeof shape);
        sa3_format_tuple(ts[i]->strides, ts[i]->ndim, strides, sizeof strides);
        sa3_device_str(ts[i], dev, sizeof dev);
        w = snprintf(buf + pos, len - pos, "%s%s %s strides %s %s %s", i ? ", " : "", names[i], shape, strides,
                     sa3_dtype_str(ts[i]->dtype), dev);
        if (w < 0) break;
        pos += (size_t)w;
    }
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

/* Canonical view of a (B, S, H*D) tensor with head dim d (> 0, divides the last dim) and a
 * unit last stride (checked before). */
static void sa3_canon_flat(const sa3_tensor *t, int64_t d, sa3_canon *c) {
    c->n[0] = t->shape[0];
    c->s[0] = t->strides[0];
    c->n[1] = t->shape[2] / d;
    c->s[1] = d; /* heads are consecutive D-element chunks of the contiguous last dim */
    c->n[2] = t->shape[1];
    c->s[2] = t->strides[1];
    c->n[3] = d;
    c->s[3] = 1;
}

sa3_status sa3_check_attention(sa3_module_state *st, const sa3_tensor *q, const sa3_tensor *k, const sa3_tensor *v,
                               const sa3_tensor *o, sa3_layout layout, int64_t heads, int allow_cpu,
                               sa3_attn_params *p) {
    const sa3_tensor *ts[4];
    static const char *const names[4] = {"q", "k", "v", "out"};
    sa3_canon c[4];
    sa3_span span[4];
    char desc[SA3_DESC_LEN], all[4 * SA3_DESC_LEN];
    const char *lname = sa3_layout_name(layout);
    int nt = o != NULL ? 4 : 3, i, need_ndim, itemsize, o_overlap = 0;
    int64_t d_qk = 0;

    if (q == NULL || k == NULL || v == NULL || p == NULL)
        SA3_FAIL(SA3_ERR_VALUE, "sa3_check_attention: q, k, v and params are required");
    if (layout != SA3_LAYOUT_HND && layout != SA3_LAYOUT_NHD && layout != SA3_LAYOUT_NHD_FLAT)
        SA3_FAIL(SA3_ERR_VALUE, "unknown layout code %d", (int)layout);
    ts[0] = q;
    ts[1] = k;
    ts[2] = v;
    ts[3] = o;

    /* ---- TypeError: dtypes ---- */
    for (i = 0; i < nt; i++) {
        if (ts[i]->dtype != SA3_DTYPE_F16 && ts[i]->dtype != SA3_DTYPE_BF16) {
            sa3_tensor_describe(ts[i], desc, sizeof desc);
            SA3_FAIL(SA3_ERR_TYPE, "%s: dtype must be float16 or bfloat16, got %s (%s)", names[i],
                     ts[i]->dtype_name ? ts[i]->dtype_name : "unknown", desc);
        }
    }
    for (i = 1; i < nt; i++) {
        if (ts[i]->dtype != q->dtype)
            SA3_FAIL(SA3_ERR_TYPE, "%s: dtype %s differs from q's %s; q, k, v and out must share one dtype", names[i],
                     sa3_dtype_str(ts[i]->dtype), sa3_dtype_str(q->dtype));
    }
    itemsize = sa3_dtype_size(q->dtype);

    /* ---- ValueError: ranks and the unit head-dim stride ---- */
    need_ndim = layout == SA3_LAYOUT_NHD_FLAT ? 3 : 4;
    for (i = 0; i < nt; i++) {
        if (ts[i]->ndim != need_ndim) {
            sa3_tensor_describe(ts[i], desc, sizeof desc);
            SA3_FAIL(SA3_ERR_VALUE, "%s: layout %s needs a %d-d %s tensor, got %s", names[i], lname, need_ndim,
                     layout == SA3_LAYOUT_HND   ? "(B, H, S, D)"
                     : layout == SA3_LAYOUT_NHD ? "(B, S, H, D)"
                                                : "(B, S, H*D)",
                     desc);
        }
    }
    for (i = 0; i < nt; i++) {
        int last = ts[i]->ndim - 1;
        /* A size-1 last dim never uses its stride; D >= 32 is enforced below anyway. */
        if (ts[i]->shape[last] > 1 && ts[i]->strides[last] != 1) {
            sa3_tensor_describe(ts[i], desc, sizeof desc);
            /* Unsupported, not invalid: SDPA takes such views, so the caller falls back. */
            SA3_FAIL(SA3_ERR_UNSUPPORTED,
                     "last dimension not unit-stride; %s: negative or non-unit strides there are not supported "
                     "by the kernels, got %s",
                     names[i], desc);
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
        for (i = 0; i < nt; i++) {
            int64_t last = ts[i]->shape[2];
            if (d_qk == 0 ? last != 0 : last % d_qk != 0) {
                sa3_tensor_describe(ts[i], desc, sizeof desc);
                SA3_FAIL(SA3_ERR_VALUE,
                         "%s: last dim %lld is not a multiple of the head dim %lld (q's last dim %lld / heads %lld): %s",
                         names[i], (long long)last, (long long)d_qk, (long long)q->shape[2], (long long)heads, desc);
            }
            if (d_qk == 0) {
                /* Empty head dim: every tensor has H*0 = 0 columns; keep heads as given. */
                c[i].n[0] = ts[i]->shape[0];
                c[i].s[0] = ts[i]->strides[0];
                c[i].n[1] = heads;
                c[i].s[1] = 0;
                c[i].n[2] = ts[i]->shape[1];
                c[i].s[2] = ts[i]->strides[1];
                c[i].n[3] = 0;
                c[i].s[3] = 1;
            } else {
                sa3_canon_flat(ts[i], d_qk, &c[i]);
            }
        }
    } else {
        for (i = 0; i < nt; i++) sa3_canon4(ts[i], layout, &c[i]);
        d_qk = c[0].n[3];
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
            SA3_FAIL(SA3_ERR_VALUE, "%s: batch %lld differs from q's batch %lld: %s", names[i], (long long)c[i].n[0],
                     (long long)c[0].n[0], desc);
        }
    }
    if (c[1].n[3] != d_qk) {
        sa3_tensor_describe(k, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_VALUE, "k: head dim %lld differs from q's head dim %lld: %s", (long long)c[1].n[3],
                 (long long)d_qk, desc);
    }
    if (c[2].n[1] != c[1].n[1] || c[2].n[2] != c[1].n[2]) {
        char kd[SA3_DESC_LEN];
        sa3_tensor_describe(k, kd, sizeof kd);
        sa3_tensor_describe(v, desc, sizeof desc);
        SA3_FAIL(SA3_ERR_VALUE, "v: heads/sequence length (%lld, %lld) differ from k's (%lld, %lld); v is %s, k is %s",
                 (long long)c[2].n[1], (long long)c[2].n[2], (long long)c[1].n[1], (long long)c[1].n[2], desc, kd);
    }
    if (c[1].n[1] > 0 && c[0].n[1] % c[1].n[1] != 0) {
        SA3_FAIL(SA3_ERR_VALUE,
                 "q has %lld heads, not a multiple of k/v's %lld heads (grouped-query attention needs Hq %% Hkv == 0)",
                 (long long)c[0].n[1], (long long)c[1].n[1]);
    }
    if (o != NULL) {
        /* Output: q's (B, H, S) with v's head dim. */
        if (c[3].n[0] != c[0].n[0] || c[3].n[1] != c[0].n[1] || c[3].n[2] != c[0].n[2] || c[3].n[3] != c[2].n[3]) {
            char qd[SA3_DESC_LEN];
            sa3_tensor_describe(q, qd, sizeof qd);
            sa3_tensor_describe(o, desc, sizeof desc);
            SA3_FAIL(SA3_ERR_VALUE, "out: shape must match q's (with v's head dim) in layout %s; out is %s, q is %s",
                     lname, desc, qd);
        }
        if (o->readonly) {
            sa3_tensor_describe(o, desc, sizeof desc);
            SA3_FAIL(SA3_ERR_VALUE, "out: is read-only, but the result is written into it: %s", desc);
        }
    }

    /* ---- ValueError: devices ---- */
    for (i = 1; i < nt; i++) {
        if (ts[i]->device_kind != q->device_kind ||
            (q->device_kind != SA3_DEVICE_CPU && ts[i]->device_id != q->device_id)) {
            char a[48], b[48];
            sa3_device_str(q, a, sizeof a);
            sa3_device_str(ts[i], b, sizeof b);
            SA3_FAIL(SA3_ERR_VALUE, "%s is on %s but q is on %s; all tensors must be on one device", names[i], b, a);
        }
    }

    /* ---- ValueError (overflow): extents fit int64 and the address space ---- */
    for (i = 0; i < nt; i++) {
        if (!sa3_compute_span(ts[i], itemsize, &span[i])) {
            sa3_tensor_describe(ts[i], desc, sizeof desc);
            SA3_FAIL(SA3_ERR_OVERFLOW, "%s: the memory its shape and strides span overflows int64 byte offsets: %s",
                     names[i], desc);
        }
    }

    /* ---- ValueError: out must not alias anything ---- */
    if (o != NULL) {
        o_overlap = sa3_self_overlap(o);
        if (o_overlap == 1) {
            sa3_tensor_describe(o, desc, sizeof desc);
            SA3_FAIL(SA3_ERR_VALUE, "out: has stride 0 in a dimension of size > 1, so results would overwrite "
                                    "each other (expanded/broadcast output?): %s",
                     desc);
        }
        for (i = 0; i < 3; i++) {
            if (sa3_spans_overlap(&span[3], &span[i])) {
                char xd[SA3_DESC_LEN];
                sa3_tensor_describe(ts[i], xd, sizeof xd);
                sa3_tensor_describe(o, desc, sizeof desc);
                SA3_FAIL(SA3_ERR_VALUE,
                         "out: its memory overlaps %s's (in-place attention is not supported; use a separate output "
                         "buffer); out is %s at %p, %s is %s at %p",
                         names[i], desc, o->data, names[i], xd, ts[i]->data);
            }
        }
    }

    /* ---- UnsupportedError: valid, but not for our kernels ---- */
    if (q->device_kind == SA3_DEVICE_OTHER)
        SA3_UNSUPPORTED("tensors on a device other than CUDA; %s", all);
    if (q->device_kind == SA3_DEVICE_CPU && !allow_cpu)
        SA3_UNSUPPORTED("CPU tensors; %s", all);
    for (i = 0; i < nt; i++) {
        int j;
        for (j = 0; j < 4; j++) {
            if (c[i].n[j] == 0) SA3_UNSUPPORTED("zero-sized dimension; %s", all);
        }
    }
    if (c[2].n[3] != d_qk)
        SA3_UNSUPPORTED("v head dim differs from q/k head dim; q/k D=%lld, v D=%lld; %s",
                 (long long)d_qk, (long long)c[2].n[3], all);
    if (d_qk < SA3_MIN_HEAD_DIM || d_qk > SA3_MAX_HEAD_DIM || d_qk % 8 != 0)
        SA3_UNSUPPORTED("head dim not a multiple of 8 in 32..256; D=%lld; %s", (long long)d_qk, all);
    if (c[0].n[2] > INT32_MAX || c[1].n[2] > INT32_MAX)
        SA3_UNSUPPORTED("sequence longer than 2^31-1 tokens; %s", all);
    for (i = 0; i < nt; i++) {
        int j;
        for (j = 0; j < 3; j++) {
            if (c[i].n[j] > 1 && c[i].s[j] < 0)
                SA3_UNSUPPORTED("negative strides; %s has them; %s", names[i], all);
        }
    }
    if (o_overlap == 2)
        SA3_UNSUPPORTED("out strides interleave in a way that cannot be checked for overlap; %s", all);
    for (i = 0; i < nt; i++) {
        int j;
        if ((uintptr_t)ts[i]->data % SA3_VEC_BYTES != 0)
            SA3_UNSUPPORTED("data pointer not 16-byte aligned; %s at %p; %s", names[i], ts[i]->data,
                     all);
        for (j = 0; j < 3; j++) {
            if (c[i].n[j] > 1 && (c[i].s[j] * itemsize) % SA3_VEC_BYTES != 0)
                SA3_UNSUPPORTED("batch/head/sequence strides not multiples of 8 elements; %s; %s",
                         names[i], all);
        }
    }

    /* ---- All good: fill the fields we own ---- */
    p->q = q->data;
    p->k = k->data;
    p->v = v->data;
    p->o = o != NULL ? o->data : NULL;
    {
        int64_t *dst[4][3];
        dst[0][0] = &p->q_stride_b, dst[0][1] = &p->q_stride_h, dst[0][2] = &p->q_stride_s;
        dst[1][0] = &p->k_stride_b, dst[1][1] = &p->k_stride_h, dst[1][2] = &p->k_stride_s;
        dst[2][0] = &p->v_stride_b, dst[2][1] = &p->v_stride_h, dst[2][2] = &p->v_stride_s;
        dst[3][0] = &p->o_stride_b, dst[3][1] = &p->o_stride_h, dst[3][2] = &p->o_stride_s;
        for (i = 0; i < 4; i++) {
            int j;
            for (j = 0; j < 3; j++) *dst[i][j] = (i < nt && c[i].n[j] > 1) ? c[i].s[j] : 0;
        }
    }
    p->batch = c[0].n[0];
    p->heads_q = c[0].n[1];
    p->heads_kv = c[1].n[1];
    p->seq_q = c[0].n[2];
    p->seq_k = c[1].n[2];
    p->head_dim = d_qk;
    p->dtype = q->dtype;
    p->sm_scale = (float)(1.0 / sqrt((double)d_qk));
    p->device = q->device_kind == SA3_DEVICE_CUDA ? q->device_id : -1;
    return SA3_OK;
}
