"""The one validation path (csrc/sa3_check.c through `_C.problem`), through every public entry.

Each defect issue 10 lists has a test here that failed before the C validation was put in
front of the kernel-vs-SDPA decision: calls that crashed (SIGFPE), hung, silently computed
something else, or raised torch's RuntimeError / Python's AttributeError, IndexError or
OverflowError now raise TypeError/ValueError naming the argument. Valid calls still reach
SDPA on CPU (the kernels' own rules are `Problem.supports`, tested at the end). CPU only.
"""
from __future__ import annotations

import logging
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sageattn3  # noqa: E402
from sageattn3 import _dispatch, _op, _stats  # noqa: E402
from sageattn3._ext import _C  # noqa: E402
from sageattn3.comfyui.override import Sage3Override  # noqa: E402

F16, BF16 = torch.float16, torch.bfloat16


def r(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


def entries():
    """(name, call(q, k, v, **kw)) for every public entry that takes (B, H, S, D) tensors."""
    def blackwell(q, k, v, **kw):
        return sageattn3.sageattn3_blackwell(q, k, v, **kw)

    def op(q, k, v, tensor_layout="HND", heads=None, is_causal=False, sm_scale=None):
        return _op.attention(q, k, v, tensor_layout, heads or 0, is_causal, sm_scale, "auto", "auto")

    def comfy(q, k, v, tensor_layout="HND", heads=None, **kw):
        assert tensor_layout == "HND" and not kw
        sentinel = object()

        def func(*a, **k):  # ComfyUI's own attention: must not be reached for an invalid call
            return sentinel
        out = Sage3Override()(func, q, k, v, heads or (q.shape[1] if q.dim() == 4 else 1), skip_reshape=True,
                              skip_output_reshape=True)
        assert out is not sentinel
        return out

    return [("sageattn", sageattn3.sageattn), ("sageattn3_blackwell", blackwell), ("custom_op", op),
            ("comfyui_override", comfy)]


ENTRIES = entries()
ENTRY_IDS = [n for n, _ in ENTRIES]


def run_isolated(code: str, timeout: float = 60.0) -> str:
    """Run `code` in a fresh interpreter (a crash or a hang must not take pytest down)."""
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"rc={res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout.strip()


# ----------------------------------------------------------------------------------------
# the defects of issue 10
# ----------------------------------------------------------------------------------------

def test_k_with_zero_heads_is_a_value_error_not_sigfpe():
    out = run_isolated("""
        import torch, sageattn3
        q, k, v = torch.randn(1, 2, 5, 64), torch.randn(1, 0, 5, 64), torch.randn(1, 1, 5, 64)
        for dt in (torch.float32, torch.float16):
            try:
                sageattn3.sageattn(q.to(dt), k.to(dt), v.to(dt))
            except ValueError as e:
                print(type(e).__name__, str(e)[:40])
    """)
    assert out.splitlines() == ["ValueError k: has 0 heads; k/v need at least one he"] * 2


@pytest.mark.parametrize("name,call", ENTRIES, ids=ENTRY_IDS)
def test_batch_1_vs_3_is_not_broadcast(name, call):
    with pytest.raises(ValueError, match=r"^k: batch 3 differs from q's batch 1"):
        call(r(1, 2, 8, 32), r(3, 2, 8, 32), r(3, 2, 8, 32))


@pytest.mark.parametrize("name,call", ENTRIES, ids=ENTRY_IDS)
def test_k_77_keys_v_50_keys(name, call):
    with pytest.raises(ValueError, match=r"^v: heads/sequence length \(2, 50\) differ from k's \(2, 77\)"):
        call(r(1, 2, 8, 32), r(1, 2, 77, 32), r(1, 2, 50, 32))


def test_nhd_with_3d_inputs():
    q = r(1, 128, 77)
    with pytest.raises(ValueError, match=r"^q: layout NHD needs a 4-d \(B, S, H, D\) tensor"):
        sageattn3.sageattn(q, q, q, tensor_layout="NHD")


@pytest.mark.parametrize("shape", [(8, 32), (2, 8, 32)])
@pytest.mark.parametrize("name,call", ENTRIES[:3], ids=ENTRY_IDS[:3])
def test_2d_3d_inputs_are_not_hnd(name, call, shape):
    q = r(*shape)
    with pytest.raises(ValueError, match=r"^q: layout HND needs a 4-d \(B, H, S, D\) tensor"):
        call(q, q, q)


@pytest.mark.parametrize("name,call", ENTRIES[:3], ids=ENTRY_IDS[:3])
def test_5d_inputs_are_not_hnd(name, call):
    q = r(1, 1, 2, 8, 32)
    with pytest.raises(ValueError, match=r"^q: expected a tensor with 1 to 4 dimensions"):
        call(q, q, q)


@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_heads_must_match_for_4d_layouts(layout):
    q = r(1, 2, 8, 32) if layout == "HND" else r(1, 8, 2, 32)
    assert sageattn3.sageattn(q, q, q, tensor_layout=layout, heads=2).shape == q.shape
    with pytest.raises(ValueError, match=rf"^heads=3 but q \(layout {layout}\) has 2 heads"):
        sageattn3.sageattn(q, q, q, tensor_layout=layout, heads=3)


@pytest.mark.parametrize("scale", [math.nan, math.inf, -math.inf, 1e40, 1e39, 10 ** 400, 0.0, -0.5, 1e-50, 0],
                         ids=["nan", "inf", "-inf", "1e40", "1e39-float32-overflow", "10**400", "0.0", "-0.5",
                              "1e-50-float32-underflow", "int-0"])
def test_bad_sm_scale_values(scale):
    q = r(1, 2, 8, 32)
    with pytest.raises(ValueError, match=r"^sm_scale must be a finite number > 0"):
        sageattn3.sageattn(q, q, q, sm_scale=scale)


@pytest.mark.parametrize("scale", [True, False, "0.1", b"1", torch.tensor(0.1), [0.1], 1j])
def test_bad_sm_scale_types(scale):
    q = r(1, 2, 8, 32)
    with pytest.raises(TypeError, match=r"^sm_scale must be a real number"):
        sageattn3.sageattn(q, q, q, sm_scale=scale)


@pytest.mark.parametrize("scale", [0.05, 2, np.float32(0.3), np.float64(0.125)])
def test_good_sm_scale_is_honoured(scale):
    q, k, v = r(1, 2, 8, 32), r(1, 2, 9, 32), r(1, 2, 9, 32)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=float(scale))
    torch.testing.assert_close(sageattn3.sageattn(q, k, v, sm_scale=scale), ref)


@pytest.mark.parametrize("name,call", ENTRIES[:3], ids=ENTRY_IDS[:3])
def test_former_runtime_errors_are_value_or_type_errors(name, call):
    with pytest.raises(ValueError, match=r"^k: head dim 16 differs from q's head dim 32"):
        call(r(1, 2, 8, 32), r(1, 2, 8, 16), r(1, 2, 8, 16))
    with pytest.raises(ValueError, match=r"^q has 3 heads, not a multiple of k/v's 2 heads"):
        call(r(1, 3, 8, 32), r(1, 2, 8, 32), r(1, 2, 8, 32))
    with pytest.raises(TypeError, match=r"^k: dtype float16 differs from q's float32"):
        call(r(1, 2, 8, 32), r(1, 2, 8, 32, dtype=F16), r(1, 2, 8, 32))
    with pytest.raises(TypeError, match=r"^q: dtype must be a floating type"):
        q = torch.ones(1, 2, 8, 32, dtype=torch.int64)
        call(q, q, q)


def test_bad_mask_shape_dtype_device():
    q, k = r(2, 2, 8, 32), r(2, 2, 9, 32)
    with pytest.raises(ValueError, match=r"^attn_mask: shape must broadcast to \(B, Hq, Sq, Sk\) = \(2, 2, 8, 9\)"):
        sageattn3.sageattn(q, k, k, attn_mask=torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^attn_mask: shape must broadcast"):
        sageattn3.sageattn3_blackwell(q, k, k, attn_mask=torch.ones(3, 1, 8, 9, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"^attn_mask: dtype must be bool or q's float32"):
        sageattn3.sageattn(q, k, k, attn_mask=torch.ones(8, 9, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"^attn_mask: expected a torch.Tensor"):
        sageattn3.sageattn(q, k, k, attn_mask=np.ones((8, 9), bool))
    with pytest.raises(ValueError, match=r"^attn_mask: must be on q's device"):
        sageattn3.sageattn(q, k, k, attn_mask=torch.ones(8, 9, dtype=torch.bool, device="meta"))
    with pytest.raises(ValueError, match=r"attn_mask and is_causal=True were both given"):
        sageattn3.sageattn(q, k, k, is_causal=True, attn_mask=torch.ones(8, 9, dtype=torch.bool))
    # broadcastable masks (bool or q's dtype) go to SDPA and give its answer
    with pytest.raises(ValueError, match=r"^attn_mask: needs 2 to 4 dims"):
        sageattn3.sageattn(q, k, k, attn_mask=torch.ones(9, dtype=torch.bool))  # SDPA: IndexError
    for m in (torch.rand(8, 9) > 0.3, torch.randn(2, 1, 1, 9), torch.randn(1, 9)):
        m = m.clone()
        if m.dtype == torch.bool:
            m[..., 0] = True
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, k, attn_mask=m)
        torch.testing.assert_close(sageattn3.sageattn(q, k, k, attn_mask=m), ref)


@pytest.mark.parametrize("bad", [np.zeros((1, 2, 8, 32), np.float32), None, "q", 3.0, [[1.0]]],
                         ids=["numpy", "None", "str", "float", "list"])
@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("name,call", ENTRIES[:3], ids=ENTRY_IDS[:3])
def test_non_tensor_inputs_are_type_errors(name, call, which, bad):
    args = [r(1, 2, 8, 32) for _ in range(3)]
    args[which] = bad
    with pytest.raises(TypeError, match=rf"^{'qkv'[which]}: expected a torch.Tensor, got "):
        call(*args)


@pytest.mark.parametrize("name,call", ENTRIES[:3], ids=ENTRY_IDS[:3])
def test_0d_1d_inputs_are_value_errors(name, call):
    with pytest.raises(ValueError, match=r"^q: expected a tensor with 1 to 4 dimensions, got a 0-d"):
        call(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"^q: layout HND needs a 4-d"):
        call(r(8), r(8), r(8))


def test_4d_q_with_nhd_flat():
    q = r(1, 8, 2, 32)
    with pytest.raises(ValueError, match=r"^q: layout NHD_FLAT needs a 3-d \(B, S, H\*D\) tensor"):
        sageattn3.sageattn(q, q, q, tensor_layout="NHD_FLAT", heads=2)


@pytest.mark.parametrize("heads,exc", [(None, ValueError), (0, ValueError), (-1, ValueError), (True, TypeError),
                                       (2.0, TypeError), ("2", TypeError), (2 ** 70, ValueError)])
def test_nhd_flat_heads(heads, exc):
    q = r(1, 8, 64)
    with pytest.raises(exc, match="heads"):
        sageattn3.sageattn(q, q, q, tensor_layout="NHD_FLAT", heads=heads)


def test_stride0_view_with_huge_head_dim_does_not_hang():
    out = run_isolated("""
        import torch, sageattn3
        q = torch.zeros(1, dtype=torch.float16).expand(1, 1, 1, 2 ** 40)
        v = torch.zeros(1, dtype=torch.float16).expand(0, 1, 1, 2 ** 40)
        try:
            sageattn3.sageattn(q, q, v)
        except ValueError as e:
            print(str(e)[:36])
    """, timeout=30)
    assert out == "v: batch 0 differs from q's batch 1"


def test_element_counts_that_overflow_int64():
    # every tensor fits (torch itself refuses more than 2^63 elements), the score matrix
    # B*H*Sq*Sk does not
    q = torch.zeros(1, dtype=torch.float16).expand(2 ** 20, 2 ** 20, 2 ** 20, 1)
    with pytest.raises(ValueError, match=r"^the attention scores .* have more elements than int64 counts"):
        sageattn3.sageattn(q, q, q)


def test_layout_is_validated_in_c():
    q = r(1, 2, 8, 32)
    with pytest.raises(ValueError, match=r"^layout must be 'HND'"):
        sageattn3.sageattn(q, q, q, tensor_layout="bogus")
    with pytest.raises(TypeError, match=r"^layout must be a str"):
        sageattn3.sageattn(q, q, q, tensor_layout=1)
    # any case, as before
    assert sageattn3.sageattn(q, q, q, tensor_layout="hnd").shape == q.shape


@pytest.mark.parametrize("causal", [2, "yes", None, 1.0])
def test_is_causal_must_be_a_bool(causal):
    q = r(1, 2, 8, 32)
    with pytest.raises(TypeError, match=r"^is_causal must be a bool"):
        sageattn3.sageattn(q, q, q, is_causal=causal)


# ----------------------------------------------------------------------------------------
# valid calls: empty dims and odd shapes reach SDPA without crashing
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [(0, 2, 1, 5, 5, 8, 8), (1, 0, 1, 5, 5, 8, 8), (1, 2, 1, 0, 5, 8, 8),
                                  (1, 2, 1, 5, 0, 8, 8), (1, 2, 1, 5, 5, 0, 8), (1, 2, 1, 5, 5, 8, 0),
                                  (1, 2, 2, 5, 5, 0, 0)])
@pytest.mark.parametrize("layout", ["HND", "NHD", "NHD_FLAT"])
def test_empty_dims_are_valid_and_match_sdpa(dims, layout):
    b, hq, hk, sq, sk, d, dv = dims
    qh, kh, vh = r(b, hq, sq, d), r(b, hk, sk, d), r(b, hk, sk, dv)
    if layout == "NHD_FLAT" and (hq == 0 or (d == 0 and dv != 0)):
        pytest.skip("(B, S, H*0) cannot say its heads")
    ref = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, enable_gqa=hq != hk)

    def lay(t):
        if layout == "HND":
            return t
        t = t.transpose(1, 2)
        return t if layout == "NHD" else t.flatten(2)
    out = sageattn3.sageattn(lay(qh), lay(kh), lay(vh), tensor_layout=layout,
                             heads=hq if layout == "NHD_FLAT" else None)
    assert tuple(out.shape) == tuple(lay(ref).shape)
    torch.testing.assert_close(out, lay(ref))


def test_v_head_dim_may_differ_for_sdpa():
    q, k, v = r(1, 4, 8, 32), r(1, 2, 9, 32), r(1, 2, 9, 48)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(sageattn3.sageattn(q, k, v), ref)
    flat = sageattn3.sageattn(q.transpose(1, 2).flatten(2), k.transpose(1, 2).flatten(2),
                              v.transpose(1, 2).flatten(2), tensor_layout="NHD_FLAT", heads=4)
    torch.testing.assert_close(flat, ref.transpose(1, 2).flatten(2))


def test_problem_describes_the_call():
    q = r(2, 16, 4 * 64, dtype=BF16)
    kv = r(2, 24, 2 * 64, dtype=BF16)
    p = _C.problem(q, kv, kv, "NHD_FLAT", 4, True, 0.25, None)
    assert (p.batch, p.heads_q, p.heads_kv, p.seq_q, p.seq_k, p.head_dim, p.head_dim_v) == (2, 4, 2, 16, 24, 64, 64)
    assert (p.layout, p.dtype, p.is_causal, p.scale, p.device, p.sm_arch) == ("NHD_FLAT", "bfloat16", True, 0.25, -1, -1)
    assert p.out_shape == (2, 16, 256)
    assert p.strides == ((16 * 256, 64, 256, 1), (24 * 128, 64, 128, 1), (24 * 128, 64, 128, 1))
    assert _C.problem(r(1, 2, 8, 32), r(1, 2, 8, 32), r(1, 2, 8, 32)).scale == pytest.approx(32 ** -0.5)
    with pytest.raises(TypeError):
        _C.Problem()


# ----------------------------------------------------------------------------------------
# fallback reasons: short fixed keys, counted, logged once
# ----------------------------------------------------------------------------------------

def test_fallback_keys_are_fixed_and_logged_once(caplog):
    sageattn3.reset_stats()
    # on this CPU: "cpu", or "no_cuda_build" in a build without kernels (checked first)
    key = _dispatch._STATIC[0] if _dispatch._STATIC else "cpu"
    _stats._details.pop(key, None)
    with caplog.at_level(logging.INFO, logger="sageattn3"):
        for s in (5, 6, 7, 8, 9):  # five different calls, one reason
            q = r(1, 2, s, 32)
            sageattn3.sageattn(q, q, q)
    assert sageattn3.stats()["fallback"] == {key: 5}
    lines = [rec for rec in caplog.records if rec.name == "sageattn3" and f"({key})" in rec.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == (logging.WARNING if key == "no_cuda_build" else logging.INFO)
    sageattn3.sageattn(q, q, q, attn_mask=torch.ones(9, 9, dtype=torch.bool))
    sageattn3.sageattn(q, q, q, kernel="sdpa")
    assert sageattn3.stats()["fallback"] == {key: 5, "mask": 1, "requested": 1}


def test_misaligned_calls_share_one_key():
    if "mma" not in [f["name"] for f in _C.families()]:
        pytest.skip("no mma family in this build")
    keys, details = set(), set()
    for off in (1, 2, 3, 5, 7):  # five misaligned views: different pointers, one key
        buf = torch.empty(2 * 8 * 64 + 16, dtype=F16)
        q = torch.as_strided(buf, (1, 2, 8, 64), (1024, 512, 64, 1), storage_offset=off)
        key, detail = _C.problem(q, q, q).supports("mma", "fp16", facts=(90, 132, 232448))
        keys.add(key)
        details.add(detail)
    assert keys == {"misaligned"} and len(details) == 5


def test_warning_for_no_kernels_here(caplog):
    _stats._details.pop("no_cuda_build", None)
    with caplog.at_level(logging.INFO, logger="sageattn3"):
        _stats.record_fallback("no_cuda_build", "built without CUDA kernels")
        _stats.record_fallback("no_cuda_build", "built without CUDA kernels")
    recs = [x for x in caplog.records if "(no_cuda_build)" in x.getMessage()]
    assert len(recs) == 1 and recs[0].levelno == logging.WARNING


# ----------------------------------------------------------------------------------------
# the families' own rules (Problem.supports, on hypothetical devices)
# ----------------------------------------------------------------------------------------

H100 = (90, 132, 232448)
SMEM_99K = (90, 84, 101376)  # what sm_86/89/120 allow per block, on an arch this build has


def _mma_or_skip():
    if "mma" not in [f["name"] for f in _C.families()]:
        pytest.skip("no mma family in this build")
    if not any(a.startswith("90") for f in _C.families() if f["name"] == "mma" for a in f["archs"]):
        pytest.skip("the what-if devices below are sm_90")


def test_mma_shared_memory_is_checked_before_anything_is_enqueued():
    """On 99 KB GPUs, D > 128 with 16-bit P.V needs more shared memory than a block gets: the
    family says so on the host (the old path enqueued both quantization kernels first)."""
    _mma_or_skip()
    q = r(1, 2, 64, 256, dtype=BF16)
    p = _C.problem(q, q, q)
    assert p.supports("mma", "fp16", facts=H100) == (None, "")
    key, detail = p.supports("mma", "fp16", facts=SMEM_99K)
    assert key == "smem_limit" and "101376" in detail
    q = r(1, 2, 64, 128, dtype=BF16)
    assert _C.problem(q, q, q).supports("mma", "fp16", facts=SMEM_99K) == (None, "")


@pytest.mark.parametrize("d,key", [(24, "head_dim"), (36, "misaligned"), (264, "head_dim"), (32, None),
                                   (72, None), (256, None)])
def test_mma_head_dims(d, key):
    _mma_or_skip()
    q = r(1, 2, 16, d, dtype=F16)
    assert _C.problem(q, q, q).supports("mma", "fp16", facts=H100)[0] == key


def test_mma_other_rules():
    _mma_or_skip()
    q = r(1, 2, 16, 64, dtype=F16)
    p = _C.problem(q, q, q)
    assert p.supports("mma", "fp8", facts=(90, 132, 232448))[0] is None
    mma_archs = [a for f in _C.families() if f["name"] == "mma" for a in f["archs"]]
    a100 = (80, 108, 166912)
    assert p.supports("mma", "fp16", facts=a100)[0] == (None if "80" in mma_archs else "arch")
    if "80" in mma_archs:
        assert p.supports("mma", "fp8", facts=a100)[0] == "pv_mode"  # FP8 mma needs sm89+
    f32 = r(1, 2, 16, 64)
    assert _C.problem(f32, f32, f32).supports("mma", facts=H100)[0] == "dtype"
    v = r(1, 2, 16, 128, dtype=F16)
    assert _C.problem(q, q, v).supports("mma", facts=H100)[0] == "head_dim_v"
    long_kv = torch.zeros(1, dtype=F16).expand(1, 2, 2 ** 31, 64)
    assert _C.problem(q, long_kv, long_kv).supports("mma", facts=H100)[0] in ("strides", "seq_len")
    with pytest.raises(ValueError, match="no kernel family 'nope'"):
        p.supports("nope")
    with pytest.raises(_C.UnsupportedError, match="^dtype: "):
        _C.problem(f32, f32, f32).workspace_bytes("mma", facts=H100)
    assert p.workspace_bytes("mma", "fp16", facts=H100) > 0


def test_pv_modes_and_bad_pv_values():
    """pv="fp8_f16acc" (FP8 P.V accumulated in fp16 per KV tile) is an mma mode wherever FP8 P.V
    is (sm_89+); hopper has only "fp8"; a bad value is a ValueError naming pv, in C and in Python."""
    _mma_or_skip()
    q = r(1, 2, 16, 64, dtype=F16)
    p = _C.problem(q, q, q)
    assert p.supports("mma", "fp8_f16acc", facts=H100) == (None, "")
    assert p.workspace_bytes("mma", "fp8_f16acc", facts=H100) == p.workspace_bytes("mma", "fp8", facts=H100)
    if "80" in [a for f in _C.families() if f["name"] == "mma" for a in f["archs"]]:
        assert p.supports("mma", "fp8_f16acc", facts=(80, 108, 166912))[0] == "pv_mode"
    if "hopper" in [f["name"] for f in _C.families()]:
        assert p.supports("hopper", "fp8_f16acc", facts=H100)[0] == "pv_mode"
    for bad in ("fp8_f32acc", "FP8", "", 8):
        with pytest.raises(ValueError, match="pv must be 'fp16', 'fp8' or 'fp8_f16acc', got"):
            p.supports("mma", bad, facts=H100)
    for bad in ("fp8_f32acc", "FP8", "f16acc"):
        with pytest.raises(ValueError, match=r"pv must be one of \('auto', 'fp16', 'fp8', 'fp8_f16acc'\), got"):
            sageattn3.sageattn(q, q, q, pv=bad)
    out = sageattn3.sageattn(q, q, q, pv="fp8_f16acc")  # valid: on the CPU, SDPA serves it
    assert out.shape == q.shape


@pytest.mark.parametrize("d,causal", [(64, False), (128, True), (256, False)])
def test_mma_no_longer_declines_an_lse_output(d, causal):
    """The mma kernel writes the LSE from its epilogue (issue 14): a call asking for one is served
    in every P.V mode, not sent to SDPA's LSE ops with the reason "lse"."""
    _mma_or_skip()
    q = r(1, 2, 77, d, dtype=BF16)
    p = _C.problem(q, q, q, "HND", None, causal)
    for pv in ("fp16", "fp8", "fp8_f16acc"):
        assert p.supports("mma", pv, facts=H100, lse=True) == (None, "")
        assert p.workspace_bytes("mma", pv, facts=H100, lse=True) == p.workspace_bytes("mma", pv, facts=H100)
    # the what-if flag changes only the LSE: other reasons still come first
    assert _C.problem(r(1, 2, 16, 24, dtype=F16), r(1, 2, 16, 24, dtype=F16), r(1, 2, 16, 24, dtype=F16)).supports(
        "mma", "fp16", facts=H100, lse=True)[0] == "head_dim"


def test_select_walks_the_plan_on_cpu_problems():
    q = r(1, 2, 16, 64, dtype=F16)
    p = _C.problem(q, q, q)
    assert p.select((("mma", "fp16"),), 0)[:2] == (None, "cpu")
    with pytest.raises(ValueError, match="no kernel family was selected"):
        p.launch(q, 0, 0, 0)
