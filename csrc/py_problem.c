/* py_problem.c - the hot path: problem() validates a call once and returns a Problem that the
 * policy asks (select) and the launch reuses, so q/k/v are read once per call and the launch
 * only reads `out`.
 *
 *   p = _C.problem(q, k, v, layout, heads, is_causal, sm_scale, attn_mask)   TypeError/ValueError
 *   p.select(plan, min_scores[, lse]) -> (family, workspace_bytes) | (None, reason_key, details)
 *     lse: an optional (B, Hq, Sq) float32 CUDA tensor with unit s stride that the launch fills
 *     with each row's natural-log LSE; families that can't write it decline ("lse").
 *   p.launch(out, ws_ptr, ws_bytes, stream)                                    on the caller's stream
 *
 * plan is the policy's preference order for this device (sageattn3/_policy.py): a tuple of
 * (family_name, pv) pairs, optionally ending in "sdpa" ("stop here: SDPA is faster").
 * Positional arguments only (vectorcall): their host cost adds to every attention call.
 * No device memory allocation, no synchronization, no GIL release.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "sa3_check.h"
#include "sa3_intake.h"
#include "sa3_module.h"
#include "sa3_py.h"
#include "sa3_registry.h"

#define SA3_DETAIL_LEN 400

typedef struct sa3_problem_obj {
    PyObject_HEAD
    sa3_problem p;
    PyObject *owner[3]; /* q, k, v: keep the memory p points at alive */
    PyObject *lse_owner; /* the lse tensor p.lse points into, NULL when none was asked for */
    int family;         /* registry index chosen by select(), -1 before */
    sa3_options opt;
    size_t ws_bytes;
} sa3_problem_obj;

static sa3_module_state *sa3_obj_state(PyObject *self) {
    return (sa3_module_state *)PyType_GetModuleState(Py_TYPE(self));
}

static int sa3_parse_pv(sa3_module_state *st, PyObject *obj, sa3_pv_mode *out) {
    if (PyUnicode_Check(obj)) {
        if (PyUnicode_CompareWithASCIIString(obj, "fp16") == 0) {
            *out = SA3_PV_F16;
            return 0;
        }
        if (PyUnicode_CompareWithASCIIString(obj, "fp8") == 0) {
            *out = SA3_PV_FP8;
            return 0;
        }
        if (PyUnicode_CompareWithASCIIString(obj, "fp8_f16acc") == 0) {
            *out = SA3_PV_FP8_F16ACC;
            return 0;
        }
    }
    sa3_raise(st, SA3_ERR_VALUE, "pv must be 'fp16', 'fp8' or 'fp8_f16acc', got %R", obj);
    return -1;
}

/* The family named by a str, or -1 with ValueError set. */
static int sa3_family_arg(sa3_module_state *st, PyObject *name) {
    Py_ssize_t n;
    const char *s;
    int i;
    if (!PyUnicode_Check(name)) {
        sa3_raise(st, SA3_ERR_TYPE, "family must be a str, got %.100s", Py_TYPE(name)->tp_name);
        return -1;
    }
    s = PyUnicode_AsUTF8AndSize(name, &n);
    if (s == NULL) return -1;
    i = sa3_registry_find(s, (size_t)n);
    if (i < 0) sa3_raise(st, SA3_ERR_VALUE, "no kernel family %R in this build", name);
    return i;
}

/* ------------------------------------------------------------------------------------ */
/* problem(q, k, v, layout=None, heads=None, is_causal=False, sm_scale=None, attn_mask=None) */

PyObject *sa3_py_problem(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    sa3_module_state *st = sa3_state(module);
    sa3_tensor t[3], m;
    static const char *const names[3] = {"q", "k", "v"};
    sa3_layout layout;
    int64_t heads;
    int causal, i;
    sa3_problem_obj *self = NULL;
    PyObject *arg[8] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};

    if (nargs < 3 || nargs > 8 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        return sa3_raise(st, SA3_ERR_TYPE,
                         "problem() takes 3 to 8 positional arguments (q, k, v, layout, heads, is_causal, sm_scale, "
                         "attn_mask), got %zd",
                         nargs);
    }
    for (i = 0; i < nargs; i++) arg[i] = args[i];
    if (sa3_parse_layout(arg[3], &layout) < 0) return NULL;
    if (sa3_parse_heads(arg[4], &heads) < 0) return NULL;
    if (sa3_parse_causal(st, arg[5], &causal) < 0) return NULL;

    memset(t, 0, sizeof t);
    for (i = 0; i < 3; i++) {
        if (sa3_intake_torch_only(st, args[i], names[i], &t[i]) < 0) goto fail;
    }
    self = PyObject_New(sa3_problem_obj, (PyTypeObject *)st->problem_type);
    if (self == NULL) goto fail;
    self->owner[0] = self->owner[1] = self->owner[2] = NULL;
    self->lse_owner = NULL;
    self->family = -1;
    self->ws_bytes = 0;
    if (sa3_check_problem(st, &t[0], &t[1], &t[2], layout, heads, &self->p) != SA3_OK) goto fail;
    self->p.lse = NULL; /* select(..., lse) sets it */
    self->p.lse_stride_b = self->p.lse_stride_h = 0;
    self->p.is_causal = causal;
    if (sa3_parse_scale(st, arg[6], &self->p) < 0) goto fail;
    if (arg[7] != NULL && arg[7] != Py_None) {
        sa3_status s;
        if (sa3_intake_torch_only(st, arg[7], "attn_mask", &m) < 0) goto fail;
        s = sa3_check_mask(st, &m, &self->p);
        sa3_intake_release(&m);
        if (s != SA3_OK) goto fail;
    }
    for (i = 0; i < 3; i++) {
        self->owner[i] = t[i].owner; /* moves the reference */
        t[i].owner = NULL;
    }
    return (PyObject *)self;
fail:
    for (i = 0; i < 3; i++) sa3_intake_release(&t[i]);
    Py_XDECREF(self);
    return NULL;
}

static void sa3_problem_dealloc(PyObject *op) {
    sa3_problem_obj *self = (sa3_problem_obj *)op;
    PyTypeObject *tp = Py_TYPE(op);
    Py_XDECREF(self->owner[0]);
    Py_XDECREF(self->owner[1]);
    Py_XDECREF(self->owner[2]);
    Py_XDECREF(self->lse_owner);
    PyObject_Free(op);
    Py_DECREF(tp);
}

/* (None, key, details) */
static PyObject *sa3_refusal(const char *key, const char *detail) {
    return Py_BuildValue("(Oss)", Py_None, key, detail);
}

/* p.lse from `obj` (None: no LSE): a (B, Hq, Sq) float32 tensor on the problem's CUDA device
 * with unit s stride. Returns 0, or -1 with TypeError/ValueError naming "lse". */
static int sa3_problem_set_lse(sa3_module_state *st, sa3_problem_obj *self, PyObject *obj) {
    sa3_problem *p = &self->p;
    sa3_tensor t;
    Py_CLEAR(self->lse_owner);
    p->lse = NULL;
    p->lse_stride_b = p->lse_stride_h = 0;
    if (obj == NULL || obj == Py_None) return 0;
    if (sa3_intake_torch_only(st, obj, "lse", &t) < 0) return -1;
    if (t.dtype != SA3_DTYPE_F32) {
        sa3_raise(st, SA3_ERR_TYPE, "lse: needs torch.float32, got %s", t.dtype_name);
        goto fail;
    }
    if (t.ndim != 3 || t.shape[0] != p->batch || t.shape[1] != p->heads_q || t.shape[2] != p->seq_q) {
        sa3_raise(st, SA3_ERR_VALUE, "lse: needs shape (B, Hq, Sq) = (%lld, %lld, %lld), got a %d-D tensor",
                  (long long)p->batch, (long long)p->heads_q, (long long)p->seq_q, t.ndim);
        goto fail;
    }
    if (t.device_kind != SA3_DEVICE_CUDA || t.device_id != p->device) {
        sa3_raise(st, SA3_ERR_VALUE, "lse: must be on the tensors' CUDA device cuda:%d", p->device);
        goto fail;
    }
    if (t.strides[2] != 1 && p->seq_q > 1) {
        sa3_raise(st, SA3_ERR_VALUE, "lse: needs a unit stride along Sq, got %lld", (long long)t.strides[2]);
        goto fail;
    }
    p->lse = (float *)t.data;
    p->lse_stride_b = p->batch > 1 ? t.strides[0] : 0;
    p->lse_stride_h = p->heads_q > 1 ? t.strides[1] : 0;
    self->lse_owner = t.owner; /* the reference moves to the problem */
    t.owner = NULL;
    return 0;
fail:
    sa3_intake_release(&t);
    return -1;
}

/* select(plan, min_scores[, lse]) */
static PyObject *sa3_problem_select(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
    sa3_problem_obj *self = (sa3_problem_obj *)op;
    sa3_module_state *st = sa3_obj_state(op);
    const sa3_problem *p = &self->p;
    const sa3_device_facts *facts;
    const sa3_device_slot *slot;
    char detail[SA3_DETAIL_LEN] = {0}, first_detail[SA3_DETAIL_LEN] = {0};
    const char *why, *first = NULL;
    PyObject *plan;
    Py_ssize_t n, i;
    long long min_scores;

    if ((nargs != 2 && nargs != 3) || !PyTuple_Check(args[0]))
        return sa3_raise(st, SA3_ERR_TYPE,
                         "select(plan: tuple, min_scores: int[, lse]) takes 2 or 3 positional arguments");
    if (sa3_problem_set_lse(st, self, nargs == 3 ? args[2] : NULL) < 0) return NULL;
    plan = args[0];
    min_scores = PyLong_AsLongLong(args[1]);
    if (min_scores == -1 && PyErr_Occurred()) return NULL;
    self->family = -1;

    why = sa3_problem_common_supports(p, detail, sizeof detail);
    if (why != NULL) return sa3_refusal(why, detail);
    facts = sa3_device(st, p->device, 0, &slot);
    if (facts == NULL) return sa3_refusal("device_query", slot != NULL ? slot->error : "bad device index");

    n = PyTuple_GET_SIZE(plan);
    if (n == 0 || (PyUnicode_Check(PyTuple_GET_ITEM(plan, 0)) &&
                   PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(plan, 0), "sdpa") == 0)) {
        snprintf(detail, sizeof detail, "on sm_%d the policy prefers SDPA to every kernel compiled here",
                 facts->sm_arch);
        return sa3_refusal("sdpa_faster", detail);
    }
    if (min_scores > 0 && (double)p->seq_q * (double)p->seq_k < (double)min_scores) {
        snprintf(detail, sizeof detail, "Sq*Sk = %lld*%lld < %lld: SDPA is faster on short sequences",
                 (long long)p->seq_q, (long long)p->seq_k, min_scores);
        return sa3_refusal("short_seq", detail);
    }
    for (i = 0; i < n; i++) {
        PyObject *e = PyTuple_GET_ITEM(plan, i), *name;
        const sa3_family *fam;
        sa3_options opt;
        int idx;
        if (PyUnicode_Check(e)) {
            if (PyUnicode_CompareWithASCIIString(e, "sdpa") == 0) break;
            return sa3_raise(st, SA3_ERR_VALUE, "select: plan entry %R is neither 'sdpa' nor (family, pv)", e);
        }
        if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 2)
            return sa3_raise(st, SA3_ERR_VALUE, "select: plan entry %R is neither 'sdpa' nor (family, pv)", e);
        name = PyTuple_GET_ITEM(e, 0);
        if (sa3_parse_pv(st, PyTuple_GET_ITEM(e, 1), &opt.pv_mode) < 0) return NULL;
        opt.smooth_k = 1;
        {
            Py_ssize_t len;
            const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8AndSize(name, &len) : NULL;
            if (s == NULL) {
                if (!PyErr_Occurred()) sa3_raise(st, SA3_ERR_TYPE, "select: family names are str");
                return NULL;
            }
            idx = sa3_registry_find(s, (size_t)len);
            if (idx < 0) {
                why = "arch";
                snprintf(detail, sizeof detail, "kernel family '%s' is not compiled into this build", s);
            }
        }
        if (idx >= 0) {
            fam = sa3_registry_at(idx);
            if (!sa3_family_runs_on(fam, facts->hw_arch)) {
                why = "arch";
                snprintf(detail, sizeof detail, "kernel family '%s' was compiled for %s, this GPU is sm_%d", fam->name,
                         fam->archs, facts->hw_arch);
            } else {
                why = fam->supports(p, &opt, facts, detail, sizeof detail);
            }
            if (why == NULL) {
                self->family = idx;
                self->opt = opt;
                self->ws_bytes = fam->workspace_bytes(p, &opt);
                return Py_BuildValue("(On)", name, (Py_ssize_t)self->ws_bytes);
            }
        }
        if (first == NULL) {
            first = why;
            memcpy(first_detail, detail, sizeof detail);
        }
    }
    if (first != NULL) return sa3_refusal(first, first_detail);
    snprintf(detail, sizeof detail, "on sm_%d the policy prefers SDPA to the kernels that were asked first",
             facts->sm_arch);
    return sa3_refusal("sdpa_faster", detail);
}

/* launch(out, ws_ptr, ws_bytes, stream) */
static PyObject *sa3_problem_launch(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
    sa3_problem_obj *self = (sa3_problem_obj *)op;
    sa3_module_state *st = sa3_obj_state(op);
    sa3_tensor o;
    sa3_launch_ctx ctx;
    const sa3_family *fam;
    const sa3_device_facts *facts;
    char err[SA3_DETAIL_LEN] = {0};
    const char *why;
    unsigned long long ws_ptr, ws_bytes;
    long long stream;
    sa3_status s;
    PyObject *result = NULL;

    if (nargs != 4)
        return sa3_raise(st, SA3_ERR_TYPE, "launch(out, ws_ptr, ws_bytes, stream) takes 4 positional arguments");
    if (self->family < 0)
        return sa3_raise(st, SA3_ERR_VALUE, "launch(): no kernel family was selected for this problem");
    fam = sa3_registry_at(self->family);
    ws_ptr = PyLong_AsUnsignedLongLong(args[1]);
    if (ws_ptr == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    ws_bytes = PyLong_AsUnsignedLongLong(args[2]);
    if (ws_bytes == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    stream = PyLong_AsLongLong(args[3]);
    if (stream == -1 && PyErr_Occurred()) return NULL;
    if (ws_bytes < self->ws_bytes || (self->ws_bytes > 0 && (ws_ptr == 0 || ws_ptr % 256u != 0)))
        return sa3_raise(st, SA3_ERR_VALUE,
                         "workspace: need %zu bytes at a 256-byte aligned address, got %llu bytes at 0x%llx",
                         self->ws_bytes, ws_bytes, ws_ptr);

    if (sa3_intake_torch_only(st, args[0], "out", &o) < 0) return NULL;
    if (sa3_check_out(st, &o, &self->p) != SA3_OK) goto done;
    why = sa3_problem_common_supports(&self->p, err, sizeof err);
    if (why != NULL) {
        sa3_raise(st, SA3_ERR_UNSUPPORTED, "%s: %s", why, err);
        goto done;
    }
    facts = sa3_device(st, self->p.device, 1, NULL);
    if (facts == NULL) goto done;
    ctx.stream = (void *)(intptr_t)stream;
    ctx.workspace = (void *)(uintptr_t)ws_ptr;
    ctx.workspace_bytes = (size_t)ws_bytes;
    ctx.device = *facts;
    s = fam->launch(&self->p, &self->opt, &ctx, err, sizeof err);
    if (s != SA3_OK) {
        const sa3_problem *p = &self->p;
        sa3_raise(st, s,
                  "launch_failed: family %s, q=(B=%lld, Hq=%lld, Sq=%lld, D=%lld), k/v=(Hkv=%lld, Sk=%lld), %s, "
                  "cuda:%d, sm_%d: %s",
                  fam->name, (long long)p->batch, (long long)p->heads_q, (long long)p->seq_q, (long long)p->head_dim,
                  (long long)p->heads_kv, (long long)p->seq_k, sa3_dtype_str(p->dtype), p->device, facts->sm_arch,
                  err);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    self->p.o = NULL; /* the problem never keeps a pointer it does not own */
    sa3_intake_release(&o);
    return result;
}

/* The device facts to ask a family with: the problem's device, or given ones (a what-if for
 * tests and info(): "would this family serve this call on such a GPU?"). */
static int sa3_facts_arg(sa3_module_state *st, PyObject *obj, const sa3_problem *p, sa3_device_facts *out) {
    if (obj == NULL || obj == Py_None) {
        const sa3_device_facts *f = sa3_device(st, p->device, 1, NULL);
        if (f == NULL) return -1;
        *out = *f;
        return 0;
    }
    out->smem_per_sm = -1;
    out->hw_arch = -1;
    if (!PyArg_ParseTuple(obj, "iii|ii;facts must be (sm_arch, sm_count, smem_optin[, smem_per_sm[, hw_arch]])",
                          &out->sm_arch, &out->sm_count, &out->smem_optin, &out->smem_per_sm, &out->hw_arch))
        return -1;
    if (out->smem_per_sm < 0) out->smem_per_sm = out->smem_optin + 1024; /* one block's reserve */
    if (out->hw_arch < 0) out->hw_arch = out->sm_arch;
    out->smem_carveout = -1;
    return 0;
}

/* supports(family, pv="fp16", facts=None, lse=False) -> (None | key, details). With facts
 * given, the problem's tensors are taken to be on such a CUDA device: (sm_arch, sm_count,
 * smem_optin[, smem_per_sm[, hw_arch]]), hw_arch defaulting to sm_arch (a GPU of another class
 * as an H100/H200 under consumer limits sees it: (120, 132, 101376, 102400, 90)); with lse
 * true, the call is taken to ask for an LSE output too (supports() only tests the pointer
 * against NULL, so a placeholder stands in for the tensor). */
static PyObject *sa3_problem_supports(PyObject *op, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"family", "pv", "facts", "lse", NULL};
    static float lse_placeholder; /* never read or written */
    sa3_problem_obj *self = (sa3_problem_obj *)op;
    sa3_module_state *st = sa3_obj_state(op);
    PyObject *name, *pv_obj = NULL, *facts_obj = Py_None;
    int want_lse = 0;
    sa3_options opt;
    sa3_device_facts facts;
    sa3_problem p = self->p;
    char detail[SA3_DETAIL_LEN] = {0};
    const char *why;
    const sa3_family *fam;
    int idx;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOp:supports", kwlist, &name, &pv_obj, &facts_obj, &want_lse))
        return NULL;
    if (want_lse && p.lse == NULL) {
        p.lse = &lse_placeholder;
        p.lse_stride_b = p.lse_stride_h = 0;
    }
    opt.pv_mode = SA3_PV_F16;
    opt.smooth_k = 1;
    if (pv_obj != NULL && sa3_parse_pv(st, pv_obj, &opt.pv_mode) < 0) return NULL;
    idx = sa3_family_arg(st, name);
    if (idx < 0) return NULL;
    fam = sa3_registry_at(idx);
    if (facts_obj != Py_None && p.device < 0) p.device = 0;
    why = sa3_problem_common_supports(&p, detail, sizeof detail);
    if (why == NULL) {
        if (sa3_facts_arg(st, facts_obj, &p, &facts) < 0) return NULL;
        if (!sa3_family_runs_on(fam, facts.hw_arch)) {
            why = "arch";
            snprintf(detail, sizeof detail, "kernel family '%s' was compiled for %s, this GPU is sm_%d", fam->name,
                     fam->archs, facts.hw_arch);
        } else {
            why = fam->supports(&p, &opt, &facts, detail, sizeof detail);
        }
    }
    if (why == NULL) return Py_BuildValue("(Os)", Py_None, "");
    return Py_BuildValue("(ss)", why, detail);
}

/* workspace_bytes(family, pv="fp16", facts=None) -> int; UnsupportedError if the family
 * does not serve the problem. */
static PyObject *sa3_problem_workspace_bytes(PyObject *op, PyObject *args, PyObject *kwargs) {
    PyObject *r = sa3_problem_supports(op, args, kwargs), *key;
    sa3_problem_obj *self = (sa3_problem_obj *)op;
    sa3_module_state *st = sa3_obj_state(op);
    sa3_options opt;
    PyObject *name, *pv_obj = NULL, *facts_obj = Py_None;
    int want_lse = 0;
    static char *kwlist[] = {"family", "pv", "facts", "lse", NULL};
    if (r == NULL) return NULL;
    key = PyTuple_GET_ITEM(r, 0);
    if (key != Py_None) {
        sa3_raise(st, SA3_ERR_UNSUPPORTED, "%U: %U", key, PyTuple_GET_ITEM(r, 1));
        Py_DECREF(r);
        return NULL;
    }
    Py_DECREF(r);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOp:workspace_bytes", kwlist, &name, &pv_obj, &facts_obj,
                                     &want_lse))
        return NULL;
    opt.pv_mode = SA3_PV_F16;
    opt.smooth_k = 1;
    if (pv_obj != NULL && sa3_parse_pv(st, pv_obj, &opt.pv_mode) < 0) return NULL;
    return PyLong_FromSize_t(sa3_registry_at(sa3_family_arg(st, name))->workspace_bytes(&self->p, &opt));
}

/* config(family, pv="fp16", facts=None) -> str | None: the family's one line on the kernel
 * configuration that would serve the call on that device (None: the family has no describe());
 * UnsupportedError if it would not serve it. Not on the hot path. */
static PyObject *sa3_problem_config(PyObject *op, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"family", "pv", "facts", NULL};
    sa3_problem_obj *self = (sa3_problem_obj *)op;
    sa3_module_state *st = sa3_obj_state(op);
    PyObject *r = sa3_problem_supports(op, args, kwargs), *name, *pv_obj = NULL, *facts_obj = Py_None;
    sa3_options opt;
    sa3_device_facts facts;
    sa3_problem p = self->p;
    const sa3_family *fam;
    char out[SA3_DETAIL_LEN] = {0};
    if (r == NULL) return NULL;
    if (PyTuple_GET_ITEM(r, 0) != Py_None) {
        sa3_raise(st, SA3_ERR_UNSUPPORTED, "%U: %U", PyTuple_GET_ITEM(r, 0), PyTuple_GET_ITEM(r, 1));
        Py_DECREF(r);
        return NULL;
    }
    Py_DECREF(r);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO:config", kwlist, &name, &pv_obj, &facts_obj)) return NULL;
    opt.pv_mode = SA3_PV_F16;
    opt.smooth_k = 1;
    if (pv_obj != NULL && sa3_parse_pv(st, pv_obj, &opt.pv_mode) < 0) return NULL;
    fam = sa3_registry_at(sa3_family_arg(st, name));
    if (fam->describe == NULL) Py_RETURN_NONE;
    if (facts_obj != Py_None && p.device < 0) p.device = 0;
    if (sa3_facts_arg(st, facts_obj, &p, &facts) < 0) return NULL;
    fam->describe(&p, &opt, &facts, out, sizeof out);
    return PyUnicode_FromString(out);
}

/* ------------------------------------------------------------------------------------ */
/* attributes */

#define SA3_GET_I64(field)                                                      \
    static PyObject *sa3_get_##field(PyObject *op, void *closure) {             \
        (void)closure;                                                          \
        return PyLong_FromLongLong((long long)((sa3_problem_obj *)op)->p.field); \
    }
SA3_GET_I64(batch)
SA3_GET_I64(heads_q)
SA3_GET_I64(heads_kv)
SA3_GET_I64(seq_q)
SA3_GET_I64(seq_k)
SA3_GET_I64(head_dim)
SA3_GET_I64(head_dim_v)
SA3_GET_I64(device)

static PyObject *sa3_get_sm_arch(PyObject *op, void *closure) {
    sa3_problem_obj *self = (sa3_problem_obj *)op;
    const sa3_device_facts *f;
    (void)closure;
    if (self->p.device < 0) return PyLong_FromLong(-1);
    f = sa3_device(sa3_obj_state(op), self->p.device, 0, NULL);
    return PyLong_FromLong(f != NULL ? f->sm_arch : -1);
}

static PyObject *sa3_get_dtype(PyObject *op, void *closure) {
    (void)closure;
    return PyUnicode_FromString(sa3_dtype_str(((sa3_problem_obj *)op)->p.dtype));
}

static PyObject *sa3_get_layout(PyObject *op, void *closure) {
    (void)closure;
    return PyUnicode_FromString(sa3_layout_name(((sa3_problem_obj *)op)->p.layout));
}

static PyObject *sa3_get_is_causal(PyObject *op, void *closure) {
    (void)closure;
    return PyBool_FromLong(((sa3_problem_obj *)op)->p.is_causal);
}

static PyObject *sa3_get_scale(PyObject *op, void *closure) {
    (void)closure;
    return PyFloat_FromDouble((double)((sa3_problem_obj *)op)->p.scale);
}

static PyObject *sa3_get_strides(PyObject *op, void *closure) {
    const sa3_problem *p = &((sa3_problem_obj *)op)->p;
    (void)closure;
    return Py_BuildValue("((LLLL)(LLLL)(LLLL))", (long long)p->q_stride[0], (long long)p->q_stride[1],
                         (long long)p->q_stride[2], (long long)p->q_stride[3], (long long)p->k_stride[0],
                         (long long)p->k_stride[1], (long long)p->k_stride[2], (long long)p->k_stride[3],
                         (long long)p->v_stride[0], (long long)p->v_stride[1], (long long)p->v_stride[2],
                         (long long)p->v_stride[3]);
}

static PyObject *sa3_get_out_shape(PyObject *op, void *closure) {
    const sa3_problem *p = &((sa3_problem_obj *)op)->p;
    (void)closure;
    switch (p->layout) {
    case SA3_LAYOUT_NHD:
        return Py_BuildValue("(LLLL)", (long long)p->batch, (long long)p->seq_q, (long long)p->heads_q,
                             (long long)p->head_dim_v);
    case SA3_LAYOUT_NHD_FLAT:
        return Py_BuildValue("(LLL)", (long long)p->batch, (long long)p->seq_q,
                             (long long)(p->heads_q * p->head_dim_v));
    default:
        return Py_BuildValue("(LLLL)", (long long)p->batch, (long long)p->heads_q, (long long)p->seq_q,
                             (long long)p->head_dim_v);
    }
}

static PyGetSetDef sa3_problem_getset[] = {
    {"batch", sa3_get_batch, NULL, "B", NULL},
    {"heads_q", sa3_get_heads_q, NULL, "Hq", NULL},
    {"heads_kv", sa3_get_heads_kv, NULL, "Hkv", NULL},
    {"seq_q", sa3_get_seq_q, NULL, "Sq", NULL},
    {"seq_k", sa3_get_seq_k, NULL, "Sk", NULL},
    {"head_dim", sa3_get_head_dim, NULL, "D of q and k", NULL},
    {"head_dim_v", sa3_get_head_dim_v, NULL, "Dv of v and out", NULL},
    {"device", sa3_get_device, NULL, "CUDA ordinal; -1 CPU, -2 another device", NULL},
    {"sm_arch", sa3_get_sm_arch, NULL, "10*major+minor of the device; -1 when not a usable CUDA device", NULL},
    {"dtype", sa3_get_dtype, NULL, "'float16', 'bfloat16', 'float32' or 'float64'", NULL},
    {"layout", sa3_get_layout, NULL, "'HND', 'NHD' or 'NHD_FLAT'", NULL},
    {"is_causal", sa3_get_is_causal, NULL, "top-left causal mask", NULL},
    {"scale", sa3_get_scale, NULL, "softmax scale (float32)", NULL},
    {"strides", sa3_get_strides, NULL, "canonical (b, h, s, d) strides of q, k, v", NULL},
    {"out_shape", sa3_get_out_shape, NULL, "the output's shape in the caller's layout", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef sa3_problem_methods[] = {
    {"select", (PyCFunction)(void (*)(void))sa3_problem_select, METH_FASTCALL,
     "select(plan, min_scores[, lse]) -> (family, workspace_bytes) | (None, reason_key, details); lse: an "
     "optional (B, Hq, Sq) float32 CUDA tensor the launch fills with the natural-log LSE of each row"},
    {"launch", (PyCFunction)(void (*)(void))sa3_problem_launch, METH_FASTCALL,
     "launch(out, ws_ptr, ws_bytes, stream): run the selected family on `stream` (no sync, no allocation)"},
    {"supports", (PyCFunction)(void (*)(void))sa3_problem_supports, METH_VARARGS | METH_KEYWORDS,
     "supports(family, pv='fp16', facts=None, lse=False) -> (None | reason_key, details)"},
    {"workspace_bytes", (PyCFunction)(void (*)(void))sa3_problem_workspace_bytes, METH_VARARGS | METH_KEYWORDS,
     "workspace_bytes(family, pv='fp16', facts=None, lse=False) -> int"},
    {"config", (PyCFunction)(void (*)(void))sa3_problem_config, METH_VARARGS | METH_KEYWORDS,
     "config(family, pv='fp16', facts=None) -> str | None: which kernel configuration would serve the call"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot sa3_problem_slots[] = {
    {Py_tp_dealloc, (void *)(uintptr_t)sa3_problem_dealloc}, /* via an integer: ISO C (see module.c) */
    {Py_tp_methods, (void *)sa3_problem_methods},
    {Py_tp_getset, (void *)sa3_problem_getset},
    {Py_tp_doc, (void *)"A validated attention call (sageattn3._C.problem): ask select(), then launch()."},
    {0, NULL},
};

static PyType_Spec sa3_problem_spec = {
    "sageattn3._C.Problem",
    sizeof(sa3_problem_obj),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    sa3_problem_slots,
};

int sa3_problem_type_init(PyObject *module) {
    sa3_module_state *st = sa3_state(module);
    st->problem_type = PyType_FromModuleAndSpec(module, &sa3_problem_spec, NULL);
    if (st->problem_type == NULL) return -1;
    return PyModule_AddObjectRef(module, "Problem", st->problem_type);
}
