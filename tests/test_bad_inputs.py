"""Every argument check of sageattn3._C.check_attention (csrc/sa3_check.c, sa3_intake.c), CPU only.

Each check has a test that fails if the check is removed: the inputs differ from a passing
call in exactly the property being checked. Three kinds of outcome:
  TypeError / ValueError   the call is wrong (SDPA would refuse it too),
  _C.UnsupportedError      a valid call our kernels can't serve (a ValueError subclass; the
                           Python layer falls back to SDPA),
  a dict                   accepted.
Every call goes through `call()`, which also checks that no input changed by a single bit.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from sageattn3 import _C

torch = pytest.importorskip("torch")

from test_intake import KDL_CUDA, READ_ONLY, FakeDLPack, snapshot  # noqa: E402  (shared helpers)

F16 = torch.float16
BF16 = torch.bfloat16
Unsupported = _C.UnsupportedError


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def call(q, k, v, out=None, **kw):
    objs = [x for x in (q, k, v, out) if x is not None]
    before = [snapshot(x) for x in objs]
    try:
        return _C.check_attention(q, k, v, out, **kw)
    finally:
        for x, b in zip(objs, before):
            assert b is None or snapshot(x) == b, "check_attention modified an input"


def ok(q, k, v, out=None, **kw):
    kw.setdefault("allow_cpu", True)
    return call(q, k, v, out, **kw)


class Unreadable(np.ndarray):
    """as_strided views that point outside their buffer: never print their contents (pytest
    reprs call arguments on failure, and reading such a view would crash the run)."""

    def __repr__(self):
        return f"<as_strided view shape={self.shape} strides={self.strides} dtype={self.dtype}>"

    __str__ = __repr__


def strided(buf, shape, strides):
    return np.lib.stride_tricks.as_strided(buf, shape=shape, strides=strides).view(Unreadable)


def t(*shape, dtype=F16):
    return torch.randn(*shape).to(dtype)


def qkvo(B=1, H=2, S=16, D=32, Hkv=None, Sk=None, dtype=F16):
    Hkv = Hkv or H
    Sk = Sk or S
    return t(B, H, S, D, dtype=dtype), t(B, Hkv, Sk, D, dtype=dtype), t(B, Hkv, Sk, D, dtype=dtype), \
        torch.empty(B, H, S, D, dtype=dtype)


def test_baseline_passes():
    q, k, v, o = qkvo()
    assert ok(q, k, v, o)["head_dim"] == 32


# ----------------------------------------------------------------------------------------
# TypeError
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.int16, torch.uint8, torch.bool, torch.complex64])
def test_dtype_not_floating(which, dtype):
    args = list(qkvo())
    args[which] = args[which].to(dtype)
    name = ["q", "k", "v"][which]
    with pytest.raises(TypeError, match=rf"^{name}: dtype must be a floating type \(float16, bfloat16, float32 or "
                                        rf"float64\), got torch\.") as ei:
        ok(*args)
    msg = str(ei.value)
    assert "shape (1, 2, 16, 32)" in msg and "strides (1024, 512, 32, 1)" in msg and "cpu" in msg


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_wide_float_is_valid_but_no_kernel_takes_it(dtype):
    # float32/float64 are valid calls (SDPA serves them), not ones the kernels take.
    args = [a.to(dtype) for a in qkvo()]
    with pytest.raises(Unsupported, match=rf"^dtype: kernels take float16/bfloat16, got {str(dtype)[6:]}"):
        ok(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int16])
def test_out_dtype_must_be_q_dtype(dtype):
    q, k, v, o = qkvo()
    with pytest.raises(TypeError, match=r"^out: dtype must be q's float16"):
        ok(q, k, v, o.to(dtype))


@pytest.mark.parametrize("which", [1, 2])
def test_dtypes_differ(which):
    args = list(qkvo())
    args[which] = args[which].to(BF16)
    name = ["q", "k", "v"][which]
    with pytest.raises(TypeError, match=rf"^{name}: dtype bfloat16 differs from q's float16"):
        ok(*args)


# ----------------------------------------------------------------------------------------
# ValueError: shapes
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,shape", [("HND", (2, 16, 32)), ("NHD", (1, 2, 16)), ("NHD_FLAT", (1, 16, 2, 32))])
def test_rank_wrong_for_layout(layout, shape):
    q = t(*shape)
    with pytest.raises(ValueError, match=rf"^q: layout {layout} needs a {4 if layout != 'NHD_FLAT' else 3}-d"):
        ok(q, q, q, layout=layout, heads=2)


def test_batch_mismatch():
    q, k, v, o = qkvo(B=2)
    with pytest.raises(ValueError, match=r"^k: batch 1 differs from q's batch 2"):
        ok(q, k[:1], v[:1], o)
    with pytest.raises(ValueError, match=r"^v: batch 1 differs"):
        ok(q, k, v[:1], o)


def test_head_dim_mismatch_between_q_and_k():
    q, k, v, o = qkvo(D=64)
    with pytest.raises(ValueError, match=r"^k: head dim 32 differs from q's head dim 64"):
        ok(q, k[..., :32], v, o)


def test_kv_heads_or_length_mismatch():
    q, k, v, o = qkvo(H=4, Sk=24)
    with pytest.raises(ValueError, match=r"^v: heads/sequence length \(2, 24\) differ from k's \(4, 24\)"):
        ok(q, k, v[:, :2], o)
    with pytest.raises(ValueError, match=r"^v: heads/sequence length \(4, 20\) differ from k's \(4, 24\)"):
        ok(q, k, v[:, :, :20], o)


def test_heads_not_a_multiple():
    q, k, v, o = qkvo(H=6, Hkv=4)
    with pytest.raises(ValueError, match=r"q has 6 heads, not a multiple of k/v's 4 heads"):
        ok(q, k, v, o)


@pytest.mark.parametrize("heads", [None, 0, -3])
def test_flat_needs_positive_heads(heads):
    q = t(1, 16, 64)
    with pytest.raises(ValueError, match="heads must be"):
        ok(q, q, q, layout="NHD_FLAT", heads=heads)


def test_flat_last_dim_not_heads_times_d():
    q = t(1, 16, 100)
    with pytest.raises(ValueError, match=r"^q: last dim 100 is not heads \(3\) \* head dim"):
        ok(q, q, q, layout="NHD_FLAT", heads=3)


def test_flat_kv_last_dim_not_multiple_of_d():
    q = t(1, 16, 4 * 32)
    kv = t(1, 16, 48)
    with pytest.raises(ValueError, match=r"^k: last dim 48 is not a positive multiple of the head dim 32"):
        ok(q, kv, q, layout="NHD_FLAT", heads=4)


def test_heads_given_for_4d_layout_must_match():
    q, k, v, o = qkvo(H=2)
    assert ok(q, k, v, o, heads=2)["heads_q"] == 2
    with pytest.raises(ValueError, match=r"heads=3 but q \(layout HND\) has 2 heads"):
        ok(q, k, v, o, heads=3)


def test_last_stride_non_unit_torch():
    q, k, v, o = qkvo(D=64)
    wide = t(1, 2, 16, 128)
    # SDPA takes such views, so it is "unsupported" (the caller falls back), not invalid
    with pytest.raises(_C.UnsupportedError, match=r"^strides: k: head-dim stride 2, kernels need 1"):
        ok(q, wide[..., ::2], v, o)


def test_last_stride_negative_numpy():
    a = np.zeros((1, 2, 16, 32), np.float16)
    with pytest.raises(_C.UnsupportedError, match=r"^strides: v: head-dim stride -1, kernels need 1"):
        ok(a, a, a[..., ::-1])


@pytest.mark.parametrize("bad", [(1, 2, 15, 32), (1, 1, 16, 32), (2, 2, 16, 32), (1, 16, 2, 32)])
def test_out_shape_differs(bad):
    q, k, v, _ = qkvo()
    with pytest.raises(ValueError, match=r"^out: shape must match q's"):
        ok(q, k, v, torch.empty(bad, dtype=F16))


def test_out_read_only_numpy():
    a = np.zeros((1, 2, 16, 32), np.float16)
    o = np.zeros_like(a)
    assert ok(a, a, a, o)["has_out"]
    o.flags.writeable = False
    with pytest.raises(ValueError, match=r"^out: is read-only"):
        ok(a, a, a, o)


def test_out_read_only_dlpack_flag():
    q = FakeDLPack((1, 2, 16, 32), data=0x7F0000000000)
    o = FakeDLPack((1, 2, 16, 32), data=0x7F0000100000, flags=READ_ONLY)
    with pytest.raises(ValueError, match=r"^out: is read-only"):
        ok(q, q, q, o)


# ----------------------------------------------------------------------------------------
# ValueError: aliasing
# ----------------------------------------------------------------------------------------

def test_out_is_q():
    q, k, v, _ = qkvo()
    with pytest.raises(ValueError, match=r"^out: its memory overlaps q's"):
        ok(q, k, v, q)


def test_out_overlaps_shifted_view_of_q():
    buf = t(1, 2, 17, 32)
    q, o = buf[:, :, :16], buf[:, :, 1:]
    k = t(1, 2, 16, 32)
    with pytest.raises(ValueError, match=r"^out: its memory overlaps q's"):
        ok(q, k, k, o)


@pytest.mark.parametrize("which", [1, 2])
def test_out_overlaps_k_or_v(which):
    q, k, v, _ = qkvo()
    args = [q, k, v]
    with pytest.raises(ValueError, match=rf"^out: its memory overlaps {'kv'[which - 1]}'s"):
        ok(*args, args[which])


def test_out_disjoint_half_of_same_buffer_is_fine():
    buf = t(1, 2, 32, 32)
    q, o = buf[:, :, :16], buf[:, :, 16:]
    # ranges interleave per head: [h0 q][h0 o][h1 q][h1 o] -> spans overlap -> refused
    with pytest.raises(ValueError, match="overlaps"):
        ok(q, q, q, o)
    buf = t(2, 1, 2, 16, 32)
    assert ok(buf[0], buf[0], buf[0], buf[1])["has_out"]  # separate halves: accepted


def test_out_expanded_stride_zero():
    q, k, v, _ = qkvo()
    o = torch.empty(1, 1, 16, 32, dtype=F16).expand(1, 2, 16, 32)
    with pytest.raises(ValueError, match=r"^out: has stride 0 in a dimension of size > 1"):
        ok(q, k, v, o)


def test_out_interleaved_strides_are_unsupported_not_wrong():
    # Non-overlapping but not provably so by the sorted-stride test: heads stride 96, seq 64.
    buf = torch.empty(4096, dtype=F16)
    o = torch.as_strided(buf, (1, 2, 3, 32), (4096, 96, 64, 1))
    q = t(1, 2, 3, 32)
    with pytest.raises(Unsupported, match=r"^out_strides: out's strides interleave"):
        ok(q, q, q, o)


# ----------------------------------------------------------------------------------------
# ValueError: devices
# ----------------------------------------------------------------------------------------

def test_mixed_cpu_and_meta():
    q, k, v, o = qkvo()
    with pytest.raises(ValueError, match=r"^k is on a non-CPU/CUDA device but q is on cpu"):
        ok(q, k.to("meta"), v, o)


def test_mixed_cpu_and_cuda():
    q = t(1, 2, 16, 32)
    kc = FakeDLPack((1, 2, 16, 32), device=(KDL_CUDA, 0))
    with pytest.raises(ValueError, match=r"^k is on cuda:0 but q is on cpu"):
        ok(q, kc, q)


def test_different_cuda_devices():
    a = FakeDLPack((1, 2, 16, 32), device=(KDL_CUDA, 0), data=0x7F0000000000)
    b = FakeDLPack((1, 2, 16, 32), device=(KDL_CUDA, 1), data=0x7F0000100000)
    assert call(a, a, a)["device"] == 0
    with pytest.raises(ValueError, match=r"^v is on cuda:1 but q is on cuda:0"):
        call(a, a, b)


# ----------------------------------------------------------------------------------------
# ValueError: int64 overflow (must raise, never crash)
# ----------------------------------------------------------------------------------------

def test_overflow_numpy_as_strided_huge_strides():
    tiny = np.zeros(64, np.float16)
    q = np.zeros((2, 2, 2, 32), np.float16)
    huge = strided(tiny, (2, 2, 2, 32), (2 ** 62, 2 ** 62, 2 ** 62, 2))  # 3 * 2^62 bytes > INT64_MAX
    with pytest.raises(ValueError, match=r"^k: the memory its shape and strides span overflows int64"):
        ok(q, huge, huge)


def test_overflow_single_term():
    tiny = np.zeros(64, np.float16)
    huge = strided(tiny, (3, 2, 16, 32), (2 ** 62, 64, 64 * 2, 2))
    # 2 * 2^62 bytes = 2^63 > INT64_MAX
    with pytest.raises(ValueError, match="overflows int64"):
        ok(np.zeros((3, 2, 16, 32), np.float16), huge, huge)


def test_overflow_dlpack_element_strides_times_itemsize():
    q = FakeDLPack((1, 2, 16, 32), data=0x10000)
    k = FakeDLPack((1, 2, 16, 32), strides=(0, 2 ** 62, 32, 1), data=0x10000)  # 2^62 elements * 2 bytes
    with pytest.raises(ValueError, match="overflows int64"):
        ok(q, k, q)


def test_overflow_address_wraps():
    q = FakeDLPack((1, 2, 16, 32), data=0x10000)
    top = FakeDLPack((1, 2, 16, 32), data=2 ** 64 - 1024)  # spans 2048 bytes: wraps the address space
    with pytest.raises(ValueError, match="overflows int64"):
        ok(q, top, q)
    low = FakeDLPack((1, 2, 16, 32), strides=(0, 512, -32, 1), data=0x100)  # goes below address 0
    with pytest.raises(ValueError, match="overflows int64"):
        ok(q, low, q)


def test_overflow_dlpack_null_strides_product():
    q = FakeDLPack((1, 2, 16, 32))
    k = FakeDLPack((2 ** 40, 2 ** 40, 2 ** 40, 32), strides=None)
    with pytest.raises(ValueError, match="overflows int64"):
        ok(q, k, k)


# ----------------------------------------------------------------------------------------
# UnsupportedError: valid calls the kernels can't serve
# ----------------------------------------------------------------------------------------

def test_unsupported_is_a_value_error():
    assert issubclass(Unsupported, ValueError)


def test_cpu_without_allow_cpu():
    q, k, v, o = qkvo()
    with pytest.raises(Unsupported, match=r"^cpu: tensors are on the CPU"):
        call(q, k, v, o)


@pytest.mark.parametrize("dims", [dict(B=0), dict(H=0, Hkv=1), dict(S=0), dict(Sk=0), dict(D=0)])
def test_zero_sized_dims(dims):
    B, H, S, D = dims.get("B", 1), dims.get("H", 2), dims.get("S", 16), dims.get("D", 32)
    Hkv, Sk = dims.get("Hkv", H), dims.get("Sk", S)
    q = torch.zeros(B, H, S, D, dtype=F16)
    k = torch.zeros(B, Hkv, Sk, D, dtype=F16)
    with pytest.raises(Unsupported, match=r"^empty: a zero-sized dimension"):
        ok(q, k, k, torch.zeros_like(q))


@pytest.mark.parametrize("hq", [0, 2])
def test_zero_kv_heads_is_invalid(hq):
    # SDPA divides by k's heads (SIGFPE): no k/v heads is never a valid call.
    q = torch.zeros(1, hq, 16, 32, dtype=F16)
    k = torch.zeros(1, 0, 16, 32, dtype=F16)
    with pytest.raises(ValueError, match=r"^k: has 0 heads"):
        ok(q, k, k)


def test_zero_sized_flat_head_dim():
    q = torch.zeros(1, 16, 0, dtype=F16)
    with pytest.raises(Unsupported, match="^empty: "):
        ok(q, q, q, layout="NHD_FLAT", heads=4)


@pytest.mark.parametrize("D", [16, 24, 264, 512])
def test_any_head_dim_is_valid(D):
    # Head dims are a family's business (Problem.supports: tests/test_validation.py).
    q, k, v, o = qkvo(D=D)
    assert ok(q, k, v, o)["head_dim"] == D


def test_v_head_dim_differs():
    q, k, _, _ = qkvo(D=64)
    v = t(1, 2, 16, 128)
    with pytest.raises(Unsupported, match=r"^head_dim_v: v head dim 128 differs"):
        ok(q, k, v, torch.empty(1, 2, 16, 128, dtype=F16))


@pytest.mark.parametrize("which", [0, 1, 2, 3])
def test_base_pointer_not_16_byte_aligned(which):
    args = list(qkvo())
    src = args[which]
    buf = torch.empty(src.numel() + 8, dtype=F16)
    args[which] = torch.as_strided(buf, src.shape, src.stride(), storage_offset=1)  # 2-byte offset
    with pytest.raises(Unsupported, match=rf"^misaligned: {['q', 'k', 'v', 'out'][which]}: data pointer "):
        ok(*args)
    args[which] = torch.as_strided(buf, src.shape, src.stride(), storage_offset=8)  # 16-byte offset
    assert ok(*args)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_strides_not_multiple_of_8_elements(dim):
    shape = [2, 2, 16, 32]
    stride = [2 * 16 * 40, 16 * 40, 40, 1]  # s stride 40: fine
    bad = list(stride)
    bad[dim] += 4  # 8 bytes: not a 16-byte multiple
    buf = torch.empty(4 * 16 * 48 * 2, dtype=F16)
    q = torch.as_strided(buf, shape, stride)
    k = torch.as_strided(buf, shape, bad)
    assert ok(q, q, q)
    with pytest.raises(Unsupported, match=r"^misaligned: k: "):
        ok(q, k, k)


def test_odd_stride_on_size_one_dim_is_ignored():
    buf = torch.empty(1 << 14, dtype=F16)
    q = torch.as_strided(buf, (1, 1, 16, 32), (3, 5, 32, 1))
    r = ok(q, q, q)
    assert r["q_strides"] == (0, 0, 32)


def test_sequence_longer_than_int32_is_valid():
    # valid (stride-0 views); the mma family's supports() refuses it (tests/test_validation.py)
    tiny = np.zeros(64, np.float16)
    q = np.zeros((1, 2, 16, 32), np.float16)
    long_kv = strided(tiny, (1, 2, 2 ** 31, 32), (0, 0, 0, 2))
    assert ok(q, long_kv, long_kv)["seq_k"] == 2 ** 31


def test_negative_strides_numpy():
    a = np.zeros((1, 2, 16, 32), np.float16)
    with pytest.raises(Unsupported, match=r"^strides: k: negative stride"):
        ok(a, a[:, :, ::-1], a)


def test_other_device():
    q = torch.zeros(1, 2, 16, 32, dtype=F16, device="meta")
    with pytest.raises(Unsupported, match="^device: tensors are on a device other than CPU/CUDA"):
        ok(q, q, q)


def test_unsupported_reason_prefix_is_stable():
    # The text before the first ": " is the fixed reason key: nothing from the call in it.
    keys = set()
    for off in (1, 2, 3):
        args = list(qkvo())
        buf = torch.empty(args[0].numel() + 8, dtype=F16)
        args[0] = torch.as_strided(buf, args[0].shape, args[0].stride(), storage_offset=off)
        with pytest.raises(Unsupported) as ei:
            ok(*args)
        keys.add(str(ei.value).split(": ")[0])
    assert keys == {"misaligned"}


# ----------------------------------------------------------------------------------------
# Wrong Python types for every argument
# ----------------------------------------------------------------------------------------

BAD_TENSORS = [None, [1.0, 2.0], 3, "q", object(), 1.5, b"bytes", {"a": 1}]


@pytest.mark.parametrize("which,bad", [(w, b) for w in range(4) for b in BAD_TENSORS if not (w == 3 and b is None)],
                         ids=lambda x: type(x).__name__ if not isinstance(x, int) or isinstance(x, bool) else str(x))
def test_wrong_type_for_tensor_args(which, bad):
    # (out=None is legal: it means "no output tensor".)
    args = list(qkvo())
    args[which] = bad
    name = ["q", "k", "v", "out"][which]
    with pytest.raises(TypeError, match=rf"^{name}: expected a torch.Tensor, a numpy.ndarray or an object with "
                                        rf"__dlpack__"):
        ok(*args)


@pytest.mark.parametrize("layout,exc", [(1, TypeError), (["HND"], TypeError), (b"HND", TypeError),
                                        ("XYZ", ValueError), ("HND ", ValueError), ("", ValueError),
                                        ("NHD\0", ValueError)])
def test_wrong_layout(layout, exc):
    q, k, v, o = qkvo()
    with pytest.raises(exc, match="layout"):
        ok(q, k, v, o, layout=layout)


@pytest.mark.parametrize("heads,exc", [("2", TypeError), (2.0, TypeError), ([2], TypeError), (True, TypeError),
                                       (2 ** 80, ValueError)])
def test_wrong_heads(heads, exc):
    q, k, v, o = qkvo()
    with pytest.raises(exc, match="heads"):
        ok(q, k, v, o, heads=heads)


@pytest.mark.parametrize("stream,exc", [("0", TypeError), (1.0, TypeError), (False, TypeError),
                                        (2 ** 80, ValueError)])
def test_wrong_stream(stream, exc):
    q, k, v, o = qkvo()
    with pytest.raises(exc, match="stream"):
        ok(q, k, v, o, stream=stream)


def test_wrong_arity_and_keywords():
    q, k, v, o = qkvo()
    with pytest.raises(TypeError):
        _C.check_attention(q, k)
    with pytest.raises(TypeError):
        _C.check_attention(q, k, v, o, "HND")  # layout is keyword-only
    with pytest.raises(TypeError):
        _C.check_attention(q, k, v, bogus=1)


# ----------------------------------------------------------------------------------------
# Fuzz: random bad shapes/strides/dtypes/types only ever raise TypeError/ValueError
# ----------------------------------------------------------------------------------------

def _random_array(rng: random.Random, buf: np.ndarray):
    kind = rng.random()
    if kind < 0.05:
        return rng.choice(BAD_TENSORS[1:])
    ndim = rng.choice([0, 1, 2, 3, 3, 4, 4, 4, 4, 5])
    shape = [rng.choice([0, 1, 2, 3, 8, 16, 32, 33, 64, 2 ** 20, 2 ** 31, 2 ** 40]) for _ in range(ndim)]
    dtype = rng.choice([np.float16, np.float16, np.float16, np.float32, np.int8, np.float64])
    item = np.dtype(dtype).itemsize
    strides = [rng.choice([0, 1, -1, 2, 8, 32, 64, 1000, -64, 2 ** 30, 2 ** 61, -(2 ** 61), 2 ** 62]) * item
               + rng.choice([0, 0, 0, 0, 1]) for _ in range(ndim)]
    try:
        view = strided(buf.view(dtype), shape, strides)
    except (OverflowError, ValueError):  # NumPy itself refuses strides beyond its intp
        return rng.choice(BAD_TENSORS)
    if rng.random() < 0.1:
        view.flags.writeable = False
    return view


def _classify_call(args, kw, outcomes, where):
    """check_attention on fuzzed arguments: count which of ok / UnsupportedError / TypeError /
    ValueError it gave; anything else (or a crash, which ends the process) fails the test."""
    try:
        _C.check_attention(*args, **kw)
        outcomes["ok"] += 1
    except Unsupported:
        outcomes["UnsupportedError"] += 1
    except TypeError:
        outcomes["TypeError"] += 1
    except ValueError:
        outcomes["ValueError"] += 1
    except BaseException as exc:  # pragma: no cover - the failure being tested for
        pytest.fail(f"{where}: {type(exc).__name__}: {exc}")


def test_fuzz_random_bad_inputs_never_crash():
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    buf = np.zeros(1 << 16, np.float16)
    before = buf.tobytes()
    outcomes = {"ok": 0, "TypeError": 0, "ValueError": 0, "UnsupportedError": 0}
    for i in range(3000):
        args = [_random_array(rng, buf) for _ in range(4)]
        if rng.random() < 0.3:
            args[3] = None
        kw = {"allow_cpu": rng.random() < 0.8}
        if rng.random() < 0.3:
            kw["layout"] = rng.choice(["HND", "NHD", "NHD_FLAT", "nhd_flat"])
        if rng.random() < 0.5:
            kw["heads"] = rng.choice([1, 2, 3, 8, 2 ** 40])
        _classify_call(args, kw, outcomes, f"seed {seed} iteration {i}")
    assert buf.tobytes() == before, f"seed {seed}: an input buffer changed"
    assert outcomes["TypeError"] and outcomes["ValueError"], (seed, outcomes)


class _Spec:
    """One tensor as shape/element strides/dtype/offset over a shared buffer."""

    def __init__(self, shape, strides, offset):
        self.shape, self.strides, self.offset = list(shape), list(strides), offset
        self.dtype, self.readonly, self.replace = np.float16, False, None

    def build(self, buf):
        if self.replace is not None:
            return self.replace
        item = np.dtype(self.dtype).itemsize
        base = buf.view(np.uint8)[self.offset * 2:]
        base = base[: (base.size // item) * item].view(self.dtype)
        try:
            view = strided(base, self.shape, [s * item for s in self.strides])
        except (OverflowError, ValueError):
            return None
        if self.readonly:
            view.flags.writeable = False
        return view


def _valid_specs(rng):
    layout = rng.choice(["HND", "NHD", "NHD_FLAT"])
    B, Hkv = rng.choice([1, 2]), rng.choice([1, 2])
    H = Hkv * rng.choice([1, 2])
    S, Sk, D = rng.choice([1, 5, 16]), rng.choice([1, 7, 16]), rng.choice([32, 64])
    specs, offset = [], 0
    for h, s in ((H, S), (Hkv, Sk), (Hkv, Sk), (H, S)):
        if layout == "HND":
            shape = [B, h, s, D]
        elif layout == "NHD":
            shape = [B, s, h, D]
        else:
            shape = [B, s, h * D]
        strides, acc = [], 1
        for n in reversed(shape):
            strides.insert(0, acc)
            acc *= n
        specs.append(_Spec(shape, strides, offset))
        offset += acc + 64
    return specs, layout, H, offset


def _mutate(rng, specs, kw):
    kind = rng.randrange(10)
    sp = rng.choice(specs)
    if kind == 0:
        sp.shape[rng.randrange(len(sp.shape))] = rng.choice([0, 1, 2, 3, 24, 2 ** 31, 2 ** 40])
    elif kind == 1:
        sp.strides[rng.randrange(len(sp.strides))] = rng.choice([0, 1, -1, 3, 7, 8, -64, 2 ** 30, 2 ** 61, 2 ** 62])
    elif kind == 2:
        sp.dtype = rng.choice([np.float32, np.float64, np.int8, np.uint16])
    elif kind == 3:
        sp.offset += rng.randrange(1, 8)
    elif kind == 4:
        specs[3].readonly = True
    elif kind == 5:
        sp.replace = rng.choice(BAD_TENSORS[1:])
    elif kind == 6:
        specs[3].offset = rng.choice(specs[:3]).offset  # out aliases an input
    elif kind == 7:
        del sp.shape[rng.randrange(len(sp.shape))]
        del sp.strides[rng.randrange(len(sp.strides))]
    elif kind == 8:
        kw["heads"] = rng.choice([1, 3, 5, 2 ** 40])
    else:
        kw["allow_cpu"] = False


def test_fuzz_mutated_valid_calls():
    """A valid call with 1-3 random mutations: only TypeError/ValueError/UnsupportedError or
    acceptance, never a crash, and every outcome is reached."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    outcomes = {"ok": 0, "TypeError": 0, "ValueError": 0, "UnsupportedError": 0}
    for i in range(3000):
        specs, layout, heads, size = _valid_specs(rng)
        buf = np.zeros(size + 64, np.float16)
        kw = {"layout": layout, "allow_cpu": True}
        if layout == "NHD_FLAT" or rng.random() < 0.3:
            kw["heads"] = heads
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            _mutate(rng, specs, kw)
        args = [sp.build(buf) for sp in specs]
        if rng.random() < 0.2:
            args[3] = None
        _classify_call(args, kw, outcomes, f"seed {seed} iteration {i}")
        assert not buf.any(), f"seed {seed} iteration {i}: the buffer behind the inputs changed"
    assert all(outcomes.values()), (seed, outcomes)


def test_fuzz_valid_shapes_random_views_accept_or_unsupported():
    """Views of one buffer in random layouts: a valid call is accepted or Unsupported, never
    a TypeError/ValueError, and what is reported matches the views."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for i in range(300):
        B, Hkv = rng.choice([1, 2]), rng.choice([1, 2, 4])
        H = Hkv * rng.choice([1, 2])
        S, Sk = rng.choice([1, 7, 64]), rng.choice([1, 9, 64])
        D = rng.choice([32, 40, 64, 128])
        pad = rng.choice([0, 8, 3])
        layout = rng.choice(["HND", "NHD"])

        def make(h, s, d):
            shape = (B, h, s, d) if layout == "HND" else (B, s, h, d)
            big = torch.zeros(shape[:-1] + (d + pad,), dtype=F16)
            return big[..., :d]

        q, k, v, o = make(H, S, D), make(Hkv, Sk, D), make(Hkv, Sk, D), make(H, S, D)
        try:
            r = call(q, k, v, o, layout=layout, allow_cpu=True)
        except Unsupported:
            continue
        except (TypeError, ValueError) as exc:
            pytest.fail(f"seed {seed} iteration {i}: valid call rejected: {exc}")
        assert (r["batch"], r["heads_q"], r["heads_kv"], r["seq_q"], r["seq_k"], r["head_dim"]) == \
            (B, H, Hkv, S, Sk, D), (seed, i)
