/* py_device.c - device facts (cached per device in the module state), device_info() and
 * families(): what info() and the policy read about this machine. Not on the hot path
 * except sa3_device(), which is one array lookup after the first query. */
#include <stdio.h>
#include <string.h>

#include "sa3_device.h"
#include "sa3_limits.h"
#include "sa3_module.h"
#include "sa3_py.h"
#include "sa3_registry.h"

const sa3_device_facts *sa3_device(sa3_module_state *st, int device, int raise_error, const sa3_device_slot **slot_out) {
    sa3_device_slot *s;
    if (slot_out) *slot_out = NULL;
    if (device < 0 || device >= SA3_MAX_DEVICES) {
        if (raise_error)
            sa3_raise(st, SA3_ERR_VALUE, "CUDA device index %d out of range 0..%d", device, SA3_MAX_DEVICES - 1);
        return NULL;
    }
    s = &st->devices[device];
    if (s->state == 0) {
        char err[sizeof s->error] = {0};
        sa3_status rc = sa3_cuda_device_facts(device, &s->facts, NULL, 0, err, sizeof err);
        if (rc == SA3_OK) {
            s->state = 1;
            if (st->limits_profile > 0) sa3_limits_apply(st->limits_profile - 1, &s->facts);
        } else {
            s->state = -1;
            s->status = rc;
            memcpy(s->error, err, sizeof err);
        }
    }
    if (slot_out) *slot_out = s;
    if (s->state == 1) return &s->facts;
    if (raise_error) sa3_raise(st, s->status, "device %d: %s", device, s->error);
    return NULL;
}

/* (name, ...) of the compiled families whose binaries run on a GPU of arch hw_arch. */
static PyObject *sa3_families_for(int hw_arch) {
    int i, n = sa3_registry_count();
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    for (i = 0; i < n; i++) {
        const sa3_family *f = sa3_registry_at(i);
        if (!sa3_family_runs_on(f, hw_arch)) continue;
        PyObject *name = PyUnicode_FromString(f->name);
        if (name == NULL || PyList_Append(list, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(name);
    }
    return list;
}

static PyObject *sa3_limits_name(const sa3_module_state *st) {
    int n;
    const sa3_limits_profile *pr = sa3_limits_profiles(&n);
    if (st->limits_profile <= 0) Py_RETURN_NONE;
    return PyUnicode_FromString(pr[st->limits_profile - 1].name);
}

PyObject *sa3_py_device_info(PyObject *module, PyObject *args) {
    sa3_module_state *st = sa3_state(module);
    int device;
    char name[128] = {0}, err[256] = {0};
    sa3_device_facts raw;
    const sa3_device_facts *f;
    PyObject *fams, *limits, *d;
    if (!PyArg_ParseTuple(args, "i:device_info", &device)) return NULL;
    f = sa3_device(st, device, 1, NULL);
    if (f == NULL) return NULL;
    /* The name is not cached (fixed-size facts only); this call is not hot. */
    sa3_status s = sa3_cuda_device_facts(device, &raw, name, sizeof name, err, sizeof err);
    if (s != SA3_OK) return sa3_raise(st, s, "device %d: %s", device, err);
    fams = sa3_families_for(f->hw_arch);
    if (fams == NULL) return NULL;
    limits = sa3_limits_name(st);
    if (limits == NULL) {
        Py_DECREF(fams);
        return NULL;
    }
    /* sm_arch/smem_*: what families and the policy decide with (a GeForce class's under
     * consumer limits); hw_arch, hw_smem_*: the GPU's own */
    d = Py_BuildValue("{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:N,s:N}", "name", name, "sm_arch", f->sm_arch,
                      "sm_count", f->sm_count, "smem_optin", f->smem_optin, "smem_per_sm", f->smem_per_sm, "hw_arch",
                      f->hw_arch, "hw_smem_optin", raw.smem_optin, "hw_smem_per_sm", raw.smem_per_sm,
                      "smem_carveout", f->smem_carveout, "consumer_limits", limits, "families", fams);
    return d;
}

/* set_consumer_limits(profile) -> the previous profile (None = off). */
PyObject *sa3_py_set_consumer_limits(PyObject *module, PyObject *arg) {
    sa3_module_state *st = sa3_state(module);
    int idx = -1, i;
    PyObject *prev;
    if (arg != Py_None) {
        Py_ssize_t len;
        const char *s = PyUnicode_Check(arg) ? PyUnicode_AsUTF8AndSize(arg, &len) : NULL;
        if (s == NULL) {
            if (PyErr_Occurred()) return NULL;
            return sa3_raise(st, SA3_ERR_TYPE, "set_consumer_limits: profile must be a str or None, got %s",
                             Py_TYPE(arg)->tp_name);
        }
        idx = sa3_limits_find(s, (size_t)len);
        if (idx < 0) {
            int n;
            const sa3_limits_profile *pr = sa3_limits_profiles(&n);
            char names[128] = {0};
            size_t used = 0;
            for (i = 0; i < n && used < sizeof names; i++)
                used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "", pr[i].name);
            return sa3_raise(st, SA3_ERR_VALUE, "consumer limits: unknown profile %R (choices: %s, or None)", arg,
                             names);
        }
    }
    prev = sa3_limits_name(st);
    if (prev == NULL) return NULL;
    if (st->limits_profile != idx + 1) {
        st->limits_profile = idx + 1;
        for (i = 0; i < SA3_MAX_DEVICES; i++) st->devices[i].state = 0; /* re-queried with the new limits */
    }
    return prev;
}

/* consumer_limit_profiles() -> {name: {sm_arch, smem_optin, smem_per_sm, cards}} */
PyObject *sa3_py_consumer_limit_profiles(PyObject *module, PyObject *unused) {
    int n, i;
    const sa3_limits_profile *pr = sa3_limits_profiles(&n);
    PyObject *d = PyDict_New();
    (void)module;
    (void)unused;
    if (d == NULL) return NULL;
    for (i = 0; i < n; i++) {
        PyObject *e = Py_BuildValue("{s:i,s:i,s:i,s:s}", "sm_arch", pr[i].sm_arch, "smem_optin", pr[i].smem_optin,
                                    "smem_per_sm", pr[i].smem_per_sm, "cards", pr[i].cards);
        if (e == NULL || PyDict_SetItemString(d, pr[i].name, e) < 0) {
            Py_XDECREF(e);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(e);
    }
    return d;
}

PyObject *sa3_py_families(PyObject *module, PyObject *unused) {
    int i, n = sa3_registry_count();
    PyObject *t;
    (void)module;
    (void)unused;
    t = PyTuple_New(n);
    if (t == NULL) return NULL;
    for (i = 0; i < n; i++) {
        const sa3_family *f = sa3_registry_at(i);
        PyObject *d = Py_BuildValue("{s:s,s:s}", "name", f->name, "archs", f->archs);
        PyObject *archs = NULL, *split = NULL;
        if (d == NULL) goto fail;
        archs = PyUnicode_FromString(f->archs);
        split = archs ? PyUnicode_Split(archs, NULL, -1) : NULL;
        Py_XDECREF(archs);
        if (split == NULL) {
            Py_DECREF(d);
            goto fail;
        }
        {
            PyObject *tup = PyList_AsTuple(split);
            Py_DECREF(split);
            if (tup == NULL || PyDict_SetItemString(d, "archs", tup) < 0) {
                Py_XDECREF(tup);
                Py_DECREF(d);
                goto fail;
            }
            Py_DECREF(tup);
        }
        PyTuple_SET_ITEM(t, i, d);
    }
    return t;
fail:
    Py_DECREF(t);
    return NULL;
}

/* family_test(family, name, args, nout, stream) -> tuple of nout ints: a family's test-only
 * entry point (sa3_family.test), for GPU tests of a kernel's building blocks. args is a
 * sequence of ints (device pointers, sizes), passed on unchecked: tests only. */
PyObject *sa3_py_family_test(PyObject *module, PyObject *args) {
    sa3_module_state *st = sa3_state(module);
    const char *family, *name;
    PyObject *seq, *fast, *res = NULL;
    int nout, i, idx;
    long long stream;
    int64_t argv[32], outv[32] = {0};
    Py_ssize_t n;
    char err[400] = {0};
    sa3_status s;
    const sa3_family *f;
    if (!PyArg_ParseTuple(args, "ssOiL:family_test", &family, &name, &seq, &nout, &stream)) return NULL;
    idx = sa3_registry_find(family, strlen(family));
    if (idx < 0) return sa3_raise(st, SA3_ERR_VALUE, "family_test(): no family %s in this build", family);
    f = sa3_registry_at(idx);
    if (f->test == NULL) return sa3_raise(st, SA3_ERR_VALUE, "family_test(): family %s has no test hook", family);
    if (nout < 0 || nout > 32) return sa3_raise(st, SA3_ERR_VALUE, "family_test(): nout must be in 0..32, got %d", nout);
    fast = PySequence_Fast(seq, "family_test(): args must be a sequence of ints");
    if (fast == NULL) return NULL;
    n = PySequence_Fast_GET_SIZE(fast);
    if (n > 32) {
        Py_DECREF(fast);
        return sa3_raise(st, SA3_ERR_VALUE, "family_test(): at most 32 args, got %zd", n);
    }
    for (i = 0; i < n; i++) {
        argv[i] = (int64_t)PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, i));
        if (argv[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    s = f->test(name, argv, (int)n, outv, nout, (void *)(intptr_t)stream, err, sizeof err);
    if (s != SA3_OK) return sa3_raise(st, s, "family_test(%s, %s): %s", family, name, err);
    res = PyTuple_New(nout);
    if (res == NULL) return NULL;
    for (i = 0; i < nout; i++) {
        PyObject *v = PyLong_FromLongLong((long long)outv[i]);
        if (v == NULL) {
            Py_DECREF(res);
            return NULL;
        }
        PyTuple_SET_ITEM(res, i, v);
    }
    return res;
}
