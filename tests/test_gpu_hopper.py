"""hopper kernel family (cuda/hopper/: wgmma + bulk copies, sm_90a) on a real GPU.

Two references, as for the mma family (tests/test_gpu_mma.py):
 * the C CPU reference in the same quantization (mode int8-fp8, q_block 1, k_block 128, quad
   granularity: _check.FAMILY_NUMERICS["hopper"]): tight, only accumulation order, ex2.approx and rounding ties differ;
 * float64 attention on K-offset inputs: rel-L1 <= 0.045, e4m3's floor on P and V (see
   test_gpu_mma.F64_BOUND for the derivation; this kernel measured 0.033-0.037).
Outputs and workspace are poisoned (NaN / 0xFF) before every run; inputs are fresh random.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import sageattn3  # noqa: E402
from sageattn3 import _check, _dispatch, _policy  # noqa: E402
from sageattn3._ext import _C  # noqa: E402

from gpu_helpers import (assert_compiles_fullgraph, assert_graph_replays, capture_graph, check_f64,  # noqa: E402
                         lse64, make_qkv, needs_c_compiler, ref64, reference_hopper, rel_l1, ring_of_calls,
                         run_hopper, three_consumer_query_heads, to_hnd, v_rounding_bias_case)

_HAS = (torch.cuda.is_available() and _C is not None and _C.HAS_CUDA
        and "hopper" in _C.device_info(torch.cuda.current_device()).get("families", []))
# Under consumer limits the device reports a GeForce arch, where hopper declines (sm_90 only).
_WHY_NOT = ("consumer limits in force: the device reports a GeForce arch, hopper runs on sm_90 only"
            if _HAS and _C.device_info(torch.cuda.current_device())["sm_arch"] != 90 else
            "the hopper family does not run on this GPU/build")
_HAS = _HAS and _C.device_info(torch.cuda.current_device())["sm_arch"] == 90
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _HAS, reason=_WHY_NOT)]

F64_BOUND = 0.045
# Against the CPU reference: the kernel computes exp2(s*c - m) with one FFMA and ex2.approx where
# the reference rounds s first and calls exp2f; a ~2-ulp difference flips the e4m3 rounding of
# P (2^-3 relative) for a small fraction of elements. Measured 1.4e-3 (bf16) and 2e-4 (fp16)
# rel-L1 on the H200; 5e-3 leaves 3.5x headroom and still fails on any layout or scale defect.
REF_BOUND = 5e-3


def _check_f64(out, q, k, v, layout, heads, causal, rows=None, scale=None):
    return check_f64(out, q, k, v, layout, heads, causal, F64_BOUND, rows=rows, scale=scale)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sq,sk,d,causal,hq,hkv", [
    (1, 1, 128, False, 2, 2),
    (128, 128, 128, False, 2, 2),
    (300, 477, 128, False, 2, 2),
    (257, 300, 128, True, 4, 2),
    (1000, 1000, 128, True, 2, 2),
    (200, 200, 64, False, 3, 1),
    (333, 333, 64, True, 2, 2),
    (190, 611, 96, False, 2, 2),
    (77, 1029, 40, True, 4, 4),
])
def test_matches_cpu_reference(dtype, sq, sk, d, causal, hq, hkv):
    q, k, v = make_qkv(1, hq, hkv, sq, sk, d, dtype=dtype)
    out = run_hopper(q, k, v, causal=causal)
    assert not torch.isnan(out).any()
    ref = reference_hopper(q, k, v, causal=causal).to(dtype)
    err = rel_l1(out.float().cpu(), ref.double())
    assert err <= REF_BOUND, f"rel-L1 vs CPU reference {err:.2e} > {REF_BOUND}"
    _check_f64(out, q, k, v, "HND", None, causal)


@pytest.mark.parametrize("layout", ["HND", "NHD", "NHD_FLAT"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [32, 64, 72, 128])
def test_layouts_dtypes_head_dims(layout, dtype, d):
    heads = 3 if layout == "NHD_FLAT" else None
    q, k, v = make_qkv(2, 3, 3, 517, 389, d, layout=layout, dtype=dtype)
    out = run_hopper(q, k, v, layout=layout, heads=heads)
    assert out.shape == q.shape and out.dtype == dtype
    _check_f64(out, q, k, v, layout, heads, False)


@pytest.mark.parametrize("sq,sk,causal", [(4097, 4097, True), (32760, 32760, False), (82992, 512, False),
                                          (300, 82992, False)])
def test_long_sequences(sq, sk, causal):
    q, k, v = make_qkv(1, 2, 2, sq, sk, 128, layout="NHD_FLAT")
    out = run_hopper(q, k, v, layout="NHD_FLAT", heads=2, causal=causal)
    rows = torch.randperm(sq, device="cuda")[:256].sort().values
    qh, kh, vh, oh = (t.view(1, t.shape[1], 2, 128).transpose(1, 2) for t in (q, k, v, out))
    assert not torch.isnan(oh).any()
    _check_f64(oh, qh, kh, vh, "HND", None, causal, rows=rows)


@pytest.mark.parametrize("sk", [100, 300, 1000, 1100, 16411])
def test_d128_three_consumer_ctas_where_their_waves_are_shorter(sk):
    """At D = 128 (not causal) the launcher takes three consumer warpgroups (192-row CTAs, the
    serial 160-register loop) when whole waves of them come out >= 1% shorter than of two
    (consumers_d128 in cuda/hopper/hopper_attn.cu): with sm_count // 2 query heads of 377 rows,
    128-row CTAs (3 per head) need two waves and 192-row ones (2 per head) one, so the
    three-consumer instance serves this call on any GPU. Key tiles: 1 (the loop's last-tile
    instance alone), 3, 8 and 9 (odd and even counts, ragged last tiles) and 129 (a long row: a
    loop that summed P.V over tiles in FP8's short accumulator would drift from the reference's
    fp32 sum per tile here). GQA 2:1; checked against float64, on two heads against the CPU
    reference, and its LSE."""
    from sageattn3 import _lse
    hq = three_consumer_query_heads()
    hkv, sq = hq // 2, 377
    q, k, v = make_qkv(1, hq, hkv, sq, sk, 128)
    out = run_hopper(q, k, v)
    _check_f64(out, q, k, v, "HND", None, False)
    ref = reference_hopper(q[:, :2], k[:, :1], v[:, :1], causal=False)
    err = rel_l1(out[:, :2].float().cpu(), ref.double())
    assert err <= REF_BOUND, f"rel-L1 vs CPU reference {err:.2e} > {REF_BOUND}"
    _, lse = _lse.attention_with_lse(q, k, v, layout="HND", kernel="hopper")
    lerr = (lse.double() - lse64(q, k)).abs()
    assert float(lerr.max()) < 0.05, float(lerr.max())


def test_two_launches_per_call():
    """A one-pass call is two kernels: the pre-pass (cuda/hopper/hopper_quant.cu, one launch of a
    thread block cluster per K and per V head) and the attention kernel. Counted by the profiler
    on a call through the public API, so a copy or fill the dispatch path added would count."""
    from torch.profiler import ProfilerActivity, profile
    q, k, v = make_qkv(1, 4, 2, 1000, 1000, 128)
    sageattn3.sageattn(q, k, v, kernel="hopper")
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        sageattn3.sageattn(q, k, v, kernel="hopper")
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type.name == "CUDA"]
    assert len(names) == 2, names
    assert any("prep_kernel" in n for n in names) and any("attn_kernel" in n for n in names), names


def test_prepass_clusters_run_in_rounds_and_own_several_blocks():
    """160 K/V heads of 9 key blocks: the pre-pass (prep_split in hopper_quant.cu) takes clusters
    of 3 CTAs owning 3 blocks each, 960 CTAs, more than are resident at once, so clusters run in
    rounds and each CTA quantizes several blocks after the cluster's statistics. Every head is
    checked against float64 (K-offset inputs: a wrong or unshared mean shows), and two heads
    against the CPU reference."""
    q, k, v = make_qkv(4, 40, 40, 300, 1100, 128)
    out = run_hopper(q, k, v)
    _check_f64(out, q, k, v, "HND", None, False)
    ref = reference_hopper(q[3:, 38:], k[3:, 38:], v[3:, 38:], causal=False)
    err = rel_l1(out[3:, 38:].float().cpu(), ref.double())
    assert err <= REF_BOUND, f"rel-L1 vs CPU reference {err:.2e} > {REF_BOUND}"


def test_over_2pow31_elements_in_one_tensor():
    """k and v of (2, 250000, 40, 128) bf16: 2.56e9 elements each, so every (b, h, s) offset
    past 2^31 must be 64-bit. The workspace for all 40 heads would be 5 GB against a 2 MB output,
    so the call runs in 20 passes of 2 K/V heads (kv_heads_per_pass): the pass's head offsets are
    added on the host in 64 bits, the batch offsets of 1.28e9 elements stay in the kernels."""
    b, s, h, d = 2, 250_000, 40, 128
    g = torch.Generator(device="cuda").manual_seed(5)
    k = torch.randn(b, s, h * d, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(b, s, h * d, device="cuda", dtype=torch.bfloat16, generator=g)
    assert k.numel() > 2 ** 31
    q = torch.randn(b, 96, h * d, device="cuda", dtype=torch.bfloat16, generator=g)
    out = run_hopper(q, k, v, layout="NHD_FLAT", heads=h)
    assert not torch.isnan(out).any()
    for bi, hi in ((0, 0), (1, h - 1), (1, 17)):
        sl = slice(hi * d, (hi + 1) * d)
        qh, kh, vh = (t[bi:bi + 1, :, sl].unsqueeze(1) for t in (q, k, v))
        ref = ref64(qh, kh, vh)
        err = rel_l1(out[bi:bi + 1, :, sl].unsqueeze(1), ref)
        assert err <= F64_BOUND, f"(b={bi}, h={hi}) rel-L1 {err:.4f}"
    del k, v
    torch.cuda.empty_cache()


def test_kv_head_groups_run_in_passes_over_one_workspace():
    """A call whose workspace would exceed both 256 MiB and half the output runs in passes over
    groups of K/V heads, each pass re-using the one workspace (hopper_workspace.cuh,
    kv_heads_per_pass): 4 K/V heads x 300,001 keys would need 293 MiB, so two passes of 2 K/V
    heads (4 query heads each, GQA) run. Every query head is checked against float64 and its LSE
    against float64, so a pass that wrote another group's heads, or read another group's K/V or
    the previous pass's workspace, fails."""
    from sageattn3 import _lse
    hq, hkv, sq, sk, d = 8, 4, 333, 300_001, 128
    q, k, v = make_qkv(1, hq, hkv, sq, sk, d, layout="NHD_FLAT")
    one_pass = 2 * hkv * ((sk + 127) // 128 * 128) * d
    nbytes = _dispatch.problem(q, k, v, "NHD_FLAT", hq, False, None).workspace_bytes("hopper", "fp8")
    assert one_pass // 2 <= nbytes <= one_pass // 2 + (1 << 20), (nbytes, one_pass)
    out, lse = _lse.attention_with_lse(q, k, v, layout="NHD_FLAT", heads=hq, kernel="hopper")
    qh = to_hnd(q, "NHD_FLAT", hq)
    kh, vh = (to_hnd(t, "NHD_FLAT", hkv) for t in (k, v))
    oh = to_hnd(out, "NHD_FLAT", hq)
    assert not torch.isnan(oh).any() and not torch.isnan(lse).any()
    rows = torch.randperm(sq, device="cuda")[:64].sort().values
    ref = ref64(qh, kh, vh, rows=rows)
    for h in range(hq):
        err = rel_l1(oh[:, h:h + 1, rows], ref[:, h:h + 1])
        assert err <= F64_BOUND, f"query head {h} (pass {h // 4}): rel-L1 {err:.4f}"
    lerr = (lse[:, :, rows].double() - lse64(qh[:, :, rows], kh)).abs()
    assert float(lerr.max()) < 0.05, float(lerr.max())


def test_inputs_unchanged_and_deterministic():
    q, k, v = make_qkv(1, 2, 2, 1000, 1000, 128)
    before = [t.clone() for t in (q, k, v)]
    a = run_hopper(q, k, v)
    b = run_hopper(q, k, v)
    for t0, t1 in zip(before, (q, k, v)):
        assert torch.equal(t0, t1), "an input was modified"
    assert torch.equal(a, b), "two runs on the same input differ (race?)"


def test_sm_scale_and_views_of_bigger_buffers():
    bsz, s, h, d = 1, 1500, 4, 64
    qkv = torch.randn(bsz, s, 3 * h * d, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv[..., : h * d], qkv[..., h * d: 2 * h * d], qkv[..., 2 * h * d:]
    out = run_hopper(q, k, v, layout="NHD_FLAT", heads=h, scale=0.3)
    qh, kh, vh, oh = (t.reshape(bsz, s, h, d).transpose(1, 2) for t in (q, k, v, out))
    ref = reference_hopper(qh, kh, vh, causal=False, scale=0.3)
    assert rel_l1(oh.float().cpu(), ref.to(torch.bfloat16).double()) <= REF_BOUND
    assert rel_l1(oh, ref64(qh, kh, vh, scale=0.3)) <= 0.06  # sharper softmax, larger INT8 score error


def test_supports_declines_with_a_reason():
    q, k, v = make_qkv(1, 2, 2, 256, 256, 256)
    with pytest.raises(_C.UnsupportedError, match="head_dim"):
        run_hopper(q, k, v)
    q, k, v = make_qkv(1, 2, 2, 256, 256, 128)
    with pytest.raises(_C.UnsupportedError, match="pv_mode"):
        _dispatch.run_family("hopper", q, k, v, pv="fp16")


def test_auto_selects_hopper_on_sm90_and_falls_back_below_the_threshold():
    assert _policy.plan(90, "auto", "auto")[0] == ("hopper", "fp8")
    sageattn3.reset_stats()
    q, k, v = make_qkv(1, 2, 2, 8192, 8192, 128, layout="NHD")
    out = sageattn3.sageattn(q, k, v, tensor_layout="NHD")
    assert sageattn3.stats()["served"].get("hopper") == 1
    rows = torch.randperm(8192, device="cuda")[:128].sort().values
    _check_f64(out.transpose(1, 2), q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), "HND", None, False,
               rows=rows)
    small = make_qkv(1, 2, 2, 1024, 1024, 128)
    sageattn3.sageattn(*small)
    assert sageattn3.stats()["fallback"].get("short_seq") == 1
    # D=256: hopper declines, SDPA serves (faster than the mma kernel on sm_90)
    sageattn3.sageattn(*make_qkv(1, 2, 2, 8192, 8192, 256))
    assert sageattn3.stats()["served"].get("hopper") == 1 and sum(sageattn3.stats()["fallback"].values()) == 2
    # causal calls have their own threshold on sm_90 (8192^2): 4096^2 goes to SDPA, 8192^2 to hopper
    sageattn3.reset_stats()
    sageattn3.sageattn(*make_qkv(1, 2, 2, 4096, 4096, 64), is_causal=True)
    sageattn3.sageattn(*make_qkv(1, 2, 2, 8192, 8192, 64), is_causal=True)
    assert sageattn3.stats() == {"served": {"hopper": 1}, "fallback": {"short_seq": 1}}


def test_auto_sends_short_key_cross_attention_to_sdpa():
    """Enough scores (16384 x 1100 > 4096^2) but fewer keys than MIN_KEYS_BY_ARCH[90]: SDPA under
    auto (reason short_keys, once per call), hopper when forced, both close to float64."""
    q, k, v = make_qkv(1, 2, 2, 16384, 1100, 128)
    sageattn3.reset_stats()
    out = sageattn3.sageattn(q, k, v)
    assert sageattn3.stats() == {"served": {}, "fallback": {"short_keys": 1}}
    forced = sageattn3.sageattn(q, k, v, kernel="hopper")
    assert sageattn3.stats()["served"] == {"hopper": 1}
    rows = torch.randperm(16384, device="cuda")[:64].sort().values
    for o in (out, forced):
        _check_f64(o, q, k, v, "HND", None, False, rows=rows)


def test_v_rounding_bias_is_removed():
    """V whose e4m3 codes all round the same way (every key but one at 0.53, so 0.53 * 448 lands
    between two codes; key 0 at 1.0 sets the scale): without the kernel's V fix (the reference's
    v_mean_fix) every output is off by that rounding error, the same sign everywhere; with it the
    mean signed error against float64 is a small fraction of it."""
    err, bias = v_rounding_bias_case(run_hopper, 448.0)
    assert err > 2e-3  # the inputs do what the test needs: a shared, one-signed rounding error
    assert abs(bias) < err / 4, (bias, err)


def test_cuda_graph_capture():
    assert_graph_replays("hopper")


@needs_c_compiler
def test_torch_compile_fullgraph():
    assert_compiles_fullgraph("hopper")


@pytest.mark.parametrize("sk", [1000, 40000])
def test_graph_replays_with_new_k_and_v(sk):
    """The pre-pass statistics (K mean, V scales) depend on K and V: each replay of a captured
    call recomputes them from the new contents, nothing is carried over from capture."""
    q, k, v = make_qkv(1, 2, 1, 257, sk, 128)
    f = lambda: sageattn3.sageattn(q, k, v, kernel="hopper")  # noqa: E731
    g, _, static_out = capture_graph(f)
    for i in range(3):
        q2, k2, v2 = make_qkv(1, 2, 1, 257, sk, 128)
        q.copy_(q2)
        k.copy_(k2 * (1 + i))
        v.copy_(v2 * (3 - i))
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, sageattn3.sageattn(q, k, v, kernel="hopper")), f"replay {i}"


# ----------------------------------------------------------------------------- LSE output

@pytest.mark.parametrize("layout", ["HND", "NHD", "NHD_FLAT"])
@pytest.mark.parametrize("sq,sk,d,causal,hq,hkv", [(300, 477, 128, False, 4, 2), (333, 333, 64, True, 2, 2),
                                                  (1000, 1000, 128, True, 2, 1), (129, 2000, 96, False, 2, 2)])
def test_lse_against_float64_and_the_reference(layout, sq, sk, d, causal, hq, hkv):
    from sageattn3 import _lse
    heads = hq if layout == "NHD_FLAT" else None
    q, k, v = make_qkv(1, hq, hkv, sq, sk, d, layout=layout)
    out, lse = _lse.attention_with_lse(q, k, v, layout=layout, heads=heads, is_causal=causal, kernel="hopper")
    assert lse.shape == (1, hq, sq) and lse.dtype == torch.float32 and lse.is_contiguous()
    assert not torch.isnan(lse).any()
    qh = to_hnd(q, layout, hq)
    kh, vh = (to_hnd(t, layout, hkv) for t in (k, v))  # GQA: K/V have their own head count
    _check_f64(to_hnd(out, layout, hq), qh, kh, vh, "HND", None, causal)
    # The K offset (8 sigma) puts sm_scale * q.mean(K) of order 10 into every row: leaving the
    # smoothing correction out would miss by that much. What remains is the INT8 score error.
    err = (lse.double() - lse64(qh, kh, causal=causal)).abs()
    assert float(err.max()) < 0.05 and float(err.mean()) < 0.01, (float(err.max()), float(err.mean()))
    import numpy as np
    arr = [t.float().cpu().numpy() for t in (qh, kh, vh)]
    _, ref_lse = _C.reference_attention(*arr, mode="int8-fp8", is_causal=causal, smooth_k=True,
                                        per_block_mean=False, layout="HND", return_lse=True,
                                        **_check.FAMILY_NUMERICS["hopper"]["ref"])
    tight = (lse.cpu().double() - torch.from_numpy(np.asarray(ref_lse)).double()).abs()
    assert float(tight.max()) < 2e-3, float(tight.max())


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_ring_of_hopper_calls_merges_to_full_attention(parts):
    """Each K/V chunk through the kernel (its own K mean and scales), merged by LSE."""
    q, k, v = make_qkv(1, 4, 4, 700, 4099, 128, layout="NHD")
    sageattn3.reset_stats()
    acc = ring_of_calls(q, k, v, parts, kernel="hopper")
    assert sageattn3.stats()["served"].get("hopper") == parts
    full = ref64(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    assert rel_l1(acc[0].transpose(1, 2), full) <= F64_BOUND
    torch.testing.assert_close(acc[1].double(), lse64(q.transpose(1, 2), k.transpose(1, 2)),
                               atol=0.05, rtol=0)


def test_public_api_return_lse_is_served_by_the_kernel():
    sageattn3.reset_stats()
    q, k, v = make_qkv(1, 2, 2, 8192, 8192, 128)
    out, lse = sageattn3.sageattn(q, k, v, return_lse=True)
    assert sageattn3.stats()["served"].get("hopper") == 1
    rows = torch.randperm(8192, device="cuda")[:64].sort().values
    ref = lse64(q[:, :, rows], k)
    assert float((lse[:, :, rows].double() - ref).abs().max()) < 0.05
    # forced, the mma kernel writes the LSE too (issue 14; it used to decline with "lse")
    o2, l2 = sageattn3.sageattn(q, k, v, return_lse=True, kernel="mma")
    assert sageattn3.stats()["served"].get("mma") == 1 and "lse" not in sageattn3.stats()["fallback"]
    assert float((l2[:, :, rows].double() - ref).abs().max()) < 0.05


@needs_c_compiler
def test_torch_compile_with_return_lse():
    assert_compiles_fullgraph("hopper", return_lse=True)
