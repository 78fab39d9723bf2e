"""Tensor intake of sageattn3._C (csrc/sa3_intake.c) through check_attention, CPU only.

Three routes: the torch fast path (attributes read directly), NumPy arrays (C API), and any
`__dlpack__` exporter. Every test compares what the extension saw (pointers, element strides,
sizes) with what the tensor really is, on views with odd strides: slices, transposes, packed
(B, S, 3*H*D) buffers, expanded K/V.

`FakeDLPack` is a DLPack producer written with ctypes so tests control every field a real
exporter would never let us vary (byte_offset, NULL strides, READ_ONLY, versions, CUDA
devices, stream handling) and can check that the capsule is released and never renamed.
"""
from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sageattn3 import _C

torch = pytest.importorskip("torch")

F16 = torch.float16
BF16 = torch.bfloat16


def _root_np(a: np.ndarray):
    """The array that owns the memory behind a view. as_strided views hang off a helper
    object (not an ndarray) whose .base is the real array: follow any .base chain."""
    obj = a
    while getattr(obj, "base", None) is not None:
        obj = obj.base
    return obj if isinstance(obj, np.ndarray) and obj.flags.owndata else None


def snapshot(x):
    """Bytes of the whole memory behind x (not just the view), or None when not ours to read."""
    if isinstance(x, torch.Tensor):
        if x.device.type != "cpu" or x.is_sparse:
            return None
        # The whole storage as bytes (a uint8 tensor over it; bytes(storage) is per-element slow).
        return torch.empty(0, dtype=torch.uint8).set_(x.untyped_storage()).numpy().tobytes()
    if isinstance(x, np.ndarray):
        root = _root_np(x)
        if root is None or root.nbytes > 1 << 26:
            return None
        return root.tobytes()
    return None


def check(q, k, v, out=None, **kw):
    """check_attention with allow_cpu, asserting that no input changed by a single bit."""
    kw.setdefault("allow_cpu", True)
    objs = [x for x in (q, k, v, out) if x is not None]
    before = [snapshot(getattr(x, "t", x)) for x in objs]
    try:
        return _C.check_attention(q, k, v, out, **kw)
    finally:
        for x, b in zip(objs, before):
            assert b is None or snapshot(getattr(x, "t", x)) == b, "check_attention modified an input"


def elem_strides_np(a: np.ndarray):
    return tuple(s // a.itemsize for s in a.strides)


# ----------------------------------------------------------------------------------------
# A ctypes DLPack producer
# ----------------------------------------------------------------------------------------

class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    pass


DLManagedTensor._fields_ = [
    ("dl_tensor", DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))),
]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    pass


DLManagedTensorVersioned._fields_ = [
    ("version", DLPackVersion),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensorVersioned))),
    ("flags", ctypes.c_uint64),
    ("dl_tensor", DLTensor),
]

_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype = ctypes.c_char_p
_capsule_name.argtypes = [ctypes.py_object]

KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_ROCM, KDL_CUDA_MANAGED = 1, 2, 3, 10, 13
DT_F16, DT_BF16, DT_F32, DT_I8 = (2, 16, 1), (4, 16, 1), (2, 32, 1), (0, 8, 1)
READ_ONLY = 1


class FakeDLPack:
    """Exports one DLTensor it describes field by field. No destructor is installed on the
    capsule (so no Python runs during its deallocation); instead the producer keeps its own
    reference to every capsule it made, and tests check the consumer gave its reference
    back (refcount) and did not rename the capsule (name)."""

    def __init__(self, shape, strides=None, dtype=DT_F16, device=(KDL_CPU, 0), data=None, byte_offset=0,
                 versioned=True, version=(1, 0), flags=0, old_protocol=False, capsule_name=None,
                 backing=None, dlpack_device=None, raise_on_export=None):
        self.backing = backing  # keeps real memory alive when data points into it
        self.shape_arr = (ctypes.c_int64 * len(shape))(*shape)
        self.strides_arr = None if strides is None else (ctypes.c_int64 * len(strides))(*strides)
        self.dtype = dtype
        self.device = device
        self.dlpack_device = dlpack_device or device
        self.data = data if data is not None else 0x7F0000000000
        self.byte_offset = byte_offset
        self.versioned = versioned
        self.version = version
        self.flags = flags
        self.old_protocol = old_protocol  # raise TypeError on max_version, like pre-1.0 exporters
        self.capsule_name = capsule_name
        self.raise_on_export = raise_on_export
        self.calls = []
        self.capsules = []
        self._keep = []

    def _dltensor(self):
        t = DLTensor()
        t.data = self.data
        t.device = DLDevice(*self.device)
        t.ndim = len(self.shape_arr)
        t.dtype = DLDataType(*self.dtype)
        t.shape = ctypes.cast(self.shape_arr, ctypes.POINTER(ctypes.c_int64))
        t.strides = (ctypes.cast(self.strides_arr, ctypes.POINTER(ctypes.c_int64))
                     if self.strides_arr is not None else None)
        t.byte_offset = self.byte_offset
        return t

    def __dlpack_device__(self):
        return self.dlpack_device

    def __dlpack__(self, *, stream=None, max_version=None, **kwargs):
        self.calls.append({"stream": stream, "max_version": max_version, **kwargs})
        if self.old_protocol and max_version is not None:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'max_version'")
        if self.raise_on_export is not None:
            raise self.raise_on_export
        if self.versioned and max_version is not None:
            m = DLManagedTensorVersioned()
            m.version = DLPackVersion(*self.version)
            m.flags = self.flags
            m.dl_tensor = self._dltensor()
            name = self.capsule_name or b"dltensor_versioned"
        else:
            m = DLManagedTensor()
            m.dl_tensor = self._dltensor()
            name = self.capsule_name or b"dltensor"
        name_buf = ctypes.create_string_buffer(name)
        self._keep += [m, name_buf]
        cap = _capsule_new(ctypes.addressof(m), name_buf, None)
        self.capsules.append(cap)
        return cap

    def assert_released(self):
        for cap in self.capsules:
            # 1 in self.capsules + 1 for getrefcount's argument (+1 for the loop variable).
            assert sys.getrefcount(cap) <= 3, "the consumer kept a reference to the DLPack capsule"
            assert _capsule_name(cap) in (b"dltensor", b"dltensor_versioned") or self.capsule_name, \
                "the consumer renamed the capsule"


class Forward:
    """Forwards the DLPack protocol to a real exporter (torch or NumPy), so the DLPack
    route is taken instead of the torch/NumPy fast paths."""

    def __init__(self, t):
        self.t = t
        self.calls = []

    def __dlpack__(self, **kw):
        self.calls.append(kw)
        return self.t.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()


# ----------------------------------------------------------------------------------------
# torch fast path
# ----------------------------------------------------------------------------------------

def test_torch_hnd_contiguous_fields():
    q = torch.randn(2, 8, 128, 64, dtype=F16)
    k = torch.randn(2, 8, 96, 64, dtype=F16)
    v = torch.randn(2, 8, 96, 64, dtype=F16)
    o = torch.empty_like(q)
    r = check(q, k, v, o)
    assert (r["batch"], r["heads_q"], r["heads_kv"], r["seq_q"], r["seq_k"], r["head_dim"]) == (2, 8, 8, 128, 96, 64)
    assert r["dtype"] == "float16" and r["layout"] == "HND"
    assert r["device_type"] == "cpu" and r["device"] == -1
    assert r["q_ptr"] == q.data_ptr() and r["k_ptr"] == k.data_ptr() and r["v_ptr"] == v.data_ptr()
    assert r["o_ptr"] == o.data_ptr()
    assert r["q_strides"] == q.stride()[:3] and r["k_strides"] == k.stride()[:3]
    assert r["o_strides"] == o.stride()[:3]
    assert r["sm_scale"] == pytest.approx(64 ** -0.5)
    assert r["has_out"] is True


def test_torch_without_out():
    q = torch.randn(1, 2, 16, 32, dtype=BF16)
    r = check(q, q, q)
    assert r["has_out"] is False and r["o_ptr"] is None and r["o_strides"] is None
    assert r["dtype"] == "bfloat16"


def test_torch_transposed_nhd_view_as_hnd():
    # (B, S, H, D) storage seen as (B, H, S, D) through transpose: strides are not monotonic.
    base = torch.randn(2, 40, 4, 64, dtype=F16)
    q = base.transpose(1, 2)
    r = check(q, q, q, layout="HND")
    assert r["q_strides"] == (q.stride(0), q.stride(1), q.stride(2)) == (40 * 4 * 64, 64, 4 * 64)
    assert (r["heads_q"], r["seq_q"]) == (4, 40)


def test_torch_nhd_layout():
    q = torch.randn(2, 40, 4, 64, dtype=F16)
    k = torch.randn(2, 24, 4, 64, dtype=F16)
    o = torch.empty_like(q)
    r = check(q, k, k, o, layout="NHD")
    assert (r["heads_q"], r["seq_q"], r["seq_k"]) == (4, 40, 24)
    assert r["q_strides"] == (q.stride(0), q.stride(2), q.stride(1))
    assert r["o_strides"] == (o.stride(0), o.stride(2), o.stride(1))


def test_layout_case_insensitive_and_default():
    q = torch.randn(1, 2, 16, 32, dtype=F16)
    assert check(q, q, q, layout="hnd")["layout"] == "HND"
    assert check(q, q, q, layout="Nhd")["layout"] == "NHD"
    assert check(q, q, q, layout=None)["layout"] == "HND"


def test_torch_sliced_views_offset_pointers():
    big = torch.randn(3, 10, 300, 128, dtype=F16)
    q = big[1:, 2:6, 8:136, :64]  # offset base, sliced head dim: s stride 128
    k = big[:2, 1:3, 40:240, 64:]
    r = check(q, k, k, heads=4)
    assert r["q_ptr"] == q.data_ptr() != big.data_ptr()
    assert r["k_ptr"] == k.data_ptr()
    assert r["q_strides"] == q.stride()[:3]
    assert (r["batch"], r["heads_q"], r["heads_kv"], r["seq_q"], r["seq_k"], r["head_dim"]) == (2, 4, 2, 128, 200, 64)
    assert r["gqa_group"] == 2


def test_flat_views_of_packed_qkv_buffer():
    # ComfyUI hands (B, S, H*D); here q, k, v are column blocks of one packed buffer.
    B, S, H, D = 2, 77, 6, 64
    qkv = torch.randn(B, S, 3 * H * D, dtype=BF16)
    q, k, v = qkv[..., : H * D], qkv[..., H * D: 2 * H * D], qkv[..., 2 * H * D:]
    o = torch.empty(B, S, H * D, dtype=BF16)
    r = check(q, k, v, o, layout="NHD_FLAT", heads=H)
    assert (r["batch"], r["heads_q"], r["heads_kv"], r["seq_q"], r["head_dim"]) == (B, H, H, S, D)
    assert r["q_strides"] == (S * 3 * H * D, D, 3 * H * D)
    assert r["o_strides"] == (S * H * D, D, H * D)
    assert r["k_ptr"] - r["q_ptr"] == H * D * 2
    assert r["v_ptr"] - r["q_ptr"] == 2 * H * D * 2


def test_flat_gqa_heads_follow_from_head_dim():
    B, S, D = 1, 33, 64
    q = torch.randn(B, S, 8 * D, dtype=F16)
    kv = torch.randn(B, 50, 2 * D, dtype=F16)
    r = check(q, kv, kv, layout="NHD_FLAT", heads=8)
    assert (r["heads_q"], r["heads_kv"], r["head_dim"], r["seq_k"]) == (8, 2, D, 50)


@pytest.mark.parametrize("hkv", [1, 2, 4])
def test_gqa_and_mqa(hkv):
    q = torch.randn(2, 8, 64, 128, dtype=F16)
    k = torch.randn(2, hkv, 80, 128, dtype=F16)
    r = check(q, k, k)
    assert r["heads_kv"] == hkv and r["gqa_group"] == 8 // hkv
    # MQA: the head stride of a size-1 dim never addresses anything and is reported as 0.
    assert r["k_strides"][1] == (0 if hkv == 1 else k.stride(1))


def test_expanded_kv_stride_zero_is_fine_for_inputs():
    q = torch.randn(1, 8, 64, 64, dtype=F16)
    k = torch.randn(1, 1, 64, 64, dtype=F16).expand(1, 8, 64, 64)
    assert k.stride(1) == 0
    r = check(q, k, k)
    assert r["heads_kv"] == 8 and r["k_strides"][1] == 0


def test_torch_parameter_subclass_takes_fast_path():
    q = torch.nn.Parameter(torch.randn(1, 2, 16, 32, dtype=F16), requires_grad=False)
    assert check(q, q, q)["q_ptr"] == q.data_ptr()


def test_torch_meta_tensor_is_not_cpu():
    # get_device() is -1 for meta tensors too; they must not pass as CPU.
    q = torch.empty(1, 2, 16, 32, dtype=F16, device="meta")
    with pytest.raises(_C.UnsupportedError, match="^device: tensors are on a device other than CPU/CUDA"):
        check(q, q, q)


def test_torch_sparse_is_a_type_error_naming_the_argument():
    q = torch.randn(1, 2, 16, 32, dtype=F16)
    with pytest.raises(TypeError, match=r"^k: ") as ei:
        check(q, q.to_sparse(), q)
    assert ei.value.__cause__ is not None  # torch's own reason is kept


def test_torch_rank_limits():
    with pytest.raises(ValueError, match=r"q: expected a tensor with 1 to 4 dimensions.*5-d"):
        check(torch.zeros(1, 1, 1, 1, 1, dtype=F16), torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match=r"q: expected a tensor with 1 to 4 dimensions.*0-d"):
        check(torch.tensor(1.0, dtype=F16), torch.zeros(1), torch.zeros(1))


@pytest.mark.parametrize("dtype,name", [(torch.float32, "torch.float32"), (torch.float64, "torch.float64"),
                                        (torch.int8, "torch.int8"), (torch.bool, "torch.bool"),
                                        (torch.complex64, "torch.complex64"),
                                        (torch.float8_e4m3fn, "torch.float8_e4m3fn")])
def test_torch_unsupported_dtypes_are_named(dtype, name):
    q = torch.zeros(1, 2, 16, 32, dtype=F16)
    bad = torch.zeros(1, 2, 16, 32).to(dtype)
    if name in ("torch.float32", "torch.float64"):  # a valid dtype, but not q's
        with pytest.raises(TypeError, match=rf"^v: dtype {name[6:]} differs from q's float16"):
            check(q, q, bad)
    else:
        with pytest.raises(TypeError, match=rf"^v: dtype must be a floating type .*, got {name} "):
            check(q, q, bad)


def test_torch_not_imported_by_us_and_found_later():
    code = textwrap.dedent("""
        import numpy as np
        a = np.zeros((1, 2, 16, 32), np.float16)
        r = _C.check_attention(a, a, a, allow_cpu=True)
        assert r["head_dim"] == 32
        assert "torch" not in sys.modules, "intake imported torch"
        import torch
        t = torch.zeros(1, 2, 16, 32, dtype=torch.float16)
        r = _C.check_attention(t, t, t, allow_cpu=True)
        assert r["q_ptr"] == t.data_ptr()
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", _standalone_ext_loader() + code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")


def _standalone_ext_loader() -> str:
    """Code that loads sageattn3._C without executing sageattn3/__init__.py (which may import
    torch for the public API), so the test sees only what the extension itself imports."""
    import importlib.util
    spec = importlib.util.find_spec("sageattn3._C")
    return textwrap.dedent(f"""
        import importlib.machinery, importlib.util, sys, types
        _pkg = types.ModuleType("sageattn3"); _pkg.__path__ = []; sys.modules["sageattn3"] = _pkg
        _loader = importlib.machinery.ExtensionFileLoader("sageattn3._C", {spec.origin!r})
        _spec = importlib.util.spec_from_loader("sageattn3._C", _loader)
        _C = importlib.util.module_from_spec(_spec); _loader.exec_module(_C)
        sys.modules["sageattn3._C"] = _C; _pkg._C = _C
    """)


# ----------------------------------------------------------------------------------------
# NumPy route
# ----------------------------------------------------------------------------------------

def test_numpy_matches_torch_view_of_same_memory():
    t = torch.randn(2, 40, 4, 64, dtype=F16)
    a = t.numpy()
    rt = check(t, t, t, layout="NHD")
    ra = check(a, a, a, layout="NHD")
    for key in ("q_ptr", "q_strides", "batch", "heads_q", "seq_q", "head_dim", "dtype"):
        assert rt[key] == ra[key], key


def test_numpy_strides_become_elements():
    a = np.zeros((2, 6, 50, 96), np.float16)[:, 1:5, ::2, 16:80]
    r = check(a, a, a)
    assert r["q_strides"] == elem_strides_np(a)[:3]
    assert r["q_ptr"] == a.__array_interface__["data"][0]
    assert (r["heads_q"], r["seq_q"], r["head_dim"]) == (4, 25, 64)


def test_numpy_readonly_inputs_are_fine():
    a = np.zeros((1, 2, 16, 32), np.float16)
    a.flags.writeable = False
    o = np.zeros_like(a)
    assert check(a, a, a, o)["has_out"]


def test_numpy_float32_is_named():
    a = np.zeros((1, 2, 16, 32), np.float16)
    with pytest.raises(TypeError, match=r"^q: dtype must be a floating type .*, got int32 "):
        check(a.astype(np.int32), a, a)
    with pytest.raises(TypeError, match=r"^k: dtype float16 differs from q's float32"):
        check(a.astype(np.float32), a, a)


def test_numpy_byteswapped_is_rejected():
    a = np.zeros((1, 2, 16, 32), np.float16)
    with pytest.raises(TypeError, match="non-native byte order"):
        check(a, a.astype(a.dtype.newbyteorder()), a)


def test_numpy_stride_not_multiple_of_itemsize():
    rec = np.zeros((1, 2, 16, 32), dtype=[("x", "<f2"), ("pad", "u1")])
    x = rec["x"]  # byte strides are multiples of 3, itemsize 2
    with pytest.raises(ValueError, match=r"^q: byte strides .* not all multiples of its item size 2"):
        check(x, x, x)


def test_numpy_ml_dtypes_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = np.zeros((1, 2, 16, 32), ml_dtypes.bfloat16)
    assert check(a, a, a)["dtype"] == "bfloat16"


def test_numpy_rank_limits():
    with pytest.raises(ValueError, match=r"^out: expected an array with 1 to 4 dimensions, got a 5-d"):
        a = np.zeros((1, 2, 16, 32), np.float16)
        check(a, a, a, np.zeros((1, 1, 2, 16, 32), np.float16))


# ----------------------------------------------------------------------------------------
# DLPack route
# ----------------------------------------------------------------------------------------

def test_dlpack_forwarding_torch_and_numpy():
    t = torch.randn(2, 4, 40, 64, dtype=BF16)[:, :, 3:35]
    r = check(Forward(t), Forward(t), Forward(t))
    assert r["q_ptr"] == t.data_ptr() and r["q_strides"] == t.stride()[:3]
    a = np.zeros((2, 40, 4, 64), np.float16)
    r = check(Forward(a), Forward(a), Forward(a), layout="NHD")
    assert r["q_strides"] == (40 * 4 * 64, 64, 4 * 64)


def test_dlpack_asks_for_versioned_capsule_and_passes_none_stream_on_cpu():
    f = Forward(torch.zeros(1, 2, 16, 32, dtype=F16))
    check(f, f, f, stream=12345)
    for call in f.calls:
        assert call["stream"] is None  # CPU: stream must be None
        assert call["max_version"] == (1, 0)


def test_dlpack_readonly_numpy_output_through_versioned_capsule():
    a = np.zeros((1, 2, 16, 32), np.float16)
    o = np.zeros_like(a)
    o.flags.writeable = False
    with pytest.raises(ValueError, match="out: is read-only"):
        check(a, a, a, Forward(o))


def test_fake_dlpack_byte_offset_and_null_strides():
    buf = np.zeros(4096, np.float16)
    base = buf.__array_interface__["data"][0]
    base += (-base) % 64
    f = FakeDLPack((1, 2, 16, 32), strides=None, data=base, byte_offset=128, backing=buf)
    r = check(f, f, f)
    assert r["q_ptr"] == base + 128
    assert r["q_strides"] == (0, 16 * 32, 32)  # compact row-major; batch of 1 -> 0
    f.assert_released()


def test_fake_dlpack_unversioned_fallback_on_type_error():
    f = FakeDLPack((1, 2, 16, 32), strides=(1024, 512, 32, 1), old_protocol=True)
    r = check(f, f, f)
    assert r["q_strides"] == (0, 512, 32)
    assert [c["max_version"] for c in f.calls[:2]] == [(1, 0), None]
    f.assert_released()


def test_fake_dlpack_unversioned_capsule_even_when_asked_for_versioned():
    f = FakeDLPack((1, 2, 16, 32), versioned=False)
    assert check(f, f, f)["head_dim"] == 32
    f.assert_released()


def test_fake_dlpack_versioned_read_only_flag():
    q = FakeDLPack((1, 2, 16, 32))
    o = FakeDLPack((1, 2, 16, 32), flags=READ_ONLY, data=0x7F0000100000)
    assert check(q, q, q)["head_dim"] == 32  # read-only inputs: fine
    with pytest.raises(ValueError, match="out: is read-only"):
        check(q, q, q, o)
    q.assert_released()
    o.assert_released()


def test_fake_dlpack_newer_major_version_is_refused():
    f = FakeDLPack((1, 2, 16, 32), version=(2, 0))
    with pytest.raises(TypeError, match=r"q: .* DLPack 2\.0 tensor; this build reads 1\.x only"):
        check(f, f, f)
    f.assert_released()


def test_fake_dlpack_cuda_device_and_stream_mapping():
    q = FakeDLPack((1, 2, 16, 32), device=(KDL_CUDA, 1), data=0x7F0000000000)
    o = FakeDLPack((1, 2, 16, 32), device=(KDL_CUDA, 1), data=0x7F0000100000)
    r = _C.check_attention(q, q, q, o, stream=0)  # CUDA: no allow_cpu needed
    assert r["device_type"] == "cuda" and r["device"] == 1
    assert {c["stream"] for c in q.calls} == {1}  # 0 is ambiguous in DLPack: legacy default = 1
    q.calls.clear()
    _C.check_attention(q, q, q, stream=0x5555AAAA)
    assert {c["stream"] for c in q.calls} == {0x5555AAAA}
    q.calls.clear()
    _C.check_attention(q, q, q, stream=-1)
    assert {c["stream"] for c in q.calls} == {-1}
    q.calls.clear()
    _C.check_attention(q, q, q)  # stream=None: legacy default
    assert {c["stream"] for c in q.calls} == {1}
    q.assert_released()
    o.assert_released()


def test_fake_dlpack_cuda_host_is_cpu_and_managed_is_cuda():
    h = FakeDLPack((1, 2, 16, 32), device=(KDL_CUDA_HOST, 0))
    assert check(h, h, h)["device_type"] == "cpu"
    m = FakeDLPack((1, 2, 16, 32), device=(KDL_CUDA_MANAGED, 0))
    assert _C.check_attention(m, m, m)["device_type"] == "cuda"


def test_fake_dlpack_rocm_is_unsupported():
    f = FakeDLPack((1, 2, 16, 32), device=(KDL_ROCM, 0))
    with pytest.raises(_C.UnsupportedError, match="^device: tensors are on a device other than CPU/CUDA"):
        check(f, f, f)


@pytest.mark.parametrize("dtype,name", [(DT_F32, "float32"), (DT_I8, "int8"), ((2, 16, 2), "lanes"),
                                        ((9, 8, 1), "float8")])
def test_fake_dlpack_dtypes(dtype, name):
    q = FakeDLPack((1, 2, 16, 32))
    bad = FakeDLPack((1, 2, 16, 32), dtype=dtype)
    if name == "float32":  # valid, but not q's
        with pytest.raises(TypeError, match=r"^k: dtype float32 differs from q's float16"):
            check(q, bad, q)
    else:
        with pytest.raises(TypeError, match=rf"^k: dtype must be a floating type .*, got .*{name}"):
            check(q, bad, q)
    bad.assert_released()


def test_fake_dlpack_bf16():
    f = FakeDLPack((1, 2, 16, 32), dtype=DT_BF16)
    assert check(f, f, f)["dtype"] == "bfloat16"


def test_fake_dlpack_bad_exports():
    q = FakeDLPack((1, 2, 16, 32))
    with pytest.raises(ValueError, match="negative size"):
        check(q, FakeDLPack((1, -2, 16, 32)), q)
    with pytest.raises(ValueError, match="5-d DLPack tensor"):
        check(q, FakeDLPack((1, 1, 2, 16, 32)), q)
    with pytest.raises(TypeError, match="not an unused"):
        check(q, FakeDLPack((1, 2, 16, 32), capsule_name=b"used_dltensor"), q)
    with pytest.raises(TypeError, match=r"k: .*__dlpack__\(stream=None\) failed") as ei:
        check(q, FakeDLPack((1, 2, 16, 32), raise_on_export=BufferError("nope")), q)
    assert isinstance(ei.value.__cause__, BufferError)

    class BadDevice(FakeDLPack):
        def __dlpack_device__(self):
            return "cuda"

    with pytest.raises(TypeError, match=r"__dlpack_device__\(\) returned 'cuda'"):
        check(q, BadDevice((1, 2, 16, 32)), q)


def test_fake_dlpack_capsules_released_on_every_path():
    good = FakeDLPack((1, 2, 16, 32))
    for _ in range(50):
        check(good, good, good)
        with pytest.raises(ValueError):
            check(good, good, FakeDLPack((1, 2, 8, 32)))  # k/v length mismatch, after 3 exports
        with pytest.raises(TypeError):
            check(good, good, good, "out")  # out fails after q, k, v were exported
    good.assert_released()


def test_no_reference_leaks():
    q = torch.zeros(1, 2, 16, 32, dtype=F16)
    a = np.zeros((1, 2, 16, 32), np.float16)
    before = (sys.getrefcount(q), sys.getrefcount(a))
    for _ in range(200):
        check(q, q, q)
        check(a, a, a)
        with pytest.raises(ValueError):
            check(q, q, q, q)
        with pytest.raises(TypeError):
            check(a, a, q.float())
    assert (sys.getrefcount(q), sys.getrefcount(a)) == before
