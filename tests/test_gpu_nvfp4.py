"""nvfp4 kernel family (cuda/nvfp4/) on a real GPU. On Hopper (the sm_90a build) the block-scaled
FP4 MMA is emulated (cuda/nvfp4/nvfp4_mma.cuh); on an sm_120 card the native instruction runs
and the layout test also compares it with the emulation.

  * the MMA fragment layout on its own: random packed fragments through the emulated MMA (and
    the native one where it runs) against a plain matrix product, bit-exact against an fp32
    mirror of the emulation's order, tight against float64;
  * the pre-pass: the workspace's codes, block scales, second-level scales, K mean and Q block
    means equal the C reference's (`_C.reference_nvfp4_quantize`, the functions
    reference_attention(mode="nvfp4") uses) bit for bit, padding zero;
  * the attention against the C reference in mode nvfp4 (REF_BOUND, derived below) and against
    float64 (_check.bound("nvfp4")), odd lengths, GQA/MQA, causal, HND/NHD/NHD_FLAT, fp16/bf16,
    LSE; outputs and workspace poisoned before every run, inputs fresh random and unmodified;
  * the self-test: it passes on the emulated kernel, and a forced failure disables nvfp4.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sageattn3  # noqa: E402
from sageattn3 import _check, _dispatch, _selftest  # noqa: E402
from sageattn3._ext import _C  # noqa: E402

from gpu_helpers import (assert_compiles_fullgraph, assert_graph_replays, fresh, make_qkv,  # noqa: E402,F401
                         needs_c_compiler, random_qkv, ref64, rel_l1, to_hnd)  # (fresh: a fixture)

_HAS = (torch.cuda.is_available() and _C is not None and _C.HAS_CUDA
        and "nvfp4" in _C.device_info(torch.cuda.current_device()).get("families", []))
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _HAS, reason="the nvfp4 family does not run on this GPU/build")]

# Against the C reference in mode nvfp4: the kernel quantizes exactly as the reference does
# (test_quantization_is_bit_exact), its emulated MMA adds in the reference's order, and its
# softmax rescales at the same 64-key blocks. What differs: ex2.approx vs exp2f (~2 ulp), which
# moves a P code or P block scale across a rounding boundary only when p lies within ~1e-6
# relative of one (a few elements per million), the order of the row sum l, and the final
# bf16/fp16 rounding of the output (rel-L1 ~1e-3 for bf16). 5e-3 leaves headroom over those and
# is ~30x below NVFP4's own error (0.15-0.2), so any mismatch in quantization, layout or
# scaling fails it.
REF_BOUND = 5e-3


def _f64_bound(d, scale=None, dtype=torch.bfloat16):
    return _check.bound("nvfp4", d, scale) + (0.003 if dtype == torch.bfloat16 else 0.001)


def _run(q, k, v, *, layout="HND", heads=None, causal=False, scale=None, lse=False):
    """The nvfp4 family directly (no policy), output NaN-poisoned, workspace 0xFF-poisoned.
    Returns (out, workspace, lse or None)."""
    prob = _dispatch.problem(q, k, v, layout, heads, causal, scale)
    lse_t = None
    if lse:
        b, hq, sq = to_hnd(q, layout, heads).shape[:3]
        lse_t = torch.full((b, hq, sq), float("nan"), dtype=torch.float32, device=q.device)
        r = prob.select((("nvfp4", "fp16"),), 0, lse_t)
    else:
        r = prob.select((("nvfp4", "fp16"),), 0)
    assert r[0] == "nvfp4", r
    nbytes = r[1]
    out = torch.full(prob.out_shape, float("nan"), dtype=q.dtype, device=q.device)
    ws = torch.full((nbytes,), 0xFF, dtype=torch.uint8, device=q.device)
    prob.launch(out, ws.data_ptr(), nbytes, torch.cuda.current_stream(q.device).cuda_stream)
    torch.cuda.synchronize()
    return out, ws, lse_t


def _reference(qh, kh, vh, *, causal, scale=None, lse=False):
    arr = [t.float().cpu().numpy() for t in (qh, kh, vh)]
    r = _C.reference_attention(*arr, mode="nvfp4", is_causal=causal, sm_scale=scale, smooth_k=True,
                               return_lse=lse, **_check.FAMILY_NUMERICS["nvfp4"]["ref"])
    if lse:
        return torch.from_numpy(np.asarray(r[0])), torch.from_numpy(np.asarray(r[1]))
    return torch.from_numpy(np.asarray(r))


# ----------------------------------------------------------------------------- MMA layout

E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float64)


def _e4m3(codes):
    return torch.from_numpy(np.ascontiguousarray(codes, dtype=np.uint8)).view(torch.float8_e4m3fn).float().numpy()


def _pack_rows(codes):
    """(..., 64) nibble codes -> (..., 32) bytes, lower nibble = even k."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def test_mma_fragment_layout_matches_a_plain_matrix_product():
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    n = 96
    a = rng.integers(0, 16, size=(n, 16, 64), dtype=np.uint8)
    b = rng.integers(0, 16, size=(n, 8, 64), dtype=np.uint8)  # column c's 64 k
    # scales 2^-6 .. ~30 (no NaN 0x7F), some zero
    sa = rng.integers(0x08, 0x60, size=(n, 16, 4), dtype=np.uint8)
    sb = rng.integers(0x08, 0x60, size=(n, 8, 4), dtype=np.uint8)
    sa[rng.random(sa.shape) < 0.05] = 0
    c = rng.standard_normal((n, 16, 8)).astype(np.float32)
    dev = "cuda"
    ta = torch.from_numpy(_pack_rows(a)).to(dev)
    tb = torch.from_numpy(_pack_rows(b)).to(dev)
    tsa, tsb = torch.from_numpy(sa).to(dev), torch.from_numpy(sb).to(dev)
    tc = torch.from_numpy(c).to(dev)
    td = torch.full((n, 16, 8), float("nan"), device=dev)
    tdn = torch.full((n, 16, 8), float("nan"), device=dev)
    (binary,) = _C.family_test("nvfp4", "mma", [n, ta.data_ptr(), tsa.data_ptr(), tb.data_ptr(), tsb.data_ptr(),
                                                tc.data_ptr(), td.data_ptr(), tdn.data_ptr()], 1,
                               torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    d = td.cpu().numpy()
    av, bv = E2M1[a], E2M1[b]                        # (n,16,64), (n,8,64)
    fa, fb = _e4m3(sa).astype(np.float64), _e4m3(sb).astype(np.float64)
    terms = np.zeros((n, 4, 16, 8))
    for i in range(4):
        part = np.einsum("nrk,nck->nrc", av[:, :, 16 * i:16 * i + 16], bv[:, :, 16 * i:16 * i + 16])
        terms[:, i] = fa[:, :, i][:, :, None] * fb[:, :, i][:, None, :] * part  # exact in fp32 too
    # the emulation's order: d = (((c + t0) + t1) + t2) + t3 in fp32
    mirror = c.copy()
    for i in range(4):
        assert np.array_equal(terms[:, i].astype(np.float32).astype(np.float64), terms[:, i])
        mirror = (mirror + terms[:, i].astype(np.float32)).astype(np.float32)
    assert np.array_equal(d, mirror), f"emulated MMA differs from the fp32 mirror at {np.argwhere(d != mirror)[:5]}"
    exact = c.astype(np.float64) + terms.sum(axis=1)
    tol = 1e-6 * (np.abs(c) + np.abs(terms).sum(axis=1)) + 1e-30
    assert (np.abs(d - exact) <= tol).all()
    if binary >= 120:  # the native instruction ran too: same product, its own (undocumented) accumulation
        dn = tdn.cpu().numpy()
        assert np.isfinite(dn).all(), "native MMA left outputs unwritten"
        # a wrong fragment or scale mapping is off by O(1); the hardware's internal precision is unknown
        loose = 1e-3 * (np.abs(c) + np.abs(terms).sum(axis=1)) + 1e-30
        bad = np.argwhere(np.abs(dn - exact) > loose)
        assert not len(bad), f"native MMA differs from the exact product (layout?) at (problem, row, col) {bad[:5]}"


# ----------------------------------------------------------------------------- quantization

def _nibbles(raw):
    """uint8 (..., n) -> e2m1 values (..., 2n), lower nibble first."""
    lo, hi = E2M1[raw & 15], E2M1[raw >> 4]
    return np.stack([lo, hi], axis=-1).reshape(*raw.shape[:-1], -1).astype(np.float32)


def _padded_equal(got, want, what):
    """got (padded) equals want in its top-left corner and is 0 elsewhere."""
    r, c = want.shape
    assert np.array_equal(got[:r, :c], want), f"{what} differ from the C reference"
    rest = got.copy()
    rest[:r, :c] = 0
    assert not rest.any(), f"{what}: padding not zero"


@pytest.mark.parametrize("b,hq,hkv,sq,sk,d,layout,dtype", [
    (1, 2, 2, 77, 77, 64, "HND", torch.bfloat16),
    (2, 4, 2, 130, 333, 128, "NHD", torch.float16),
    (1, 3, 1, 65, 600, 40, "HND", torch.bfloat16),   # partial 16-group along d, MQA, > 2 K chunks
    (1, 2, 2, 300, 257, 72, "NHD_FLAT", torch.float16),
])
def test_quantization_is_bit_exact(b, hq, hkv, sq, sk, d, layout, dtype):
    heads = hq if layout == "NHD_FLAT" else None
    q, k, v = make_qkv(b, hq, hkv, sq, sk, d, layout=layout, dtype=dtype)
    copies = [t.clone() for t in (q, k, v)]
    _, ws, _ = _run(q, k, v, layout=layout, heads=heads)
    assert all(torch.equal(x, y) for x, y in zip((q, k, v), copies)), "inputs were modified"
    off = _C.family_test("nvfp4", "ws_layout", [b, hq, hkv, sq, sk, d], 15, 0)
    o_qc, o_qs, o_kc, o_ks, o_vc, o_vs, o_km, o_gq, o_gk, o_gv, o_qm, sqp, skp, dp, nbytes = off
    assert nbytes == ws.numel()
    w = ws.cpu().numpy()

    def u8(o, *shape):
        return w[o:o + int(np.prod(shape))].reshape(shape)

    def f32(o, n):
        return w[o:o + 4 * n].view(np.float32)

    qh, kh, vh = (to_hnd(t, layout, h).float().cpu().numpy() for t, h in ((q, heads), (k, hkv if heads else None),
                                                                             (v, hkv if heads else None)))
    ng = dp // 16
    for bb in range(b):
        for h in range(hkv):
            i = bb * hkv + h
            rk = _C.reference_nvfp4_quantize(kh[bb, h], groups="rows", smooth="mean")
            rv = _C.reference_nvfp4_quantize(vh[bb, h], groups="cols", smooth="none")
            assert np.array_equal(f32(o_km, b * hkv * dp).reshape(b * hkv, dp)[i, :d], rk["mean"][0]), "K mean"
            assert f32(o_gk, b * hkv)[i] == np.float32(rk["g"]), "K second-level scale"
            assert f32(o_gv, b * hkv)[i] == np.float32(rv["g"]), "V second-level scale"
            _padded_equal(_nibbles(u8(o_kc, b * hkv, skp, dp // 2)[i]), rk["codes"], "K codes")
            _padded_equal(_e4m3(u8(o_ks, b * hkv, skp, ng)[i]), rk["scales"], "K block scales")
            _padded_equal(_nibbles(u8(o_vc, b * hkv, dp, skp // 2)[i]).T, rv["codes"], "V codes")
            _padded_equal(_e4m3(u8(o_vs, b * hkv, dp, skp // 16)[i]).T, rv["scales"], "V block scales")
        for h in range(hq):
            i = bb * hq + h
            rq = _C.reference_nvfp4_quantize(qh[bb, h], groups="rows", smooth="block", block=64)
            got_qm = f32(o_qm, b * hq * (sqp // 64) * dp).reshape(b * hq, sqp // 64, dp)[i]
            _padded_equal(got_qm, rq["mean"], "Q block means")
            assert f32(o_gq, b * hq)[i] == np.float32(rq["g"]), "Q second-level scale"
            _padded_equal(_nibbles(u8(o_qc, b * hq, sqp, dp // 2)[i]), rq["codes"], "Q codes")
            _padded_equal(_e4m3(u8(o_qs, b * hq, sqp, ng)[i]), rq["scales"], "Q block scales")


# ----------------------------------------------------------------------------- attention

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sq,sk,d,causal,hq,hkv", [
    (1, 1, 128, False, 2, 2),
    (64, 64, 64, False, 2, 2),
    (300, 477, 128, False, 2, 2),
    (257, 300, 128, True, 4, 2),
    (200, 200, 64, False, 3, 1),
    (333, 333, 64, True, 2, 2),
    (190, 611, 96, False, 2, 2),
    (77, 1029, 40, True, 4, 4),
    (65, 190, 32, True, 3, 1),
])
def test_matches_cpu_reference_and_float64(dtype, sq, sk, d, causal, hq, hkv):
    q, k, v = make_qkv(1, hq, hkv, sq, sk, d, dtype=dtype)
    copies = [t.clone() for t in (q, k, v)]
    out, _, _ = _run(q, k, v, causal=causal)
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) output elements"
    assert all(torch.equal(x, y) for x, y in zip((q, k, v), copies)), "inputs were modified"
    ref = _reference(q, k, v, causal=causal).to(dtype)
    err = rel_l1(out.float().cpu(), ref.double())
    assert err <= REF_BOUND, f"rel-L1 vs the C reference (nvfp4) {err:.2e} > {REF_BOUND}"
    err64 = rel_l1(out, ref64(q, k, v, causal=causal))
    assert err64 <= _f64_bound(d, dtype=dtype), f"rel-L1 vs float64 {err64:.4f}"


@pytest.mark.parametrize("layout", ["HND", "NHD", "NHD_FLAT"])
@pytest.mark.parametrize("d", [64, 72, 128])
def test_layouts_and_head_dims(layout, d):
    heads = 3 if layout == "NHD_FLAT" else None
    q, k, v = make_qkv(2, 3, 3, 517, 389, d, layout=layout, dtype=torch.bfloat16)
    out, _, _ = _run(q, k, v, layout=layout, heads=heads)
    assert out.shape == q.shape and out.dtype == q.dtype
    qh, kh, vh, oh = (to_hnd(t, layout, heads) for t in (q, k, v, out))
    assert not torch.isnan(oh).any()
    ref = _reference(qh, kh, vh, causal=False).to(torch.bfloat16)
    assert rel_l1(oh.float().cpu(), ref.double()) <= REF_BOUND
    assert rel_l1(oh, ref64(qh, kh, vh)) <= _f64_bound(d)


@pytest.mark.parametrize("causal", [False, True])
def test_q_with_a_channel_offset(causal):
    """Q with a large per-channel offset (what Q smoothing is for): the kernel subtracts each
    64-row block's mean before NVFP4 and adds dot(mean, K_j) back per key, so its error stays
    NVFP4's and it still matches the reference."""
    q, k, v = make_qkv(1, 2, 2, 333, 517, 128, dtype=torch.bfloat16)
    q = (q.float() + 2.0 * torch.randn(1, 2, 1, 128, device="cuda")).to(torch.bfloat16)
    out, _, _ = _run(q, k, v, causal=causal)
    ref = _reference(q, k, v, causal=causal).to(torch.bfloat16)
    assert rel_l1(out.float().cpu(), ref.double()) <= REF_BOUND
    assert rel_l1(out, ref64(q, k, v, causal=causal)) <= _f64_bound(128)


def test_scale_and_long_causal_rows_vs_float64():
    q, k, v = make_qkv(1, 2, 2, 4097, 4097, 128, dtype=torch.bfloat16)
    scale = 0.05
    out, _, _ = _run(q, k, v, causal=True, scale=scale)
    rows = torch.randperm(4097, device="cuda")[:96].sort().values
    rows[-1] = 4096
    ref = ref64(q, k, v, causal=True, scale=scale, rows=rows)
    assert rel_l1(out[:, :, rows], ref) <= _f64_bound(128, scale)


@pytest.mark.parametrize("causal", [False, True])
def test_lse_matches_the_reference(causal):
    q, k, v = make_qkv(1, 4, 2, 211, 333, 128, dtype=torch.bfloat16)
    out, _, lse = _run(q, k, v, causal=causal, lse=True)
    ref_out, ref_lse = _reference(q, k, v, causal=causal, lse=True)
    assert not torch.isnan(lse).any()
    assert rel_l1(out.float().cpu(), ref_out.double()) <= REF_BOUND
    # natural-log LSE: the reference's own quantized scores; differences are exp2/sum order
    diff = (lse.cpu().double() - ref_lse.double()).abs().max().item()
    assert diff <= 1e-3, f"max |lse - reference| {diff:.2e}"


def test_workspace_is_all_the_kernel_needs():
    """Two different calls back to back, each with a freshly poisoned workspace, each equal to its
    own reference: nothing carries over between calls (no hidden state, no stale statistics)."""
    for seed_shape in ((1, 2, 2, 150, 150, 64), (2, 2, 1, 99, 700, 128)):
        q, k, v = make_qkv(*seed_shape, dtype=torch.bfloat16)
        out, _, _ = _run(q, k, v)
        ref = _reference(q, k, v, causal=False).to(torch.bfloat16)
        assert rel_l1(out.float().cpu(), ref.double()) <= REF_BOUND


def test_v_fix_is_the_references():
    """The kernel adds V's fix (minus the mean over keys of V's dequantized value minus V, per
    channel: FAMILY_NUMERICS["nvfp4"] has v_mean_fix): it matches the reference with the fix,
    is measurably away from the one without it, and is closer to float64 than the unfixed
    reference (at 2048 keys the fix takes ~5% off the rel-L1: tests/test_reference.py)."""
    q, k, v = make_qkv(1, 2, 2, 256, 2048, 128, dtype=torch.bfloat16)
    out, _, _ = _run(q, k, v)
    fixed = _reference(q, k, v, causal=False).to(torch.bfloat16)
    arr = [t.float().cpu().numpy() for t in (q, k, v)]
    ref = dict(_check.FAMILY_NUMERICS["nvfp4"]["ref"], v_mean_fix=False)
    base = torch.from_numpy(np.asarray(_C.reference_attention(*arr, mode="nvfp4", smooth_k=True, **ref)))
    got = out.float().cpu()
    assert rel_l1(got, fixed.double()) <= REF_BOUND
    assert rel_l1(got, base.to(torch.bfloat16).double()) > 2 * REF_BOUND, "the kernel's output lacks V's fix"
    f64 = ref64(q, k, v)
    assert rel_l1(out, f64) < 0.97 * rel_l1(base.to(out.device), f64)


def test_deterministic_and_cuda_graph_capture():
    """No hidden state: two runs agree bit for bit (the one cross-CTA sum, V's fix, adds its
    partials in tile order whichever CTA finishes last); a captured graph replays on new inputs
    like an eager call (the first eager call there runs the self-test, outside capture)."""
    q, k, v = make_qkv(1, 2, 2, 700, 900, 128)
    a, _, _ = _run(q, k, v)
    b, _, _ = _run(q, k, v)
    assert torch.equal(a, b)
    assert_graph_replays("nvfp4")


@needs_c_compiler
def test_torch_compile_fullgraph():
    assert_compiles_fullgraph("nvfp4")


# ----------------------------------------------------------------------------- self-test

def test_self_test_runs_and_passes_on_first_use(fresh):
    """nvfp4 is verified nowhere: its first call runs the self-test (here on the emulated MMA)."""
    fresh.delenv("SAGEATTN3_SELF_TEST", raising=False)
    q, k, v = random_qkv()
    out = sageattn3.sageattn(q, k, v, tensor_layout="NHD_FLAT", heads=2, kernel="nvfp4")
    torch.cuda.synchronize()
    st = _selftest._status[(torch.cuda.current_device(), "nvfp4")]
    assert st.state == "passed", st.detail
    assert sageattn3.stats()["served"].get("nvfp4", 0) >= 1
    qh, kh, vh, oh = (to_hnd(t, "NHD_FLAT", 2) for t in (q, k, v, out))
    assert rel_l1(oh, ref64(qh, kh, vh)) <= _f64_bound(128)


def test_forced_self_test_failure_disables_nvfp4(fresh, caplog):
    fresh.setenv("SAGEATTN3_SELF_TEST", "force-fail")
    q, k, v = random_qkv()
    with caplog.at_level("WARNING", logger="sageattn3"):
        out = sageattn3.sageattn(q, k, v, tensor_layout="NHD_FLAT", heads=2, kernel="nvfp4")
        out2 = sageattn3.sageattn(q, k, v, tensor_layout="NHD_FLAT", heads=2, kernel="nvfp4")
    torch.cuda.synchronize()
    st = _selftest._status[(torch.cuda.current_device(), "nvfp4")]
    assert st.state == "failed"
    assert sageattn3.stats() == {"served": {}, "fallback": {_selftest.FAILED_KEY: 2}}
    assert sum("failed its self-test" in r.getMessage() for r in caplog.records) == 1
    qh, kh, vh = (to_hnd(t, "NHD_FLAT", 2) for t in (q, k, v))
    ref = ref64(qh, kh, vh)
    for o in (out, out2):  # SDPA's answer
        assert rel_l1(to_hnd(o, "NHD_FLAT", 2), ref) <= 0.005
