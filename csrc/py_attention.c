/* py_attention.c - the hot path: attention(...) plus workspace_bytes() and device_info().
 *
 * attention() takes every argument positionally (vectorcall, no keyword parsing) because
 * its host cost adds to every attention call of a diffusion step: tensors are read through
 * the torch fast path of sa3_intake, validated once, and handed to the launcher on the
 * caller's stream. No allocation of device memory, no synchronization, no GIL release
 * (the launch itself takes microseconds).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "sa3_check.h"
#include "sa3_intake.h"
#include "sa3_module.h"
#include "sa3_py.h"
#include "../cuda/sa3_launch.h"

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
    }
    sa3_raise(st, SA3_ERR_VALUE, "pv must be 'fp16' or 'fp8', got %R", obj);
    return -1;
}

/* Device facts, cached per device index in the module state (queried once). */
static const sa3_device_facts *sa3_facts(sa3_module_state *st, int device) {
    char err[256] = {0};
    char name[128] = {0};
    if (device < 0 || device >= SA3_MAX_DEVICES) {
        sa3_raise(st, SA3_ERR_VALUE, "CUDA device index %d out of range 0..%d", device, SA3_MAX_DEVICES - 1);
        return NULL;
    }
    sa3_device_facts *f = &st->devices[device];
    if (!f->known) {
        sa3_status s = sa3_cuda_device_facts(device, &f->sm_arch, &f->sm_count, &f->smem_optin, name,
                                             sizeof name, err, sizeof err);
        if (s != SA3_OK) {
            sa3_raise(st, s, "device %d: %s", device, err);
            return NULL;
        }
        f->known = 1;
    }
    return f;
}

/* attention(q, k, v, out, ws_ptr, ws_bytes, stream, layout, heads, is_causal, sm_scale, pv) */
PyObject *sa3_py_attention(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    sa3_module_state *st = sa3_state(module);
    sa3_tensor q = {0}, k = {0}, v = {0}, o = {0};
    sa3_attn_params p;
    sa3_layout layout;
    sa3_pv_mode pv;
    PyObject *result = NULL;
    char err[512] = {0};

    if (nargs != 12 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        return sa3_raise(st, SA3_ERR_TYPE,
                         "attention() takes 12 positional arguments (q, k, v, out, ws_ptr, ws_bytes, stream, "
                         "layout, heads, is_causal, sm_scale, pv), got %zd", nargs);
    }
    unsigned long long ws_ptr = PyLong_AsUnsignedLongLong(args[4]);
    if (ws_ptr == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    unsigned long long ws_bytes = PyLong_AsUnsignedLongLong(args[5]);
    if (ws_bytes == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    long long stream = PyLong_AsLongLong(args[6]);
    if (stream == -1 && PyErr_Occurred()) return NULL;
    if (sa3_parse_layout(args[7], &layout) < 0) return NULL;
    long long heads = PyLong_AsLongLong(args[8]);
    if (heads == -1 && PyErr_Occurred()) return NULL;
    int is_causal = PyObject_IsTrue(args[9]);
    if (is_causal < 0) return NULL;
    double sm_scale = PyFloat_AsDouble(args[10]);
    if (sm_scale == -1.0 && PyErr_Occurred()) return NULL;
    if (sa3_parse_pv(st, args[11], &pv) < 0) return NULL;

    if (sa3_intake(st, args[0], "q", stream, &q) < 0) goto done;
    if (sa3_intake(st, args[1], "k", stream, &k) < 0) goto done;
    if (sa3_intake(st, args[2], "v", stream, &v) < 0) goto done;
    if (sa3_intake(st, args[3], "out", stream, &o) < 0) goto done;
    if (sa3_check_attention(st, &q, &k, &v, &o, layout, (int64_t)heads, 0, &p) != SA3_OK) goto done;

    const sa3_device_facts *f = sa3_facts(st, p.device);
    if (f == NULL) goto done;
    if (!sa3_mma_supports_arch(f->sm_arch)) {
        sa3_raise(st, SA3_ERR_UNSUPPORTED, "no mma kernel compiled for sm_%d", f->sm_arch);
        goto done;
    }
    p.sm_arch = f->sm_arch;
    /* sm_scale: NaN means "not given" (1/sqrt(D), set by the check). Anything else must be a
     * positive scale that stays finite as a float; SDPA takes other values, so they are
     * "unsupported" (the caller falls back) rather than invalid. */
    if (!isnan(sm_scale)) {
        if (!(sm_scale > 0.0) || !isfinite((float)sm_scale)) {
            sa3_raise(st, SA3_ERR_UNSUPPORTED, "sm_scale %R is not a positive finite float", args[10]);
            goto done;
        }
        p.sm_scale = (float)sm_scale;
    }
    p.is_causal = is_causal;
    p.pv_mode = pv;
    p.smooth_k = 1;
    size_t need = sa3_mma_workspace_bytes(p.batch, p.heads_kv, p.seq_k, p.head_dim, pv);
    if (ws_bytes < need || ws_ptr == 0 || (ws_ptr % 256u) != 0) {
        sa3_raise(st, SA3_ERR_VALUE,
                  "workspace: need %zu bytes at a 256-byte aligned address, got %llu bytes at 0x%llx", need,
                  ws_bytes, ws_ptr);
        goto done;
    }
    p.workspace = (void *)(uintptr_t)ws_ptr;
    p.workspace_bytes = (size_t)ws_bytes;

    sa3_status s = sa3_mma_attention(&p, (void *)(intptr_t)stream, err, sizeof err);
    if (s != SA3_OK) {
        sa3_raise(st, s,
                  "attention(q=(B=%lld, Hq=%lld, Sq=%lld, D=%lld), k/v=(Hkv=%lld, Sk=%lld), dtype=%s, "
                  "device=cuda:%d, sm_%d): %s",
                  (long long)p.batch, (long long)p.heads_q, (long long)p.seq_q, (long long)p.head_dim,
                  (long long)p.heads_kv, (long long)p.seq_k, q.dtype_name, p.device, p.sm_arch, err);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    sa3_intake_release(&q);
    sa3_intake_release(&k);
    sa3_intake_release(&v);
    sa3_intake_release(&o);
    return result;
}

PyObject *sa3_py_workspace_bytes(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"batch", "heads_kv", "seq_k", "head_dim", "pv", NULL};
    sa3_module_state *st = sa3_state(module);
    long long b, h, s, d;
    PyObject *pv_obj;
    sa3_pv_mode pv;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "LLLLO:workspace_bytes", kwlist, &b, &h, &s, &d, &pv_obj))
        return NULL;
    if (sa3_parse_pv(st, pv_obj, &pv) < 0) return NULL;
    /* Bounds keep every product in sa3_mma_ws_layout far inside int64 (2^31 * 2^31 * 2^8 * 4
     * would not be): the biggest term is b*h*s*DP bytes, capped here at 2^62. */
    if (b <= 0 || h <= 0 || s <= 0 || d <= 0 || b > INT32_MAX || h > INT32_MAX || s > INT32_MAX || d > 256 ||
        (double)b * (double)h * ((double)s + 64.0) * 256.0 * 4.0 > 4.6e18)
        return sa3_raise(st, SA3_ERR_VALUE,
                         "workspace_bytes: sizes must be positive, head_dim <= 256 and the total below 2^62, got "
                         "(%lld, %lld, %lld, %lld)",
                         b, h, s, d);
    return PyLong_FromSize_t(sa3_mma_workspace_bytes(b, h, s, d, pv));
}

PyObject *sa3_py_device_info(PyObject *module, PyObject *args) {
    sa3_module_state *st = sa3_state(module);
    int device;
    char name[128] = {0};
    char err[256] = {0};
    int arch = 0, count = 0, smem = 0;
    if (!PyArg_ParseTuple(args, "i:device_info", &device)) return NULL;
    if (sa3_facts(st, device) == NULL) return NULL;
    /* The name is not cached in state (fixed-size facts only); this call is not hot. */
    sa3_status s = sa3_cuda_device_facts(device, &arch, &count, &smem, name, sizeof name, err, sizeof err);
    if (s != SA3_OK) return sa3_raise(st, s, "device %d: %s", device, err);
    int ok = sa3_mma_supports_arch(arch);
    /* INT8 QK + 16-bit PV measured fastest for mma.sync on Hopper; FP8 PV elsewhere sm89+. */
    const char *pv = (arch >= 89 && arch != 90) ? "fp8" : "fp16";
    return Py_BuildValue("{s:s,s:i,s:i,s:i,s:O,s:s}", "name", name, "sm_arch", arch, "sm_count", count,
                         "smem_optin", smem, "mma_supported", ok ? Py_True : Py_False, "default_pv", pv);
}
