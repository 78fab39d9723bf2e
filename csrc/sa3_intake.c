/* sa3_intake.c - torch fast path, NumPy C API and DLPack intake (see sa3_intake.h).
 *
 * The torch route is on the hot path of every attention call (4 tensors per call), so it
 * makes the fewest Python-level calls that still identify the device correctly and never
 * exports a DLPack capsule (an export costs ~3 us per tensor, ANCHORS.md "Host overhead").
 */
#include "sa3_numpy.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sa3_dlpack.h"
#include "sa3_intake.h"

/* ------------------------------------------------------------------------------------ */
/* Lazily created constants                                                              */
/* ------------------------------------------------------------------------------------ */

static int sa3_intern_if_null(PyObject **slot, const char *s) {
    if (*slot != NULL) return 0;
    *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

/* Creates every name/tuple intake needs that is still NULL. module.c interns the str_*
 * names it declares; filling them here too (when NULL) keeps intake correct whatever order
 * the module's exec runs in. dlpack_max_version is created last and doubles as the
 * "everything is there" flag, so the common case is one pointer test. */
static int sa3_ensure_constants(sa3_module_state *st) {
    PyObject *stream = NULL, *max_version = NULL;
    int rc = -1;
    if (st->dlpack_max_version != NULL) return 0;
    if (sa3_intern_if_null(&st->str_data_ptr, "data_ptr") < 0 || sa3_intern_if_null(&st->str_stride, "stride") < 0 ||
        sa3_intern_if_null(&st->str_shape, "shape") < 0 || sa3_intern_if_null(&st->str_dtype, "dtype") < 0 ||
        sa3_intern_if_null(&st->str_get_device, "get_device") < 0 ||
        sa3_intern_if_null(&st->str_is_cuda, "is_cuda") < 0 || sa3_intern_if_null(&st->str_is_cpu, "is_cpu") < 0 ||
        sa3_intern_if_null(&st->str_dlpack, "__dlpack__") < 0 ||
        sa3_intern_if_null(&st->str_dlpack_device, "__dlpack_device__") < 0)
        return -1;
    stream = PyUnicode_InternFromString("stream");
    max_version = PyUnicode_InternFromString("max_version");
    if (stream == NULL || max_version == NULL) goto done;
    if (st->dlpack_kwnames_versioned == NULL) {
        st->dlpack_kwnames_versioned = PyTuple_Pack(2, stream, max_version);
        if (st->dlpack_kwnames_versioned == NULL) goto done;
    }
    if (st->dlpack_kwnames == NULL) {
        st->dlpack_kwnames = PyTuple_Pack(1, stream);
        if (st->dlpack_kwnames == NULL) goto done;
    }
    st->dlpack_max_version = Py_BuildValue("(ii)", SA3_DLPACK_MAJOR_VERSION, SA3_DLPACK_MINOR_VERSION);
    if (st->dlpack_max_version == NULL) goto done;
    rc = 0;
done:
    Py_XDECREF(stream);
    Py_XDECREF(max_version);
    return rc;
}

void sa3_intake_clear_state(sa3_module_state *st) {
    Py_CLEAR(st->str_is_cpu);
    Py_CLEAR(st->dlpack_kwnames_versioned);
    Py_CLEAR(st->dlpack_kwnames);
    Py_CLEAR(st->dlpack_max_version);
}

/* torch is optional and never imported by us: if the user has imported it, cache
 * torch.Tensor and the dtypes we map. Returns 0 whether or not torch is there (the cache
 * simply stays empty, and we look again next call), -1 only on a real error. A torch that
 * is still half-way through its own import lacks these attributes: not cached either. */
static int sa3_lookup_torch(sa3_module_state *st) {
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    PyObject *torch, *tensor_type = NULL, *f16 = NULL, *bf16 = NULL, *f32 = NULL, *f64 = NULL;
    if (modules == NULL || !PyDict_Check(modules)) return 0;
    torch = PyDict_GetItemString(modules, "torch"); /* borrowed; never raises */
    if (torch == NULL) return 0;
    tensor_type = PyObject_GetAttrString(torch, "Tensor");
    f16 = tensor_type ? PyObject_GetAttrString(torch, "float16") : NULL;
    bf16 = f16 ? PyObject_GetAttrString(torch, "bfloat16") : NULL;
    f32 = bf16 ? PyObject_GetAttrString(torch, "float32") : NULL;
    f64 = f32 ? PyObject_GetAttrString(torch, "float64") : NULL;
    if (f64 == NULL || !PyType_Check(tensor_type)) {
        PyErr_Clear();
        Py_XDECREF(tensor_type);
        Py_XDECREF(f16);
        Py_XDECREF(bf16);
        Py_XDECREF(f32);
        Py_XDECREF(f64);
        return 0;
    }
    st->torch_tensor_type = tensor_type;
    st->torch_float16 = f16;
    st->torch_bfloat16 = bf16;
    st->torch_float32 = f32;
    st->torch_float64 = f64;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Messages                                                                              */
/* ------------------------------------------------------------------------------------ */

/* Appends to buf at *pos without ever overrunning len (snprintf truncates). */
static void sa3_append(char *buf, size_t len, size_t *pos, const char *fmt, long long value) {
    int n;
    if (*pos >= len) return;
    n = snprintf(buf + *pos, len - *pos, fmt, value);
    if (n < 0) return;
    *pos += (size_t)n;
    if (*pos >= len) *pos = len;
}

void sa3_format_tuple(const int64_t *v, int n, char *buf, size_t len) {
    size_t pos = 0;
    int i;
    if (len == 0) return;
    buf[0] = '\0';
    sa3_append(buf, len, &pos, "(", 0);
    for (i = 0; i < n; i++) sa3_append(buf, len, &pos, i == 0 ? "%lld" : ", %lld", (long long)v[i]);
    sa3_append(buf, len, &pos, n == 1 ? ",)" : ")", 0);
}

void sa3_tensor_shape_str(const sa3_tensor *t, char *buf, size_t len) {
    sa3_format_tuple(t->shape, t->ndim, buf, len);
}

void sa3_tensor_describe(const sa3_tensor *t, char *buf, size_t len) {
    char shape[128], strides[192], device[48];
    sa3_format_tuple(t->shape, t->ndim, shape, sizeof shape);
    sa3_format_tuple(t->strides, t->ndim, strides, sizeof strides);
    if (t->device_kind == SA3_DEVICE_CUDA)
        snprintf(device, sizeof device, "cuda:%d", t->device_id);
    else if (t->device_kind == SA3_DEVICE_CPU)
        snprintf(device, sizeof device, "cpu");
    else
        snprintf(device, sizeof device, "a device other than CPU/CUDA");
    if (len == 0) return;
    snprintf(buf, len, "%s of shape %s, strides %s, %s, %s%s", t->source ? t->source : "tensor", shape, strides,
             t->dtype_name ? t->dtype_name : "unknown dtype", device, t->readonly ? ", read-only" : "");
}

static const char *sa3_type_name(PyObject *obj) {
    return Py_TYPE(obj)->tp_name;
}

/* Drops a reference while keeping any pending exception intact. A DLPack capsule's
 * destructor is producer code that may run Python (CPython does not shield capsule
 * destructors the way it shields __del__), and it must neither see nor clobber our error. */
static void sa3_decref_keep_error(PyObject *obj) {
    if (obj == NULL) return;
    if (!PyErr_Occurred()) {
        Py_DECREF(obj);
        return;
    }
#if PY_VERSION_HEX >= 0x030C0000
    {
        PyObject *exc = PyErr_GetRaisedException();
        Py_DECREF(obj);
        PyErr_SetRaisedException(exc);
    }
#else
    {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        Py_DECREF(obj);
        PyErr_Restore(type, value, tb);
    }
#endif
}

void sa3_intake_release(sa3_tensor *t) {
    PyObject *owner = t->owner;
    t->owner = NULL;
    sa3_decref_keep_error(owner);
}

/* ------------------------------------------------------------------------------------ */
/* Route 1: torch.Tensor                                                                 */
/* ------------------------------------------------------------------------------------ */

/* Static names for torch dtypes we do not compute with, so messages can say what came.
 * Only consulted on the error path (one str() call). */
static const char *const sa3_torch_dtype_names[] = {
    "torch.int8", "torch.uint8", "torch.int16", "torch.uint16", "torch.int32", "torch.uint32",
    "torch.int64", "torch.uint64", "torch.bool", "torch.complex32", "torch.complex64", "torch.complex128",
    "torch.float8_e4m3fn", "torch.float8_e5m2", "torch.float8_e4m3fnuz", "torch.float8_e5m2fnuz",
    "torch.float8_e8m0fnu", "torch.float4_e2m1fn_x2", "torch.qint8", "torch.quint8", "torch.qint32",
    "torch.quint4x2", "torch.quint2x4", NULL};

static const char *sa3_torch_dtype_name(PyObject *dtype) {
    const char *name = "an unsupported torch dtype";
    PyObject *s = PyObject_Str(dtype);
    const char *utf8 = s ? PyUnicode_AsUTF8(s) : NULL;
    int i;
    if (utf8 != NULL) {
        for (i = 0; sa3_torch_dtype_names[i] != NULL; i++) {
            if (strcmp(utf8, sa3_torch_dtype_names[i]) == 0) {
                name = sa3_torch_dtype_names[i];
                break;
            }
        }
    }
    PyErr_Clear();
    Py_XDECREF(s);
    return name;
}

/* Reads one tuple of ints (torch.Size or stride()). Returns 0, or -1 with an exception. */
static int sa3_read_int_tuple(PyObject *tup, Py_ssize_t n, int64_t *dst) {
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(tup, i));
        if (v == -1 && PyErr_Occurred()) return -1;
        dst[i] = (int64_t)v;
    }
    return 0;
}

static int sa3_intake_torch(sa3_module_state *st, PyObject *obj, const char *argname, sa3_tensor *out) {
    PyObject *shape = NULL, *strides = NULL, *dtype = NULL, *flag = NULL, *dev = NULL, *ptr = NULL;
    const char *what = "shape";
    Py_ssize_t nd, i;
    int rc = -1, is_cuda, is_cpu;

    /* Six attribute reads/calls in all: shape, stride(), dtype, is_cuda, then get_device()
     * (CUDA) or is_cpu (anything else: get_device() alone cannot tell CPU from meta, and
     * gives an index for xpu/mps too), and data_ptr(). */
    shape = PyObject_GetAttr(obj, st->str_shape);
    if (shape == NULL) goto read_failed;
    if (!PyTuple_Check(shape)) {
        sa3_raise(st, SA3_ERR_TYPE, "%s: torch.Tensor.shape of this %.100s is a %.100s, not a tuple", argname,
                  sa3_type_name(obj), sa3_type_name(shape));
        goto done;
    }
    nd = PyTuple_GET_SIZE(shape);
    if (nd < 1 || nd > SA3_MAX_NDIM) {
        PyObject *shape_repr = PyObject_Repr(shape);
        if (shape_repr == NULL) goto done;
        sa3_raise(st, SA3_ERR_VALUE, "%s: expected a tensor with 1 to %d dimensions, got a %zd-d %.100s of %U",
                  argname, SA3_MAX_NDIM, nd, sa3_type_name(obj), shape_repr);
        Py_DECREF(shape_repr);
        goto done;
    }
    what = "stride()";
    strides = PyObject_CallMethodNoArgs(obj, st->str_stride);
    if (strides == NULL) goto read_failed;
    if (!PyTuple_Check(strides) || PyTuple_GET_SIZE(strides) != nd) {
        sa3_raise(st, SA3_ERR_TYPE, "%s: stride() of this %.100s did not return a %zd-tuple", argname,
                  sa3_type_name(obj), nd);
        goto done;
    }
    what = "shape";
    if (sa3_read_int_tuple(shape, nd, out->shape) < 0) goto read_failed;
    what = "stride()";
    if (sa3_read_int_tuple(strides, nd, out->strides) < 0) goto read_failed;
    out->ndim = (int)nd;
    for (i = 0; i < nd; i++) {
        if (out->shape[i] < 0) {
            sa3_raise(st, SA3_ERR_VALUE, "%s: negative size in the shape of this torch.Tensor", argname);
            goto done;
        }
    }

    what = "dtype";
    dtype = PyObject_GetAttr(obj, st->str_dtype);
    if (dtype == NULL) goto read_failed;
    /* torch dtypes are singletons: identity compare, no str() on the hot path. */
    if (dtype == st->torch_float16) {
        out->dtype = SA3_DTYPE_F16;
        out->dtype_name = "torch.float16";
    } else if (dtype == st->torch_bfloat16) {
        out->dtype = SA3_DTYPE_BF16;
        out->dtype_name = "torch.bfloat16";
    } else if (dtype == st->torch_float32) {
        out->dtype = SA3_DTYPE_F32;
        out->dtype_name = "torch.float32";
    } else if (dtype == st->torch_float64) {
        out->dtype = SA3_DTYPE_F64;
        out->dtype_name = "torch.float64";
    } else {
        out->dtype = SA3_DTYPE_INVALID;
        out->dtype_name = sa3_torch_dtype_name(dtype);
    }

    what = "is_cuda";
    flag = PyObject_GetAttr(obj, st->str_is_cuda);
    if (flag == NULL) goto read_failed;
    is_cuda = flag == Py_True ? 1 : flag == Py_False ? 0 : PyObject_IsTrue(flag);
    if (is_cuda < 0) goto read_failed;
    Py_CLEAR(flag);
    if (is_cuda) {
        long id;
        what = "get_device()";
        dev = PyObject_CallMethodNoArgs(obj, st->str_get_device);
        if (dev == NULL) goto read_failed;
        id = PyLong_AsLong(dev);
        if (id == -1 && PyErr_Occurred()) goto read_failed;
        if (id < 0 || id > INT32_MAX) {
            sa3_raise(st, SA3_ERR_VALUE, "%s: CUDA tensor reports device index %ld", argname, id);
            goto done;
        }
        out->device_kind = SA3_DEVICE_CUDA;
        out->device_id = (int)id;
    } else {
        what = "is_cpu";
        flag = PyObject_GetAttr(obj, st->str_is_cpu);
        if (flag == NULL) goto read_failed;
        is_cpu = flag == Py_True ? 1 : flag == Py_False ? 0 : PyObject_IsTrue(flag);
        if (is_cpu < 0) goto read_failed;
        out->device_kind = is_cpu ? SA3_DEVICE_CPU : SA3_DEVICE_OTHER;
        out->device_id = 0;
    }

    what = "data_ptr()";
    ptr = PyObject_CallMethodNoArgs(obj, st->str_data_ptr);
    if (ptr == NULL) goto read_failed;
    out->data = PyLong_AsVoidPtr(ptr);
    if (out->data == NULL && PyErr_Occurred()) goto read_failed;

    out->readonly = 0; /* torch has no read-only tensors */
    out->source = "torch.Tensor";
    out->owner = Py_NewRef(obj);
    rc = 0;
    goto done;

read_failed:
    /* e.g. sparse/nested tensors (no strides), tensor subclasses without storage. The
     * original exception is chained as __cause__ by sa3_raise. */
    sa3_raise(st, SA3_ERR_TYPE, "%s: could not read %s of this %.100s (sparse, nested or storage-less tensor?)",
              argname, what, sa3_type_name(obj));
done:
    Py_XDECREF(shape);
    Py_XDECREF(strides);
    Py_XDECREF(dtype);
    Py_XDECREF(flag);
    Py_XDECREF(dev);
    Py_XDECREF(ptr);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Route 2: numpy.ndarray                                                                */
/* ------------------------------------------------------------------------------------ */

/* Names by (kind, itemsize): NPY_LONG differs between Linux and Windows, kind+size does not. */
static const char *sa3_numpy_dtype_name(char kind, Py_ssize_t size) {
    switch (kind) {
    case 'b': return "bool";
    case 'i': return size == 1 ? "int8" : size == 2 ? "int16" : size == 4 ? "int32" : size == 8 ? "int64" : "int";
    case 'u': return size == 1 ? "uint8" : size == 2 ? "uint16" : size == 4 ? "uint32" : size == 8 ? "uint64" : "uint";
    case 'f': return size == 2 ? "float16" : size == 4 ? "float32" : size == 8 ? "float64" : "longdouble";
    case 'c': return size == 8 ? "complex64" : size == 16 ? "complex128" : "clongdouble";
    case 'O': return "object";
    case 'U': return "str";
    case 'S': return "bytes";
    case 'M': return "datetime64";
    case 'm': return "timedelta64";
    case 'V': return "void/structured";
    default: return "an unsupported NumPy dtype";
    }
}

/* ml_dtypes.bfloat16 (used by JAX and others) registers a user dtype whose scalar type is
 * named "bfloat16"; accept it as bf16 when it is 2 bytes wide. */
static int sa3_numpy_is_bfloat16(PyArray_Descr *descr, Py_ssize_t itemsize) {
    const char *name, *dot;
    if (itemsize != 2 || descr->typeobj == NULL) return 0;
    name = descr->typeobj->tp_name;
    dot = strrchr(name, '.');
    return strcmp(dot ? dot + 1 : name, "bfloat16") == 0;
}

static int sa3_intake_numpy(sa3_module_state *st, PyObject *obj, const char *argname, sa3_tensor *out) {
    PyArrayObject *a = (PyArrayObject *)obj;
    PyArray_Descr *descr = PyArray_DESCR(a);
    int nd = PyArray_NDIM(a), i, type_num = PyArray_TYPE(a);
    Py_ssize_t itemsize = (Py_ssize_t)PyArray_ITEMSIZE(a);
    const npy_intp *dims = PyArray_DIMS(a);
    const npy_intp *bstrides = PyArray_STRIDES(a);

    if (nd < 1 || nd > SA3_MAX_NDIM) {
        sa3_raise(st, SA3_ERR_VALUE, "%s: expected an array with 1 to %d dimensions, got a %d-d numpy.ndarray", argname,
                  SA3_MAX_NDIM, nd);
        return -1;
    }
    out->ndim = nd;

    if (type_num == NPY_HALF) {
        out->dtype = SA3_DTYPE_F16;
        out->dtype_name = "float16";
    } else if (type_num == NPY_FLOAT) {
        out->dtype = SA3_DTYPE_F32;
        out->dtype_name = "float32";
    } else if (type_num == NPY_DOUBLE) {
        out->dtype = SA3_DTYPE_F64;
        out->dtype_name = "float64";
    } else if (sa3_numpy_is_bfloat16(descr, itemsize)) {
        out->dtype = SA3_DTYPE_BF16;
        out->dtype_name = "bfloat16";
    } else {
        out->dtype = SA3_DTYPE_INVALID;
        out->dtype_name = sa3_numpy_dtype_name(descr->kind, itemsize);
    }
    if (out->dtype != SA3_DTYPE_INVALID && !PyArray_ISNOTSWAPPED(a)) {
        /* '>f2' on a little-endian host: same type, different bytes. */
        out->dtype = SA3_DTYPE_INVALID;
        out->dtype_name = "a non-native byte order float";
    }

    for (i = 0; i < nd; i++) {
        out->shape[i] = (int64_t)dims[i];
        if (itemsize > 0 && bstrides[i] % itemsize == 0) {
            out->strides[i] = (int64_t)(bstrides[i] / itemsize);
        } else if (dims[i] <= 1) {
            /* A dimension of size 0 or 1 never uses its stride (NumPy itself ignores it for
             * contiguity), so an odd byte stride there is harmless. */
            out->strides[i] = 0;
        } else {
            char shape[128];
            int64_t bs[SA3_MAX_NDIM];
            char strides[192];
            int j;
            for (j = 0; j < nd; j++) bs[j] = (int64_t)bstrides[j];
            sa3_format_tuple(out->shape, nd, shape, sizeof shape);
            sa3_format_tuple(bs, nd, strides, sizeof strides);
            sa3_raise(st, SA3_ERR_VALUE,
                      "%s: byte strides %s of this %s numpy.ndarray of shape %s are not all multiples of its item "
                      "size %zd; strides must be whole elements",
                      argname, strides, out->dtype_name, shape, itemsize);
            return -1;
        }
    }
    out->data = PyArray_DATA(a);
    out->device_kind = SA3_DEVICE_CPU;
    out->device_id = 0;
    out->readonly = !PyArray_ISWRITEABLE(a);
    out->source = "numpy.ndarray";
    out->owner = Py_NewRef(obj);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Route 3: __dlpack__                                                                   */
/* ------------------------------------------------------------------------------------ */

static const char *sa3_dlpack_dtype_name(DLDataType dt) {
    if (dt.lanes != 1) return "a vector (lanes > 1) DLPack dtype";
    switch (dt.code) {
    case SA3_DL_FLOAT:
        return dt.bits == 16 ? "float16" : dt.bits == 32 ? "float32" : dt.bits == 64 ? "float64" : "float (odd width)";
    case SA3_DL_BFLOAT: return dt.bits == 16 ? "bfloat16" : "bfloat (odd width)";
    case SA3_DL_INT:
        return dt.bits == 8 ? "int8" : dt.bits == 16 ? "int16" : dt.bits == 32 ? "int32" : dt.bits == 64 ? "int64" : "int";
    case SA3_DL_UINT:
        return dt.bits == 8 ? "uint8" : dt.bits == 16 ? "uint16" : dt.bits == 32 ? "uint32" : dt.bits == 64 ? "uint64" : "uint";
    case SA3_DL_BOOL: return "bool";
    case SA3_DL_COMPLEX: return dt.bits == 64 ? "complex64" : dt.bits == 128 ? "complex128" : "complex";
    case SA3_DL_OPAQUE_HANDLE: return "opaque handle";
    default: return "a float8/float6/float4 or other DLPack dtype";
    }
}

static sa3_dtype sa3_dlpack_dtype(DLDataType dt) {
    if (dt.lanes != 1) return SA3_DTYPE_INVALID;
    if (dt.code == SA3_DL_FLOAT && dt.bits == 16) return SA3_DTYPE_F16;
    if (dt.code == SA3_DL_BFLOAT && dt.bits == 16) return SA3_DTYPE_BF16;
    if (dt.code == SA3_DL_FLOAT && dt.bits == 32) return SA3_DTYPE_F32;
    if (dt.code == SA3_DL_FLOAT && dt.bits == 64) return SA3_DTYPE_F64;
    return SA3_DTYPE_INVALID;
}

static int sa3_is_cuda_dl(int32_t device_type) {
    return device_type == SA3_DL_CUDA || device_type == SA3_DL_CUDA_MANAGED;
}

/* Copies the producer's DLTensor into *out. The capsule stays alive as the owner, so the
 * pointers read here stay valid for as long as the caller keeps it. */
static int sa3_fill_from_dltensor(sa3_module_state *st, const DLTensor *t, const char *argname, sa3_tensor *out) {
    int i;
    if (t->ndim < 1 || t->ndim > SA3_MAX_NDIM) {
        sa3_raise(st, SA3_ERR_VALUE, "%s: expected a tensor with 1 to %d dimensions, got a %d-d DLPack tensor",
                  argname, SA3_MAX_NDIM, (int)t->ndim);
        return -1;
    }
    if (t->shape == NULL) {
        sa3_raise(st, SA3_ERR_VALUE, "%s: the DLPack tensor has no shape array", argname);
        return -1;
    }
    out->ndim = (int)t->ndim;
    for (i = 0; i < out->ndim; i++) {
        out->shape[i] = t->shape[i];
        if (out->shape[i] < 0) {
            sa3_raise(st, SA3_ERR_VALUE, "%s: the DLPack tensor has a negative size in dimension %d", argname, i);
            return -1;
        }
    }
    if (t->strides != NULL) {
        for (i = 0; i < out->ndim; i++) out->strides[i] = t->strides[i];
    } else {
        /* NULL strides mean compact row-major. The product cannot overflow for a tensor
         * that exists, but a bogus shape must not make us compute garbage. */
        int64_t s = 1;
        for (i = out->ndim - 1; i >= 0; i--) {
            out->strides[i] = s;
            if (out->shape[i] > 1 && s > INT64_MAX / out->shape[i]) {
                sa3_raise(st, SA3_ERR_OVERFLOW, "%s: the DLPack tensor's size overflows int64", argname);
                return -1;
            }
            s *= out->shape[i] > 1 ? out->shape[i] : 1;
        }
    }
    out->dtype = sa3_dlpack_dtype(t->dtype);
    out->dtype_name = sa3_dlpack_dtype_name(t->dtype);
    if (t->device.device_type == SA3_DL_CPU || t->device.device_type == SA3_DL_CUDA_HOST) {
        out->device_kind = SA3_DEVICE_CPU;
        out->device_id = 0;
    } else if (sa3_is_cuda_dl(t->device.device_type)) {
        out->device_kind = SA3_DEVICE_CUDA;
        out->device_id = (int)t->device.device_id;
    } else {
        out->device_kind = SA3_DEVICE_OTHER;
        out->device_id = (int)t->device.device_id;
    }
    /* Integer arithmetic: data may be NULL for empty tensors, and NULL + n is UB in C. */
    out->data = (void *)((uintptr_t)t->data + (uintptr_t)t->byte_offset);
    out->source = "DLPack";
    return 0;
}

static int sa3_intake_dlpack(sa3_module_state *st, PyObject *obj, const char *argname, long long stream,
                             sa3_tensor *out) {
    PyObject *devfn = NULL, *dev = NULL, *stream_obj = NULL, *cap = NULL;
    PyObject *args[4];
    long dev_type, dev_id;
    int rc = -1;

    devfn = PyObject_GetAttr(obj, st->str_dlpack_device);
    if (devfn == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) goto done;
        PyErr_Clear();
        sa3_raise(st, SA3_ERR_TYPE,
                  "%s: expected a torch.Tensor, a numpy.ndarray or an object with __dlpack__ and "
                  "__dlpack_device__, got %.100s",
                  argname, sa3_type_name(obj));
        goto done;
    }
    dev = PyObject_CallNoArgs(devfn);
    if (dev == NULL) {
        sa3_raise(st, SA3_ERR_TYPE, "%s: %.100s.__dlpack_device__() failed", argname, sa3_type_name(obj));
        goto done;
    }
    if (!PyTuple_Check(dev) || PyTuple_GET_SIZE(dev) != 2) {
        sa3_raise(st, SA3_ERR_TYPE, "%s: %.100s.__dlpack_device__() returned %R, not a (device_type, device_id) tuple",
                  argname, sa3_type_name(obj), dev);
        goto done;
    }
    dev_type = PyLong_AsLong(PyTuple_GET_ITEM(dev, 0));
    dev_id = (dev_type == -1 && PyErr_Occurred()) ? -1 : PyLong_AsLong(PyTuple_GET_ITEM(dev, 1));
    if (PyErr_Occurred()) {
        sa3_raise(st, SA3_ERR_TYPE, "%s: %.100s.__dlpack_device__() returned %R, not two ints", argname,
                  sa3_type_name(obj), dev);
        goto done;
    }
    (void)dev_id;

    /* The stream argument only means something for CUDA; everywhere else it must be None. */
    if (sa3_is_cuda_dl((int32_t)dev_type))
        stream_obj = PyLong_FromLongLong(stream == 0 ? 1 : stream);
    else
        stream_obj = Py_NewRef(Py_None);
    if (stream_obj == NULL) goto done;

    /* Vectorcall with one scratch slot in front (PY_VECTORCALL_ARGUMENTS_OFFSET). */
    args[0] = NULL;
    args[1] = obj;
    args[2] = stream_obj;
    args[3] = st->dlpack_max_version;
    cap = PyObject_VectorcallMethod(st->str_dlpack, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                    st->dlpack_kwnames_versioned);
    if (cap == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
        /* A pre-1.0 producer: no max_version keyword. */
        PyErr_Clear();
        args[0] = NULL;
        cap = PyObject_VectorcallMethod(st->str_dlpack, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                        st->dlpack_kwnames);
    }
    if (cap == NULL) {
        sa3_raise(st, SA3_ERR_TYPE, "%s: %.100s.__dlpack__(stream=%R) failed", argname, sa3_type_name(obj),
                  stream_obj);
        goto done;
    }

    if (PyCapsule_IsValid(cap, SA3_DLPACK_VERSIONED_CAPSULE_NAME)) {
        DLManagedTensorVersioned *m =
            (DLManagedTensorVersioned *)PyCapsule_GetPointer(cap, SA3_DLPACK_VERSIONED_CAPSULE_NAME);
        if (m == NULL) goto done;
        /* Check the version before reading anything else: another major may lay out the
         * struct differently. */
        if (m->version.major == 0 || m->version.major > SA3_DLPACK_MAJOR_VERSION) {
            sa3_raise(st, SA3_ERR_TYPE, "%s: %.100s exported a DLPack %u.%u tensor; this build reads 1.x only",
                      argname, sa3_type_name(obj), (unsigned)m->version.major, (unsigned)m->version.minor);
            goto done;
        }
        if (sa3_fill_from_dltensor(st, &m->dl_tensor, argname, out) < 0) goto done;
        out->readonly = (m->flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0;
    } else if (PyCapsule_IsValid(cap, SA3_DLPACK_CAPSULE_NAME)) {
        DLManagedTensor *m = (DLManagedTensor *)PyCapsule_GetPointer(cap, SA3_DLPACK_CAPSULE_NAME);
        if (m == NULL) goto done;
        if (sa3_fill_from_dltensor(st, &m->dl_tensor, argname, out) < 0) goto done;
        out->readonly = 0; /* the old protocol cannot say; producers refuse to export read-only memory */
    } else {
        sa3_raise(st, SA3_ERR_TYPE,
                  "%s: %.100s.__dlpack__() returned %.100s, not an unused \"dltensor\" or \"dltensor_versioned\" "
                  "capsule",
                  argname, sa3_type_name(obj), sa3_type_name(cap));
        goto done;
    }
    /* Keep the capsule, unrenamed: its destructor calls the producer's deleter. */
    out->owner = cap;
    cap = NULL;
    rc = 0;
done:
    Py_XDECREF(devfn);
    Py_XDECREF(dev);
    Py_XDECREF(stream_obj);
    sa3_decref_keep_error(cap);
    return rc;
}

/* ------------------------------------------------------------------------------------ */

int sa3_intake(sa3_module_state *st, PyObject *obj, const char *argname, long long stream, sa3_tensor *out) {
    int rc;
    memset(out, 0, sizeof *out);
    out->dtype = SA3_DTYPE_INVALID;
    out->dtype_name = "unknown dtype";
    out->source = "tensor";
    if (obj == NULL) {
        sa3_raise(st, SA3_ERR_TYPE, "%s: missing tensor", argname);
        return -1;
    }
    if (sa3_ensure_constants(st) < 0) return -1;
    if (st->torch_tensor_type == NULL && sa3_lookup_torch(st) < 0) return -1;

    if (st->torch_tensor_type != NULL && PyObject_TypeCheck(obj, (PyTypeObject *)st->torch_tensor_type))
        rc = sa3_intake_torch(st, obj, argname, out);
    else if (PyArray_Check(obj))
        rc = sa3_intake_numpy(st, obj, argname, out);
    else
        rc = sa3_intake_dlpack(st, obj, argname, stream, out);

    if (rc < 0) {
        /* Leave *out empty so callers can release it unconditionally. */
        sa3_intake_release(out);
        out->data = NULL;
        out->ndim = 0;
    }
    return rc;
}

int sa3_intake_torch_only(sa3_module_state *st, PyObject *obj, const char *argname, sa3_tensor *out) {
    memset(out, 0, sizeof *out);
    out->dtype = SA3_DTYPE_INVALID;
    out->dtype_name = "unknown dtype";
    out->source = "tensor";
    if (st->torch_tensor_type == NULL && sa3_lookup_torch(st) < 0) return -1;
    if (obj == NULL || st->torch_tensor_type == NULL ||
        !PyObject_TypeCheck(obj, (PyTypeObject *)st->torch_tensor_type)) {
        sa3_raise(st, SA3_ERR_TYPE, "%s: expected a torch.Tensor, got %.100s", argname,
                  obj == NULL ? "nothing" : Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (sa3_ensure_constants(st) < 0) return -1;
    if (sa3_intake_torch(st, obj, argname, out) < 0) {
        sa3_intake_release(out);
        out->data = NULL;
        out->ndim = 0;
        return -1;
    }
    return 0;
}
