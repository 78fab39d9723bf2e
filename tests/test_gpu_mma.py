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
PVS = ["fp16"] + (["fp8", "fp8_f16acc"] if _ARCH >= 89 else [])
# vs float64 on K-offset inputs. INT8-QK + 16-bit PV: the 0.012. INT8-QK + FP8-PV:
# the issue asks 0.03, but e4m3 (3 mantissa bits) on both P and V has a floor above that on
# random V: emulating only the FP8 roundings in float64 gives rel-L1 0.026 (P alone), 0.027
# (V alone), 0.037 (both) at S=2000, D=128 -- SageAttention2.2 measures 0.037 too; the H100
# measured 0.034-0.040 (0.0403 once at 32,760 tokens). So 0.045 here, which still fails on any
# real defect (a wrong scale, tile or permutation gives > 0.1).
# fp8_f16acc: the same P and V codes (V's / 256), each tile's product summed in fp16 (2^-11
# relative per partial): e4m3's floor again, so the same bound.
F64_BOUND = {"fp16": 0.012, "fp8": 0.045, "fp8_f16acc": 0.045}
LONG_SAMPLE_BOUND = 0.015  # 16-bit P.V, rel-L1 of 8 sampled rows (test_one_tensor_over_2_31_elements)

# GPU vs CPU reference, same quantization. The reference (fp32) is rounded to the output
# dtype first, as the kernel's epilogue does. Both quantize to the same INT8 codes except where
# K's mean differs in its last bit (different summation order) and flips a rounding tie: a
# one-step change in a handful of codes. exp2 differs by ~2 ulp (ex2.approx vs exp2f), which
# flips the 16-bit rounding of P (2^-8 relative for bf16) for a small fraction of elements,
# or the e4m3 rounding of P (2^-3 relative) for fewer still. Averaged over the output that is
# ~1e-4 (16-bit) and ~1e-3 (FP8) rel-L1; bounds give 4-5x headroom.
# fp8_f16acc against the reference of that mode (int8-fp8-f16acc): on top of fp8's differences,
# where the kernel's fp16 rounding points differ from the reference's model (one rounding per
# 32-key mma step; the H200 emulates a step as two 16-key HMMAs, rounding after each), one more
# 2^-11-relative rounding per partial: ~1e-4 averaged, inside fp8's bound.
REF_BOUND = {"fp16": 5e-4, "fp8": 5e-3, "fp8_f16acc": 5e-3}

from gpu_helpers import (assert_compiles_fullgraph, assert_graph_replays, check_f64, make_qkv,  # noqa: E402
                         needs_c_compiler, ref64, reference_same_mode, rel_l1, ring_of_calls, run_mma, to_hnd,
                         v_rounding_bias_case)


def _check_f64(out, q, k, v, layout, heads, causal, pv, rows=None):
    return check_f64(out, q, k, v, layout, heads, causal, F64_BOUND[pv], rows=rows)


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


# ----------------------------------------------------------------------------- LSE output
# The kernel's LSE (issue 14) against the C reference's LSE in the same quantization (tight:
# the reference sums unrounded P where the kernel at D <= 128 with 16-bit P.V sums the rounded
# P by mma, ~2^-9 relative per term for bf16, and rare INT8 rounding ties of the K mean move one
# score by a code step) and against float64 (loose: the INT8 score error; hopper's bounds). Any
# real defect is far outside both: a missing K-smoothing term is of order 10 on these inputs
# (sm_scale * q.mean(K) with an 8-sigma K offset), a missing FP8 P offset is ln(448) = 6.1, a
# log2/ln mix-up is 30%, a wrong row or head stride puts another row's value there.
LSE_REF_MAX, LSE_REF_MEAN = 5e-3, 5e-4
LSE_F64_MAX, LSE_F64_MEAN = 0.05, 0.01

from gpu_helpers import lse64  # noqa: E402


def _check_lse(lse, qh, kh, vh, causal, pv, scale=None, ref_lse=None):
    assert lse.dtype == torch.float32 and lse.shape == qh.shape[:3]
    assert not torch.isnan(lse).any(), "unwritten (NaN-poisoned) LSE elements"
    err = (lse.double() - lse64(qh, kh, causal=causal, scale=scale)).abs()
    assert float(err.max()) < LSE_F64_MAX and float(err.mean()) < LSE_F64_MEAN, \
        f"LSE vs float64: max {float(err.max()):.3e} mean {float(err.mean()):.3e}"
    if ref_lse is not None:
        tight = (lse.cpu().double() - ref_lse.double()).abs()
        assert float(tight.max()) < LSE_REF_MAX and float(tight.mean()) < LSE_REF_MEAN, \
            f"LSE vs same-mode reference: max {float(tight.max()):.3e} mean {float(tight.mean()):.3e}"


@pytest.mark.parametrize("pv", PVS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("sq,sk,d,causal,hq,hkv", [
    (1, 1, 128, False, 2, 2),
    (77, 77, 64, True, 2, 2),
    (129, 1000, 64, True, 4, 2),     # GQA, causal Sq < Sk
    (300, 477, 128, False, 4, 2),
    (333, 333, 128, True, 2, 1),     # MQA, causal
    (1000, 77, 96, True, 2, 2),      # causal Sq > Sk: rows >= Sk see every key
    (190, 260, 80, False, 3, 1),
    (150, 150, 256, True, 2, 2),
    (200, 455, 192, False, 2, 2),    # DP=256 with D < DP
])
def test_lse_matches_cpu_reference_and_float64(pv, dtype, sq, sk, d, causal, hq, hkv):
    q, k, v = make_qkv(1, hq, hkv, sq, sk, d, dtype=dtype)
    out, lse = run_mma(q, k, v, causal=causal, pv=pv, with_lse=True)
    ref_o, ref_lse = reference_same_mode(q, k, v, causal=causal, pv=pv, return_lse=True)
    assert rel_l1(out.float().cpu(), ref_o.to(q.dtype).double()) <= REF_BOUND[pv]
    _check_lse(lse, q, k, v, causal, pv, ref_lse=ref_lse)
    # asking for the LSE leaves O bit-identical (the epilogue only adds the LSE stores)
    assert torch.equal(out, run_mma(q, k, v, causal=causal, pv=pv))


@pytest.mark.parametrize("pv", PVS)
@pytest.mark.parametrize("layout", ["HND", "NHD", "NHD_FLAT"])
def test_lse_layouts_and_strided_lse(pv, layout):
    """Every layout gives the same (B, Hq, Sq) LSE; an LSE buffer that is a strided view of a
    bigger one (unit Sq stride, padded h and b strides) is written at exactly its elements."""
    b, hq, hkv, sq, sk, d = 2, 4, 2, 517, 1029, 128
    heads = hq if layout == "NHD_FLAT" else None
    q, k, v = make_qkv(b, hq, hkv, sq, sk, d, layout=layout)
    qh = to_hnd(q, layout, hq)
    kh, vh = (to_hnd(t, layout, hkv) for t in (k, v))
    out, lse = run_mma(q, k, v, layout=layout, heads=heads, pv=pv, with_lse=True)
    assert lse.is_contiguous()
    _check_f64(to_hnd(out, layout, hq), qh, kh, vh, "HND", None, False, pv)
    _check_lse(lse, qh, kh, vh, False, pv)
    big = torch.full((b, hq + 1, sq + 7), float("nan"), device="cuda")
    view = big[:, 1:, 3:3 + sq]
    from sageattn3 import _dispatch
    _dispatch.run_family("mma", q, k, v, layout=layout, heads=heads, pv=pv, poison=True, lse=view)
    assert torch.equal(view, lse), "a strided LSE buffer got other values than a contiguous one"
    assert torch.isnan(big[:, 0]).all() and torch.isnan(big[:, :, :3]).all() and torch.isnan(big[:, :, 3 + sq:]).all(), \
        "the kernel wrote outside the LSE view"


@pytest.mark.parametrize("pv", PVS)
def test_lse_rows_with_one_visible_key(pv):
    """Causal row 0 sees key 0 only: its LSE is that one score, sm_scale * q0.k0 (smoothing and
    the FP8 P offset must cancel exactly there). No row of a valid call sees no key (top-left
    causal, Sk >= 1); the kernel, like the C reference, would write -inf for one."""
    q, k, v = make_qkv(1, 2, 2, 300, 300, 128)
    _, lse = run_mma(q, k, v, causal=True, pv=pv, with_lse=True)
    _, ref_lse = reference_same_mode(q, k, v, causal=True, pv=pv, return_lse=True)
    # one INT8 score: its quantization error alone, ~0.011 std here (5 sigma), no averaging
    s00 = (q[:, :, 0].double() * k[:, :, 0].double()).sum(-1) / 128 ** 0.5
    assert float((lse[:, :, 0].double() - s00).abs().max()) < 0.06
    assert float((lse[:, :, 0].cpu().double() - ref_lse[:, :, 0].double()).abs().max()) < LSE_REF_MAX
    _check_lse(lse, q, k, v, True, pv, ref_lse=ref_lse)


@pytest.mark.parametrize("pv", PVS)
def test_lse_long_sequence_sampled(pv):
    sq = sk = 32760
    q, k, v = make_qkv(1, 2, 2, sq, sk, 128, layout="NHD_FLAT")
    out, lse = run_mma(q, k, v, layout="NHD_FLAT", heads=2, causal=True, pv=pv, with_lse=True)
    rows = torch.randperm(sq, device="cuda")[:128].sort().values
    qh, kh = (t.view(1, t.shape[1], 2, 128).transpose(1, 2) for t in (q, k))
    assert not torch.isnan(lse).any()
    i = rows[:, None]
    s = (qh[:, :, rows].double() @ kh.double().transpose(-1, -2)) / 128 ** 0.5
    s = s.masked_fill(torch.arange(sk, device="cuda")[None] > i, float("-inf"))
    err = (lse[:, :, rows].double() - torch.logsumexp(s, -1)).abs()
    assert float(err.max()) < LSE_F64_MAX and float(err.mean()) < LSE_F64_MEAN, (float(err.max()), float(err.mean()))


@pytest.mark.parametrize("pv", PVS)
@pytest.mark.parametrize("parts", [2, 3, 5])
def test_ring_of_mma_calls_merges_to_full_attention(pv, parts):
    """Each K/V chunk through the kernel (its own K mean and scales), merged by the LSE."""
    q, k, v = make_qkv(1, 4, 4, 700, 4099, 128, layout="NHD")
    sageattn3.reset_stats()
    acc = ring_of_calls(q, k, v, parts, kernel="mma", pv=pv)
    assert sageattn3.stats()["served"].get("mma") == parts, sageattn3.stats()
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    assert rel_l1(acc[0].transpose(1, 2), ref64(qh, kh, vh)) <= F64_BOUND[pv]
    torch.testing.assert_close(acc[1].double(), lse64(qh, kh), atol=0.05, rtol=0)


def test_public_api_return_lse_is_served_by_mma():
    sageattn3.reset_stats()
    q, k, v = make_qkv(1, 2, 2, 2048, 2048, 128)
    out, lse = sageattn3.sageattn(q, k, v, return_lse=True, kernel="mma")
    assert sageattn3.stats()["served"].get("mma") == 1 and "lse" not in sageattn3.stats()["fallback"]
    assert lse.shape == (1, 2, 2048) and lse.is_contiguous()
    from sageattn3 import _policy
    _check_f64(out, q, k, v, "HND", None, False, _policy.default_pv("mma", _ARCH))
    _check_lse(lse, q, k, v, False, _policy.default_pv("mma", _ARCH))


def test_cuda_graph_capture_with_return_lse():
    assert_graph_replays("mma", return_lse=True)


@needs_c_compiler
def test_torch_compile_with_return_lse():
    assert_compiles_fullgraph("mma", return_lse=True)


# ----------------------------------------------------------------------------- FP8 P.V, fp16 accumulation
F16ACC = pytest.mark.skipif(_ARCH < 89, reason="FP8 P.V needs sm_89+")


@F16ACC
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("d,causal", [(64, False), (128, True), (128, False), (256, False), (80, True)])
def test_f16acc_differs_from_fp32_accumulation_only_by_fp16_rounding(dtype, d, causal):
    """Same P codes, V codes / 2^8: the two kernels agree far closer than either agrees with
    float64 (the fp16 partials' rounding, 2^-11 relative, plus e4m3 subnormal V below
    max|V|/112), and they do differ (the fp16 path really ran)."""
    q, k, v = make_qkv(1, 4, 2, 1000, 2049, d, dtype=dtype)
    a = run_mma(q, k, v, causal=causal, pv="fp8")
    b = run_mma(q, k, v, causal=causal, pv="fp8_f16acc")
    assert not torch.isnan(b).any()
    diff = rel_l1(b, a.double())
    assert 0 < diff < 2e-3, f"fp16- vs fp32-accumulated FP8 P.V: rel-L1 {diff:.2e}"


@F16ACC
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
def test_f16acc_partials_at_the_overflow_bound(d, causal):
    """The worst case of the bound next to sa3_mma_e4m3_f16: every key equal (equal scores, so
    every p = 1 and P's code is 448) and V constant per channel (its code 1.75): each 64-key
    tile's fp16 partial is 64 * 448 * 1.75 = 50176 < 65504. Large V values too (the scale is
    per channel). The output must be V, not inf/NaN; the LSE log(visible keys) + q.k."""
    b, h, sq, sk = 1, 2, 300, 4097
    q = torch.randn(b, h, sq, d, device="cuda").to(torch.bfloat16)
    k = torch.randn(b, h, 1, d, device="cuda").expand(b, h, sk, d).to(torch.bfloat16).contiguous()
    vrow = torch.randn(b, h, 1, d, device="cuda") * torch.logspace(-2, 4, d, device="cuda")
    v = vrow.expand(b, h, sk, d).to(torch.bfloat16).contiguous()
    out, lse = run_mma(q, k, v, causal=causal, pv="fp8_f16acc", with_lse=True)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    want = v[:, :, :sq].float()
    assert float(((out.float() - want).abs() / want.abs().clamp_min(1e-30)).max()) < 2.0 ** -7
    seen = torch.arange(1, sq + 1, device="cuda").clamp(max=sk) if causal else torch.full((sq,), sk, device="cuda")
    qk = (q.double() @ k[:, :, :1].double().transpose(-1, -2))[..., 0] / d ** 0.5
    assert float((lse.double() - (qk + seen.double().log())).abs().max()) < 0.05


def test_bad_pv_values_name_the_argument():
    q, k, v = make_qkv(1, 2, 2, 64, 64, 64)
    for bad in ("fp8_f32acc", "FP8", "f16acc", ""):
        with pytest.raises(ValueError, match="pv"):
            sageattn3.sageattn(q, k, v, pv=bad, kernel="mma")


@pytest.mark.parametrize("pv", ["fp8", "fp8_f16acc"])
def test_v_rounding_bias_is_removed(pv):
    """V whose e4m3 codes all round the same way (every key but one at 0.53; key 0 at 1.0 sets
    the channel scale): without the V fix (the reference's v_mean_fix) every output is off by
    that rounding error; with it the mean signed error against float64 is a small part of it."""
    top = 448.0 if pv == "fp8" else 1.75  # the channel max's code (attn_mma.cu, f16 accumulation)
    err, bias = v_rounding_bias_case(lambda q, k, v: run_mma(q, k, v, pv=pv), top)
    assert abs(err) > 2e-3  # the inputs do what the test needs: a shared, one-signed rounding error
    assert abs(bias) < abs(err) / 4, (bias, err)
