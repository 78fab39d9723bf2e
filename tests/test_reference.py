"""CPU reference of the quantized attention (sageattn3._C.reference_attention / convert).

Every test draws fresh random inputs; the seed is in every failure message, and
SA3_TEST_SEED=<int> replays a failing run.

How the quantized modes are judged (the bound is derived, not tuned)
--------------------------------------------------------------------
Write o_i = sum_j p_ij v_j with p = softmax(s). Quantization perturbs the scores by ds_ij,
P by dp_ij and V by dv_j. To first order (softmax Jacobian: dp_ij = p_ij (ds_ij - sum_k p_ik ds_ik)):

    do_i = sum_j p_ij ds_ij (v_j - o_i)  +  sum_j dp_ij v_j  +  sum_j p_ij dv_j

Each rounding error is treated as an independent, zero-mean, uniform variable over the
rounding interval (variance step^2 / 12), so

    Var(do_id) = sum_j p_ij^2 Var(ds_ij) (v_jd - o_id)^2 + sum_j Var(dp_ij) v_jd^2 + sum_j p_ij^2 Var(dv_jd)

with, per mode (all computed from the actual test data in `predicted_rms`):
  * INT8 Q/K (step = block amax / 127, error uniform in +-step/2 => variance step^2/12):
        ds_ij = scale * (qs_i . dk_j + dq_i . ks_j)
        Var(ds_ij) = scale^2 * sum_d (qs_id^2 dk_jd^2/12 + ks_jd^2 dq_id^2/12)
    where qs/ks are what is actually quantized (Q minus its block mean with per_block_mean,
    K minus its channel mean with smooth_k): that is why smoothing matters when K has a
    large per-channel offset (the step follows amax of K, not of K - mean).
  * fp16 / bf16 P (int8-fp16): RNE relative error <= u = 2^-11 / 2^-8, uniform => variance
    <= u^2/3 * p^2 (an upper bound: the interval is 2u|x| wide at most).
  * e4m3 P and V (int8-fp8): 3 mantissa bits, u = 2^-4 => variance <= u^2/3 * x^2 (P is
    scaled by 448 and V per channel by 448/amax first, so both are in the normal range).
    int8-fp8-f16acc: the same (V scaled by 1.75/amax: the same codes / 256, except e4m3
    subnormals below amax/112, whose absolute step 2^-9 * amax/1.75 is negligible here; the fp16
    partials add 2^-11 relative per 32-key step, far below e4m3's 2^-4).
  * NVFP4: per group of 16 the scale is amax/6 (e4m3-rounded), and e2m1's grid relative to
    it has step 0.5 below 2, 1 below 4, 2 up to 6 => variance (step * amax/6)^2 / 12 per
    element; groups along D for Q/K, along tokens for V, along keys for P.
The predicted rel-L1 is sqrt(2/pi) * sum RMS / sum |o| (E|X| of a normal variable). The
model is first order and its FP8/FP4 variances are upper bounds: over ~5000 seeded runs of
these shapes measured/predicted averaged 0.5-1.0 with a worst case of 1.5 (the realized
error of one draw fluctuates most when few independent rounding errors dominate: tiny
shapes, peaked softmax), so a test fails at 2x. Max-abs sanity: no element's error exceeds
6x the largest predicted per-element RMS (worst seen 3.7).
The EXACT mode is fp32 arithmetic against float64: rel-L1 and max-abs (relative to
max |ref|) within 1e-5 (measured ~4e-7 and ~3e-6 at S = 1000).
"""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest

from np_reference import attention64

_C = pytest.importorskip("sageattn3._C")

MODES_Q = ["int8-fp16", "int8-fp8", "int8-fp8-f16acc", "nvfp4"]
F32 = np.float32


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


class SeededRng:
    """np.random.Generator that remembers its seed (Generator itself takes no attributes)."""

    def __init__(self, seed: int):
        self.seed_value = seed
        self._gen = np.random.default_rng(seed)

    def __getattr__(self, name):
        return getattr(self._gen, name)


@pytest.fixture
def rng():
    """A fresh generator per test; its seed goes into failure messages (see `tag`)."""
    return SeededRng(int(os.environ.get("SA3_TEST_SEED", secrets.randbits(64))))


def tag(rng) -> str:
    return f"(seed {rng.seed_value}; rerun with SA3_TEST_SEED={rng.seed_value})"


def make_qkv(rng, B=1, Hq=2, Hkv=2, Sq=64, Sk=64, D=64, k_offset=0.0, dtype=np.float16):
    """Gaussian q/k/v in (B, H, S, D); K gets a per-channel offset N(0,1)*k_offset shared
    by all tokens of a head (as real DiT keys have)."""
    q = rng.standard_normal((B, Hq, Sq, D))
    k = rng.standard_normal((B, Hkv, Sk, D)) + k_offset * rng.standard_normal((B, Hkv, 1, D))
    v = rng.standard_normal((B, Hkv, Sk, D))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


def softmax_ref(q, k, v, *, is_causal=False, sm_scale=None):
    """float64 attention (HND) with GQA by repetition and a top-left causal mask; also
    returns the probabilities."""
    out, _lse, p = attention64(q, k, v, is_causal=is_causal, sm_scale=sm_scale)
    return out, p


def rel_l1(out, ref):
    return float(np.abs(out - ref).sum() / np.abs(ref).sum())


def _int8_var(x, block):
    """Per-element variance of INT8 rounding: (amax_block / 127)^2 / 12, blocks of rows."""
    var = np.empty_like(x)
    for s0 in range(0, x.shape[2], block):
        amax = np.abs(x[:, :, s0 : s0 + block]).max(axis=(2, 3), keepdims=True)
        var[:, :, s0 : s0 + block] = (amax / 127.0) ** 2 / 12.0
    return var


def _fp4_var(x, axis):
    """Per-element variance of NVFP4 rounding, groups of 16 along `axis` (last partial)."""
    xm = np.moveaxis(x, axis, -1)
    n = xm.shape[-1]
    pad = (-n) % 16
    if pad:
        xm = np.concatenate([xm, np.zeros(xm.shape[:-1] + (pad,))], -1)
    g = xm.reshape(xm.shape[:-1] + (-1, 16))
    unit = np.abs(g).max(-1, keepdims=True) / 6.0
    t = np.abs(g) / np.where(unit > 0, unit, 1.0)
    step = np.where(t < 2, 0.5, np.where(t < 4, 1.0, 2.0))
    var = ((step * unit) ** 2 / 12.0).reshape(xm.shape)[..., :n]
    return np.moveaxis(var, -1, axis)


def predicted_rms(q, k, v, *, mode, is_causal=False, smooth_k=True, per_block_mean=False, q_block=32,
                  k_block=64, pv_dtype="bf16", sm_scale=None):
    """(float64 reference, per-element predicted RMS error) for HND inputs; see the module
    docstring for the derivation."""
    o, p = softmax_ref(q, k, v, is_causal=is_causal, sm_scale=sm_scale)
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, rep, 1), np.repeat(v, rep, 1)
    scale = 1.0 / np.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    ks = k - k.mean(2, keepdims=True) if smooth_k else k
    qs = q.copy()
    if per_block_mean:
        for s0 in range(0, q.shape[2], q_block):
            qs[:, :, s0 : s0 + q_block] -= q[:, :, s0 : s0 + q_block].mean(2, keepdims=True)
    if mode == "nvfp4":
        var_q, var_k = _fp4_var(qs, 3), _fp4_var(ks, 3)
    else:
        var_q, var_k = _int8_var(qs, q_block), _int8_var(ks, k_block)
    var_s = scale**2 * (np.einsum("bhid,bhjd->bhij", qs**2, var_k) + np.einsum("bhid,bhjd->bhij", var_q, ks**2))
    w = p**2 * var_s  # sum_j w_ij (v_jd - o_id)^2, expanded
    t_score = (np.einsum("bhij,bhjd->bhid", w, v**2) - 2 * o * np.einsum("bhij,bhjd->bhid", w, v)
               + o**2 * w.sum(-1)[..., None])
    if mode == "int8-fp16":
        u = 2.0**-11 if pv_dtype in ("f16", "fp16", "float16") else 2.0**-8
        var_p, var_v = u**2 / 3 * p**2, u**2 / 3 * v**2
    elif mode in ("int8-fp8", "int8-fp8-f16acc"):  # f16acc: + 2^-11 per fp16 partial, not modelled
        u = 2.0**-4
        var_p, var_v = u**2 / 3 * p**2, u**2 / 3 * v**2
    else:
        var_p, var_v = _fp4_var(p, 3), _fp4_var(v, 2)
    t_pv = np.einsum("bhij,bhjd->bhid", var_p, v**2) + np.einsum("bhij,bhjd->bhid", p**2, var_v)
    return o, np.sqrt(np.maximum(t_score, 0.0) + t_pv)


def check_quantized(rng, q, k, v, **kw):
    """Run the reference, compare with the derived bound; returns the measured rel-L1."""
    out = _C.reference_attention(q, k, v, **kw)
    pkw = {key: kw[key] for key in ("is_causal", "smooth_k", "per_block_mean", "q_block", "k_block", "pv_dtype",
                                    "sm_scale") if key in kw}
    ref, rms = predicted_rms(q, k, v, mode=kw["mode"], **pkw)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.isfinite(out).all(), tag(rng)
    measured = rel_l1(out, ref)
    predicted = np.sqrt(2 / np.pi) * rms.sum() / np.abs(ref).sum()
    info = f"{kw} shapes q{q.shape} k{k.shape}: rel-L1 {measured:.5f}, predicted {predicted:.5f} {tag(rng)}"
    assert measured <= 2.0 * predicted, info
    worst = float(np.abs(out - ref).max() / rms.max())
    assert worst <= 6.0, f"max |err| = {worst:.1f} x the largest predicted RMS; " + info
    return measured


# ---------------------------------------------------------------------------------------
# conversions
# ---------------------------------------------------------------------------------------


def conv(values, kind, dtype=np.float32):
    return _C.convert(np.asarray(values, dtype=dtype), kind)


def test_e4m3_known_values():
    x = [448.1, 1e6, -1e6, np.inf, -np.inf, 464.0, 465.0, 480.0, 0.0, -0.0, 1.0, 1.0625, 1.1875,
         2.0**-9, 2.0**-10, 3 * 2.0**-10, 2.0**-6, 2.0**-6 - 2.0**-10, 0.1]
    want = [448, 448, -448, 448, -448, 448, 448, 448, 0, 0, 1.0, 1.0, 1.25,
            2.0**-9, 0.0, 2.0**-8, 2.0**-6, 2.0**-6, 0.1015625]
    # 1.0625 is halfway between 1 and 1.125 -> even mantissa (1.0); 1.1875 halfway between
    # 1.125 and 1.25 -> 1.25 (even); 2^-10 is half the smallest subnormal -> 0 (even);
    # 3*2^-10 = 1.5 subnormal units -> 2 units; 2^-6 - 2^-10 = 7.5 units -> 8 = 2^-6.
    got = conv(x, "e4m3")
    np.testing.assert_array_equal(got, np.array(want, np.float32))
    assert np.signbit(conv([-0.0], "e4m3"))[0]
    assert np.isnan(conv([np.nan, -np.nan], "e4m3")).all()


def test_e2m1_known_values():
    x = [2.5, 5.0, 7.0, -7.0, 1e9, -np.inf, 0.25, 0.75, 1.25, 1.75, 3.5, 0.3, 2.9, 6.0, -2.5, 0.0]
    want = [2.0, 4.0, 6.0, -6.0, 6.0, -6.0, 0.0, 1.0, 1.0, 2.0, 4.0, 0.5, 3.0, 6.0, -2.0, 0.0]
    np.testing.assert_array_equal(conv(x, "e2m1"), np.array(want, np.float32))
    grid = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float32)
    np.testing.assert_array_equal(conv(grid, "e2m1"), grid)
    np.testing.assert_array_equal(conv(-grid, "e2m1"), -grid)


def test_int8_known_values():
    x = [0.5, 1.5, 2.5, -0.5, -2.5, 126.5, 127.4, 1000.0, -1000.0, np.inf, -np.inf, np.nan, 3.7, -3.7]
    want = [0, 2, 2, 0, -2, 126, 127, 127, -127, 127, -127, 0, 4, -4]
    np.testing.assert_array_equal(conv(x, "int8"), np.array(want, np.float32))


def test_bf16_f16_known_values():
    # bf16: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 -> 1; 1 + 3*2^-8 -> 1 + 2^-6 (even);
    # fp32's max is above bf16's max + half an ulp -> inf
    np.testing.assert_array_equal(conv([1 + 2.0**-8, 1 + 3 * 2.0**-8, np.finfo(np.float32).max], "bf16"),
                                  np.array([1.0, 1 + 2.0**-6, np.inf], np.float32))
    # f16: max 65504; 65519 rounds down, 65520 (tie) overflows to inf; 2^-25 is half the
    # smallest subnormal -> 0; 3*2^-25 -> 2^-23
    np.testing.assert_array_equal(conv([65504, 65519, 65520, 2.0**-25, 3 * 2.0**-25, -1e9], "f16"),
                                  np.array([65504, 65504, np.inf, 0, 2.0**-23, -np.inf], np.float32))
    assert np.isnan(conv([np.nan], "bf16")).all() and np.isnan(conv([np.nan], "f16")).all()


def test_f16_matches_numpy_exhaustively(rng):
    """Every f16 value, every midpoint between neighbours (ties) and random floats: numpy's
    float32 -> float16 cast is IEEE RNE, so it is an independent oracle."""
    all16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = np.sort(all16[np.isfinite(all16)].astype(np.float32))
    mids = ((finite[1:].astype(np.float64) + finite[:-1]) / 2).astype(np.float32)
    rand = (rng.standard_normal(20000) * np.exp2(rng.integers(-30, 17, 20000))).astype(np.float32)
    x = np.concatenate([finite, mids, rand, [70000.0, -70000.0, np.inf, -np.inf]]).astype(np.float32)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(conv(x, "f16"), want, err_msg=tag(rng))


def test_conversions_match_torch(rng):
    torch = pytest.importorskip("torch")
    # e4m3: all 254 finite codes round-trip; their midpoints (ties) and random in-range
    # values round as torch's float8_e4m3fn cast (which agrees with satfinite in range).
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).float().numpy()
    finite = np.unique(codes[np.isfinite(codes)])
    np.testing.assert_array_equal(conv(finite, "e4m3"), finite)
    mids = ((finite[1:].astype(np.float64) + finite[:-1]) / 2).astype(np.float32)
    rand = (rng.uniform(-1, 1, 50000) * np.exp2(rng.integers(-12, 9, 50000))).astype(np.float32)
    rand = rand[np.abs(rand) <= 448]
    x = np.concatenate([mids, rand]).astype(np.float32)
    want = torch.from_numpy(x).to(torch.float8_e4m3fn).float().numpy()
    np.testing.assert_array_equal(conv(x, "e4m3"), want, err_msg=tag(rng))
    # bf16 and f16 on wide-range random values, including bf16 ties
    y = (rng.standard_normal(50000) * np.exp2(rng.integers(-40, 40, 50000))).astype(np.float32)
    ties = (y.view(np.uint32) & np.uint32(0xFFFF0000)) | np.uint32(0x8000)
    y = np.concatenate([y, ties.view(np.float32)])
    np.testing.assert_array_equal(conv(y, "bf16"), torch.from_numpy(y).bfloat16().float().numpy(), err_msg=tag(rng))
    np.testing.assert_array_equal(conv(y, "f16"), torch.from_numpy(y).half().float().numpy(), err_msg=tag(rng))


def test_convert_keeps_shape_and_input():
    x = np.linspace(-500, 500, 24, dtype=np.float64).reshape(2, 3, 4)[:, ::-1]
    before = x.copy()
    out = _C.convert(x, "e4m3")
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_array_equal(x, before)
    assert _C.convert(np.array(3.0, np.float16), "int8").shape == ()


# ---------------------------------------------------------------------------------------
# exact mode against float64
# ---------------------------------------------------------------------------------------

SHAPES = [
    # (B, Hq, Hkv, Sq, Sk, D, causal)
    (1, 2, 2, 1, 1, 64, False),
    (2, 2, 2, 7, 7, 32, True),
    (1, 2, 2, 129, 1000, 64, False),
    (1, 4, 2, 129, 1000, 64, True),  # GQA, causal with Sq < Sk
    (1, 4, 1, 1000, 129, 32, True),  # MQA, causal with Sq > Sk (rows >= Sk see everything)
    (1, 2, 1, 7, 129, 128, False),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_exact_matches_float64(rng, shape):
    B, Hq, Hkv, Sq, Sk, D, causal = shape
    q, k, v = make_qkv(rng, B, Hq, Hkv, Sq, Sk, D, k_offset=4.0, dtype=np.float32)
    out = _C.reference_attention(q, k, v, mode="exact", is_causal=causal)
    ref, _ = softmax_ref(q, k, v, is_causal=causal)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert rel_l1(out, ref) <= 1e-5, tag(rng)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max(), tag(rng)


def test_exact_head_dims_and_scale(rng):
    for D in (1, 3, 512):
        q, k, v = make_qkv(rng, 1, 1, 1, 9, 17, D, dtype=np.float64)
        for scale in (None, 0.3):
            out = _C.reference_attention(q, k, v, mode="exact", sm_scale=scale)
            ref, _ = softmax_ref(q.astype(F32), k.astype(F32), v.astype(F32), sm_scale=scale)
            assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max(), (D, scale, tag(rng))


def test_causal_single_key_rows_are_exact(rng):
    """Row 0 of a causal call sees only key 0: the output must be v[0] (in every mode the
    single p is exp2(0) = 1, so only V's rounding remains)."""
    q, k, v = make_qkv(rng, 1, 2, 2, 5, 9, 32, dtype=np.float16)
    for mode in ["exact", *MODES_Q]:
        out = _C.reference_attention(q, k, v, mode=mode, is_causal=True, pv_dtype="f16")
        tol = {"exact": 0, "int8-fp16": 0, "int8-fp8": 2.0**-4, "int8-fp8-f16acc": 2.0**-4, "nvfp4": 0.25}[mode]
        np.testing.assert_allclose(out[:, :, 0], v[:, :, 0].astype(F32), rtol=tol,
                                   atol=tol * np.abs(v).max(), err_msg=f"{mode} {tag(rng)}")


# ---------------------------------------------------------------------------------------
# quantized modes against float64, within the derived bounds
# ---------------------------------------------------------------------------------------

Q_CASES = [
    # (B, Hq, Hkv, Sq, Sk, D, causal, k_offset)
    (2, 4, 4, 1, 1000, 64, False, 0.0),  # tiny shapes get more heads: more independent errors
    (4, 4, 4, 7, 7, 64, True, 8.0),
    (1, 2, 2, 129, 129, 128, False, 8.0),
    (2, 4, 2, 129, 1000, 64, False, 8.0),  # GQA
    (1, 4, 1, 1000, 129, 32, True, 0.0),  # MQA, causal, Sq > Sk
    (1, 2, 2, 100, 300, 40, True, 2.0),  # D not a multiple of 16 (partial NVFP4 group)
]


@pytest.mark.parametrize("mode", MODES_Q)
@pytest.mark.parametrize("case", Q_CASES, ids=lambda c: "x".join(map(str, c)))
def test_quantized_within_derived_bound(rng, mode, case):
    B, Hq, Hkv, Sq, Sk, D, causal, off = case
    q, k, v = make_qkv(rng, B, Hq, Hkv, Sq, Sk, D, k_offset=off)
    pbm = bool(rng.integers(2))  # both settings get covered across runs and cases
    check_quantized(rng, q, k, v, mode=mode, is_causal=causal, per_block_mean=pbm, pv_dtype="f16")


@pytest.mark.parametrize("mode,pv_dtype", [("int8-fp16", "bf16"), ("int8-fp16", "f16"), ("int8-fp8", "bf16"),
                                           ("nvfp4", "bf16")])
def test_block_sizes_and_pv_dtype(rng, mode, pv_dtype):
    q, k, v = make_qkv(rng, 1, 2, 2, 77, 200, 64, k_offset=3.0, dtype=np.float32)
    for q_block, k_block in [(1, 16), (16, 32), (128, 128), (1000, 1024)]:
        check_quantized(rng, q, k, v, mode=mode, q_block=q_block, k_block=k_block, pv_dtype=pv_dtype, is_causal=True)


@pytest.mark.parametrize("mode", MODES_Q)
def test_k_offset_needs_smoothing(rng, mode):
    """DiT-like keys (large per-channel offset): with smooth_k the error stays at the
    offset-free level; without it the K step grows with the offset and the error with it.
    The offset is 16 sigma: at 8, int8-fp8's P.V rounding (rel-L1 ~0.037) hides part of the
    K error and off/on fell to 1.48 in 60 random draws (flaky against the 1.5 below); at 16
    its minimum over 100 draws was 2.24."""
    q, k, v = make_qkv(rng, 1, 2, 2, 200, 300, 64, k_offset=16.0)
    on = check_quantized(rng, q, k, v, mode=mode, smooth_k=True)
    off = check_quantized(rng, q, k, v, mode=mode, smooth_k=False)
    q0, k0, v0 = make_qkv(rng, 1, 2, 2, 200, 300, 64, k_offset=0.0)
    base = rel_l1(_C.reference_attention(q0, k0, v0, mode=mode), softmax_ref(q0, k0, v0)[0])
    assert on <= 1.3 * base, (on, base, tag(rng))
    assert off >= 1.5 * on, (on, off, tag(rng))


@pytest.mark.parametrize("mode", MODES_Q)
def test_per_block_mean_helps_offset_queries(rng, mode):
    """Q with a large common offset: subtracting its per-block mean (and adding qm.K back in
    fp32) removes the offset from the quantized part. (Without it the bound is not checked:
    every row then shares the same few dominant keys and their K rounding errors, so one
    draw's error fluctuates far around the prediction.) 8 heads, each its own offset: with 2, the
    FP8 P.V modes' rounding hid the gain in rare draws (off/on 0.9996 once; its minimum over 300
    draws 0.9997); with 8 the minimum over 300 draws is 1.10 (fp8 modes), 3.1 (int8-fp16), 1.76
    (nvfp4)."""
    q, k, v = make_qkv(rng, 1, 8, 8, 128, 256, 64)
    q = (q.astype(np.float64) + 6.0 * rng.standard_normal((1, 8, 1, 64))).astype(np.float16)
    off = rel_l1(_C.reference_attention(q, k, v, mode=mode, per_block_mean=False), softmax_ref(q, k, v)[0])
    on = check_quantized(rng, q, k, v, mode=mode, per_block_mean=True)
    assert on < off, (on, off, tag(rng))


def test_quad_k_groups_localize_the_k_scale(rng):
    """granularity="quad": each 128-key block has 4 K scales, keys grouped by j % 8 // 2 (the
    lane of the accumulator quad that holds their scores). Keys j % 8 in {0, 1} get a channel of
    40 that the queries do not see (q[..., 0] = 0, no smoothing): with one scale per block it
    coarsens every key's INT8 step ~10x; with quad only its own group's. Over 30 draws the
    quad/block error ratio was 0.39-0.55 for the LSE and 0.56-0.63 for the output."""
    q, k, v = make_qkv(rng, 1, 2, 2, 64, 256, 128)
    q[..., 0] = 0
    k[:, :, np.arange(256) % 8 < 2, 0] = 40
    out64, lse64, _ = attention64(q, k, v)
    err = {}
    for gran in ("block", "quad"):
        out, lse = _C.reference_attention(q, k, v, mode="int8-fp8", q_block=1, k_block=128, granularity=gran,
                                          smooth_k=False, return_lse=True)
        err[gran] = (float(np.abs(lse - lse64).mean()), rel_l1(out, out64))
    assert err["quad"][0] < 0.7 * err["block"][0], (err, tag(rng))
    assert err["quad"][1] < 0.8 * err["block"][1], (err, tag(rng))


# ---------------------------------------------------------------------------------------
# the spec itself: a NumPy emulation of the INT8 path must agree to fp32 rounding
# ---------------------------------------------------------------------------------------


def scale_groups(n, block, granularity, which):
    """Scale-group index of each of n rows: consecutive blocks, the mma kernel's per-thread
    groups (Q: rows i and i+8 of each 16-row tile; K: within each 64-key block, the 16 keys
    with the same (j % 8) // 2), or "quad" (Q in blocks; K: within each block, the keys with
    the same (j % 8) // 2)."""
    r = np.arange(n)
    if granularity == "block" or (granularity == "quad" and which == "q"):
        return r // block
    if granularity == "quad":
        return (r // block) * 4 + (r % block % 8) // 2
    if which == "q":
        return (r // 16) * 8 + r % 8
    return (r // 64) * 4 + (r % 8) // 2


def emulate_int8(q, k, v, *, fp8, is_causal, smooth_k, per_block_mean, q_block, k_block, pv_dtype="f16",
                 granularity="block"):
    """Independent NumPy transcription of sa3_reference.c's INT8 modes for one head
    ((S, D) float32 arrays), vectorized over query rows. Some sums run in another order
    than the C loops (BLAS, pairwise) and np.exp2 is not libm's exp2f, so fp32 results can
    differ in the last bits."""
    sq, d = q.shape
    sk = k.shape[0]
    scale_log2 = F32(1.0 / np.sqrt(d)) * F32(1.4426950408889634)
    ks = k - np.cumsum(k, 0, dtype=F32)[-1] / F32(sk) if smooth_k else k

    def blocks(n, b):
        return [(s0, min(s0 + b, n)) for s0 in range(0, n, b)]

    def quant(x, b, which):
        """INT8 codes and the per-row scale (of the row's group)."""
        codes, scales = np.empty(x.shape, np.int64), np.empty(x.shape[0], F32)
        gid = scale_groups(x.shape[0], b, granularity, which)
        for g in np.unique(gid):
            rows = gid == g
            amax = np.abs(x[rows]).max()
            inv = F32(127) / amax if amax > 0 else F32(0)
            codes[rows] = _C.convert((x[rows] * inv).astype(F32), "int8").astype(np.int64)
            scales[rows] = amax / F32(127)
        return codes, scales

    qs, qm = q, np.zeros_like(q)
    if per_block_mean:
        for s0, s1 in blocks(sq, q_block):
            qm[s0:s1] = np.cumsum(q[s0:s1], 0, dtype=F32)[-1] / F32(s1 - s0)
        qs = q - qm
    kq, ksc = quant(ks, k_block, "k")
    qq, qsc = quant(qs, q_block, "q")
    s = (qq @ kq.T).astype(F32) * ((qsc[:, None] * scale_log2) * ksc[None, :])
    if per_block_mean:
        corr = np.zeros((sq, sk), F32)
        for j in range(d):  # d order, as the C loop (this term is large when K is not smoothed)
            corr += qm[:, j : j + 1] * ks[:, j][None, :]
        s = s + corr * scale_log2
    if is_causal:
        s = np.where(np.arange(sk)[None, :] <= np.arange(sq)[:, None], s, F32(-np.inf))
    if fp8:
        vamax = np.abs(v).max(0)
        vinv = np.where(vamax > 0, F32(448) / np.where(vamax > 0, vamax, 1), F32(0)).astype(F32)
        vq = _C.convert((v * vinv).astype(F32), "e4m3")
    else:
        vq = _C.convert(v, pv_dtype)
    m = np.full(sq, -np.inf, F32)
    l = np.zeros(sq, F32)
    o = np.zeros((sq, d), F32)
    for s0, s1 in blocks(sk, k_block):
        sb = s[:, s0:s1]
        m_new = np.maximum(m, sb.max(1))
        alpha = np.where(m == -np.inf, F32(0), np.exp2(m - m_new)).astype(F32)
        p = np.exp2(sb - m_new[:, None]).astype(F32)
        l = l * alpha + p.sum(1, dtype=F32)
        pq = _C.convert(p * F32(448), "e4m3") if fp8 else _C.convert(p, pv_dtype)
        o = o * alpha[:, None] + pq @ vq[s0:s1]
        m = m_new
    if fp8:
        o = o * ((vamax / F32(448)) / F32(448))
    return o / l[:, None]


@pytest.mark.parametrize("fp8", [False, True], ids=["int8-fp16", "int8-fp8"])
def test_int8_matches_numpy_emulation(rng, fp8):
    q, k, v = make_qkv(rng, 1, 1, 1, 97, 203, 64, k_offset=5.0, dtype=np.float32)
    for causal, smooth, pbm, qb, kb, gran in [(False, True, False, 32, 64, "block"), (True, False, True, 16, 48, "block"),
                                              (True, True, True, 128, 128, "block"), (True, True, False, 32, 64, "mma"),
                                              (False, True, True, 16, 64, "mma"), (False, True, False, 1, 128, "quad"),
                                              (True, True, False, 1, 40, "quad")]:
        kw = dict(is_causal=causal, smooth_k=smooth, per_block_mean=pbm, q_block=qb, k_block=kb, granularity=gran)
        out = _C.reference_attention(q, k, v, mode="int8-fp8" if fp8 else "int8-fp16", pv_dtype="f16", **kw)[0, 0]
        with np.errstate(invalid="ignore"):
            emu = emulate_int8(q[0, 0], k[0, 0], v[0, 0], fp8=fp8, **kw)
        # Only last-bit fp32 differences are expected (<~1e-6 relative). Rarely one of them
        # moves a P element across an e4m3/f16 rounding tie (odds ~2^-20 / ~2^-13 per element
        # for a 1-ulp change), which changes that one row by up to one P step; so at most 2
        # rows may differ by more. A spec mismatch (scales, blocks, association) hits most rows.
        row_err = np.abs(out - emu).max(1)
        bad = int((row_err > 2e-5 * np.abs(emu).max()).sum())
        assert bad <= 2, (kw, bad, float(row_err.max()), tag(rng))
        assert rel_l1(out, emu) <= 1e-3, (kw, rel_l1(out, emu), tag(rng))


# ---------------------------------------------------------------------------------------
# layouts, strides, GQA, inputs untouched
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["exact", *MODES_Q])
def test_layouts_and_strides_identical(rng, mode):
    q, k, v = make_qkv(rng, 2, 4, 2, 33, 70, 48, k_offset=2.0)
    kw = dict(mode=mode, is_causal=True, per_block_mean=True, k_block=32)
    hnd = _C.reference_attention(q, k, v, **kw)
    nhd_in = [np.ascontiguousarray(x.transpose(0, 2, 1, 3)) for x in (q, k, v)]
    nhd = _C.reference_attention(*nhd_in, layout="NHD", **kw)
    assert nhd.shape == (2, 33, 4, 48)
    np.testing.assert_array_equal(nhd.transpose(0, 2, 1, 3), hnd)
    # NHD views of HND arrays (non-contiguous), negative strides, sliced last axis,
    # float32/float64 copies of the same values: all bit-identical
    views = [x.transpose(0, 2, 1, 3) for x in (q, k, v)]
    np.testing.assert_array_equal(_C.reference_attention(*views, layout="NHD", **kw), nhd)
    wide = [np.repeat(x, 2, axis=3)[..., ::2] for x in (q, k, v)]
    np.testing.assert_array_equal(_C.reference_attention(*wide, **kw), hnd)
    rev = [x[:, ::-1, ::-1].copy()[:, ::-1, ::-1] for x in (q, k, v)]  # negative strides, same values
    np.testing.assert_array_equal(_C.reference_attention(*rev, **kw), hnd)
    for dt in (np.float32, np.float64, np.dtype(">f4")):
        np.testing.assert_array_equal(_C.reference_attention(*(x.astype(dt) for x in (q, k, v)), **kw), hnd)


@pytest.mark.parametrize("mode", ["exact", *MODES_Q])
def test_gqa_equals_repeated_heads(rng, mode):
    q, k, v = make_qkv(rng, 1, 6, 2, 40, 50, 32)
    gqa = _C.reference_attention(q, k, v, mode=mode, is_causal=True)
    rep = _C.reference_attention(q, np.repeat(k, 3, 1), np.repeat(v, 3, 1), mode=mode, is_causal=True)
    np.testing.assert_array_equal(gqa, rep)
    mqa = _C.reference_attention(q, k[:, :1], v[:, :1], mode=mode)
    np.testing.assert_array_equal(mqa, _C.reference_attention(q, np.repeat(k[:, :1], 6, 1),
                                                              np.repeat(v[:, :1], 6, 1), mode=mode))


def test_inputs_unchanged(rng):
    q, k, v = make_qkv(rng, 1, 2, 1, 20, 30, 64, k_offset=8.0)
    before = [x.tobytes() for x in (q, k, v)]
    for mode in ["exact", *MODES_Q]:
        _C.reference_attention(q, k, v, mode=mode, per_block_mean=True, smooth_k=True)
        # read-only inputs (e.g. np.broadcast_to views) are accepted too
        ro = [x.copy() for x in (q, k, v)]
        for x in ro:
            x.flags.writeable = False
        _C.reference_attention(*ro, mode=mode)
    assert [x.tobytes() for x in (q, k, v)] == before
    shared = q.copy()
    _C.reference_attention(shared, shared, shared, mode="int8-fp8")  # q is k is v
    assert shared.tobytes() == q.tobytes()


# ---------------------------------------------------------------------------------------
# v_mean_fix: minus V's mean e4m3 rounding error, added to every row
# ---------------------------------------------------------------------------------------


def _v_mean_error(v, target=448.0):
    """Per (b, kv head, channel): the mean over the keys of V's e4m3 rounding error, as the
    reference's INT8_FP8 modes quantize V (per-channel scale to `target`), in V's units."""
    v = v.astype(np.float32)
    amax = np.abs(v).max(axis=2, keepdims=True)
    vinv = np.where(amax >= np.finfo(np.float32).tiny, F32(target) / np.maximum(amax, F32(1e-30)), F32(0))
    x = (v * vinv.astype(np.float32)).astype(np.float32)
    err = (np.asarray(_C.convert(x, "e4m3"), np.float64) - x).sum(axis=2, keepdims=True)
    return np.where(vinv > 0, err / np.where(vinv > 0, vinv, 1) / v.shape[2], 0.0)


@pytest.mark.parametrize("mode,target,causal", [("int8-fp8", 448.0, False), ("int8-fp8", 448.0, True),
                                                ("int8-fp8-f16acc", 1.75, False)])
def test_v_mean_fix_subtracts_the_mean_rounding_error_of_v(rng, mode, target, causal):
    """The fix is exactly out - out_without = -mean_s(e4m3 error of V) per channel, the same for
    every query row of a KV head (GQA: 4 query heads on 2), causal rows included; a zero channel
    gets none."""
    q, k, v = make_qkv(rng, 1, 4, 2, 37, 301, 64)
    v[:, 1, :, 5] = 0
    kw = dict(mode=mode, q_block=1, k_block=128, granularity="quad", is_causal=causal)
    base = _C.reference_attention(q, k, v, **kw)
    fixed = _C.reference_attention(q, k, v, v_mean_fix=True, **kw)
    want = -np.repeat(_v_mean_error(v, target), 2, axis=1)  # (1, Hq, 1, D)
    got = fixed.astype(np.float64) - base
    assert np.abs(want).max() > 1e-5  # a real fix, not zeros
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=0, atol=2e-6 * np.abs(base).max(),
                               err_msg=tag(rng))
    assert np.all(got[:, 2:, :, 5] == 0)


def test_v_mean_fix_leaves_the_other_modes_alone(rng):
    q, k, v = make_qkv(rng, 1, 2, 2, 33, 70, 64)
    for mode in ("exact", "int8-fp16"):
        a = _C.reference_attention(q, k, v, mode=mode, k_block=64)
        b = _C.reference_attention(q, k, v, mode=mode, k_block=64, v_mean_fix=True)
        assert np.array_equal(a, b), mode


def _v_mean_error_nvfp4(v):
    """Mean over keys of V's NVFP4 dequantized value minus V, per (b, h, channel), from the
    reference's own NVFP4 quantization of V (`reference_nvfp4_quantize`, token groups of 16)."""
    b_, h_, sk, d = v.shape
    out = np.zeros((b_, h_, 1, d))
    for b in range(b_):
        for h in range(h_):
            x = v[b, h].astype(np.float32)
            r = _C.reference_nvfp4_quantize(x, groups="cols", smooth="none")
            scale = np.repeat(r["scales"], 16, axis=0)[:sk]
            deq = (r["codes"] * scale).astype(np.float32) * np.float32(r["g"])
            out[b, h, 0] = (deq.astype(np.float64) - x).mean(axis=0)
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_v_mean_fix_nvfp4_subtracts_the_mean_dequantization_error_of_v(rng, causal):
    """NVFP4 (e2m1 codes, e4m3 scales per 16 tokens of a channel, a second level per head): the fix
    is minus the mean of dequantized V minus V per channel, the same for every query row of a KV
    head (GQA 4 on 2), causal rows included; a zero channel gets none."""
    q, k, v = make_qkv(rng, 1, 4, 2, 37, 301, 64)
    v[:, 1, :, 5] = 0
    kw = dict(mode="nvfp4", k_block=64, q_block=64, per_block_mean=True, is_causal=causal)
    base = _C.reference_attention(q, k, v, **kw)
    fixed = _C.reference_attention(q, k, v, v_mean_fix=True, **kw)
    want = -np.repeat(_v_mean_error_nvfp4(v), 2, axis=1)
    got = fixed.astype(np.float64) - base
    assert np.abs(want).max() > 1e-4  # NVFP4's shared error is large: a real fix
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=0, atol=2e-6 * np.abs(base).max(),
                               err_msg=tag(rng))
    assert np.all(got[:, 2:, :, 5] == 0)


def test_v_mean_fix_nvfp4_is_more_accurate_on_diffuse_rows(rng):
    """Against float64 on the bench's inputs (K offset 5 sigma, 1/sqrt(D)): -5..-6% rel-L1
    (cuda/nvfp4/NOTES.md); four draws at 2048 keys measured fixed/base 0.946-0.954 over 8 seeds,
    bound 0.97."""
    base = fixed = 0.0
    for _ in range(4):
        q, k, v = make_qkv(rng, 1, 1, 1, 128, 2048, 128, k_offset=5.0)
        ref, _p = softmax_ref(q, k, v)
        kw = dict(mode="nvfp4", k_block=64, q_block=64, per_block_mean=True)
        base += rel_l1(_C.reference_attention(q, k, v, **kw), ref)
        fixed += rel_l1(_C.reference_attention(q, k, v, v_mean_fix=True, **kw), ref)
    assert fixed < 0.97 * base, (fixed / base, tag(rng))


NVFP4_KW = dict(mode="nvfp4", k_block=64, q_block=64, per_block_mean=True)


@pytest.mark.parametrize("causal", [False, True])
def test_l_quantized_makes_a_constant_v_exact_in_nvfp4(rng, causal):
    """V constant over the keys of each channel: every output row should be that constant. NVFP4
    with l from the fp32 p comes out ~1% short (e2m1 flushes small p, so the codes sum to less
    than l); with l summed from P's dequantized codes, numerator and denominator see the same P,
    and the V fix removes what V's own quantization adds: exact up to float rounding."""
    q, k, _ = make_qkv(rng, 1, 4, 2, 70, 600, 64, k_offset=5.0)
    c = rng.uniform(0.2, 0.9, size=(1, 2, 1, 64)) * rng.choice([-1.0, 1.0], size=(1, 2, 1, 64))
    v = np.broadcast_to(c, (1, 2, 600, 64)).astype(np.float16)
    want = np.repeat(v[:, :, :1].astype(np.float64), 2, axis=1)  # (1, Hq, 1, D)
    kw = dict(NVFP4_KW, is_causal=causal, v_mean_fix=True)
    short = _C.reference_attention(q, k, v, **kw)
    exact = _C.reference_attention(q, k, v, l_quantized=True, **kw)
    scale = np.abs(want).max()
    assert np.abs(short - want).max() > 1e-3 * scale, tag(rng)  # the bias this option removes
    np.testing.assert_allclose(exact, np.broadcast_to(want, exact.shape), rtol=0, atol=2e-6 * scale,
                               err_msg=tag(rng))


def test_l_quantized_is_more_accurate_with_v_channel_offsets(rng):
    """V with a per-channel offset (3 sigma, as DiT values can carry): against float64 the
    codes' row sum takes most of the error off (measured 0.0097 -> 0.0035 rel-L1 at 2048 keys,
    2 seeds; cuda/nvfp4/NOTES.md); with no offset it costs ~0.7%."""
    base = quant = 0.0
    for _ in range(2):
        q, k, v = make_qkv(rng, 1, 1, 1, 128, 2048, 128, k_offset=5.0)
        v = (v.astype(np.float64) + 3.0 * rng.standard_normal((1, 1, 1, 128))).astype(np.float16)
        ref, _p = softmax_ref(q, k, v)
        kw = dict(NVFP4_KW, v_mean_fix=True)
        base += rel_l1(_C.reference_attention(q, k, v, **kw), ref)
        quant += rel_l1(_C.reference_attention(q, k, v, l_quantized=True, **kw), ref)
    assert quant < 0.6 * base, (quant / base, tag(rng))


@pytest.mark.parametrize("scale_mult,most", [(0.5, 0.92), (1.0, 0.95), (4.0, 1.01)])
def test_v_mean_fix_is_more_accurate_where_rows_are_diffuse(rng, scale_mult, most):
    """Against float64 (hopper's numerics, the bench's K offset of 5 sigma): with P summing to 1,
    the mean of V's rounding error is the part of it that every row shares, and it dominates the
    V error of a diffuse row; on sharp rows it, and the fix, are negligible. Four draws each,
    rel-L1 summed: measured with 4608 keys (NOTES v16) -8..-10% at sm_scale = 1/sqrt(D), -18% at
    half that, 0.0% at 4x; here 2048 keys."""
    base = fixed = 0.0
    for _ in range(4):
        q, k, v = make_qkv(rng, 1, 1, 1, 128, 2048, 128, k_offset=5.0)
        scale = scale_mult / np.sqrt(128)
        ref, _p = softmax_ref(q, k, v, sm_scale=scale)
        kw = dict(mode="int8-fp8", q_block=1, k_block=128, granularity="quad", sm_scale=scale)
        base += rel_l1(_C.reference_attention(q, k, v, **kw), ref)
        fixed += rel_l1(_C.reference_attention(q, k, v, v_mean_fix=True, **kw), ref)
    assert fixed < most * base, (fixed / base, tag(rng))


# ---------------------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------------------


def _ok():
    a = np.ones((1, 2, 4, 16), np.float16)
    return a, a.copy(), a.copy()


BAD_CALLS = [
    # (description, args builder -> (args, kwargs), exception, message fragment)
    ("q list", lambda q, k, v: (([[1.0]], k, v), {}), TypeError, "q must be a numpy.ndarray, got list"),
    ("k int dtype", lambda q, k, v: ((q, k.astype(np.int32), v), {}), TypeError, "k must have dtype float16, float32 or float64, got dtype int32"),
    ("v complex", lambda q, k, v: ((q, k, v.astype(np.complex64)), {}), TypeError, "v must have dtype"),
    ("q 3-D", lambda q, k, v: ((q[0], k, v), {}), ValueError, "q must be 4-D (B, H, S, D) for layout 'HND', got shape (2, 4, 16)"),
    ("k 5-D NHD", lambda q, k, v: ((q, k[None], v), {"layout": "NHD"}), ValueError, "k must be 4-D (B, S, H, D)"),
    ("zero-sized", lambda q, k, v: ((q[:, :, :0], k, v), {}), ValueError, "q has a zero-sized dimension, shape (1, 2, 0, 16)"),
    ("batch", lambda q, k, v: ((np.concatenate([q, q]), k, v), {}), ValueError, "same batch size B, got q (2, 2, 4, 16) and k (1, 2, 4, 16)"),
    ("head dim", lambda q, k, v: ((q[..., :8], k, v), {}), ValueError, "same head dim D"),
    ("k/v shape", lambda q, k, v: ((q, k, v[:, :, :3]), {}), ValueError, "k and v must have the same shape, got k (1, 2, 4, 16) and v (1, 2, 3, 16)"),
    ("gqa", lambda q, k, v: ((np.concatenate([q, q[:, :1]], 1), k, v), {}), ValueError, "q's head count (3) must be a multiple of k/v's (2)"),
    ("mode", lambda q, k, v: ((q, k, v), {"mode": "int4"}), ValueError, "mode must be one of 'exact', 'int8-fp8', 'int8-fp8-f16acc', 'int8-fp16', 'nvfp4', got 'int4'"),
    ("mode type", lambda q, k, v: ((q, k, v), {"mode": 3}), TypeError, "mode must be a str, got int 3"),
    ("layout", lambda q, k, v: ((q, k, v), {"layout": "BHSD"}), ValueError, "layout must be 'HND' (B, H, S, D) or 'NHD' (B, S, H, D), got 'BHSD'"),
    ("pv_dtype", lambda q, k, v: ((q, k, v), {"pv_dtype": "fp8"}), ValueError, "pv_dtype must be 'bf16'"),
    ("pv_dtype type", lambda q, k, v: ((q, k, v), {"pv_dtype": None}), TypeError, "pv_dtype must be a str, got NoneType"),
    ("q_block 0", lambda q, k, v: ((q, k, v), {"q_block": 0}), ValueError, "q_block must be an int in [1, 2**63), got 0"),
    ("k_block -1", lambda q, k, v: ((q, k, v), {"k_block": -1}), ValueError, "k_block must be an int in [1, 2**63), got -1"),
    ("q_block huge", lambda q, k, v: ((q, k, v), {"q_block": 2**70}), ValueError, "q_block must be an int in [1, 2**63)"),
    ("q_block float", lambda q, k, v: ((q, k, v), {"q_block": 1.5}), TypeError, "q_block must be an int >= 1, got float 1.5"),
    ("k_block bool", lambda q, k, v: ((q, k, v), {"k_block": True}), TypeError, "k_block must be an int >= 1, got bool"),
    ("nvfp4 k_block", lambda q, k, v: ((q, k, v), {"mode": "nvfp4", "k_block": 40}), ValueError, "k_block must be a multiple of 16 for mode='nvfp4'"),
    ("is_causal str", lambda q, k, v: ((q, k, v), {"is_causal": "no"}), TypeError, "is_causal must be a bool, got str 'no'"),
    ("smooth_k 2", lambda q, k, v: ((q, k, v), {"smooth_k": 2}), TypeError, "smooth_k must be a bool, got int 2"),
    ("sm_scale str", lambda q, k, v: ((q, k, v), {"sm_scale": "0.1"}), TypeError, "sm_scale must be None or a real number, got str"),
    ("sm_scale nan", lambda q, k, v: ((q, k, v), {"sm_scale": float("nan")}), ValueError, "sm_scale must be finite and fit float32, got nan"),
    ("sm_scale big", lambda q, k, v: ((q, k, v), {"sm_scale": 1e300}), ValueError, "sm_scale must be finite"),
    ("sm_scale 10**400", lambda q, k, v: ((q, k, v), {"sm_scale": 10**400}), ValueError, "sm_scale must be finite and fit float32"),
    ("positional", lambda q, k, v: ((q, k, v, "exact"), {}), TypeError, "positional"),
    ("unknown kw", lambda q, k, v: ((q, k, v), {"attn_mask": None}), TypeError, "attn_mask"),
    ("granularity", lambda q, k, v: ((q, k, v), {"granularity": "warp"}), ValueError, "granularity must be 'block', 'mma' or 'quad', got 'warp'"),
    ("granularity type", lambda q, k, v: ((q, k, v), {"granularity": 1}), TypeError, "granularity must be a str, got int"),
    ("v_mean_fix str", lambda q, k, v: ((q, k, v), {"v_mean_fix": "yes"}), TypeError, "v_mean_fix must be a bool, got str"),
    ("l_quantized str", lambda q, k, v: ((q, k, v), {"mode": "nvfp4", "l_quantized": "yes"}), TypeError, "l_quantized must be a bool, got str"),
    ("l_quantized int8", lambda q, k, v: ((q, k, v), {"mode": "int8-fp8", "l_quantized": True}), ValueError, "l_quantized is for mode='nvfp4' only"),
]


@pytest.mark.parametrize("desc,build,exc,fragment", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments(desc, build, exc, fragment):
    args, kwargs = build(*_ok())
    with pytest.raises(exc) as info:
        _C.reference_attention(*args, **kwargs)
    assert fragment in str(info.value), str(info.value)


def test_size_overflow_is_value_error():
    # 2**61 float16 elements exist as a zero-stride view (2**62 bytes), but their float32
    # copy would be 2**63 bytes: more than any array (or int64 byte count) can hold.
    q = np.broadcast_to(np.float16(1), (2**15, 2**15, 2**15, 2**16))
    k = np.broadcast_to(np.float16(1), (2**15, 1, 1, 2**16))
    with pytest.raises(ValueError, match="too large"):
        _C.reference_attention(q, k, k)


def test_nvfp4_accepts_multiples_of_16_only():
    q, k, v = _ok()
    for kb in (16, 48, 1024):
        assert np.isfinite(_C.reference_attention(q, k, v, mode="nvfp4", k_block=kb)).all()


@pytest.mark.parametrize(
    "args,exc,fragment",
    [
        ((np.ones(3, np.float32), "fp4"), ValueError, "kind must be one of 'e4m3', 'e2m1', 'bf16', 'f16', 'int8', 'f16_from_f64', got 'fp4'"),
        ((np.ones(3, np.float32), 8), TypeError, "kind must be a str, got int"),
        (([1.0, 2.0], "e4m3"), TypeError, "array must be a numpy.ndarray, got list"),
        ((np.ones(3, np.int8), "e4m3"), TypeError, "array must have dtype float16, float32 or float64, got dtype int8"),
    ],
)
def test_convert_bad_arguments(args, exc, fragment):
    with pytest.raises(exc) as info:
        _C.convert(*args)
    assert fragment in str(info.value), str(info.value)


# ---------------------------------------------------------------------------------------
# int8-fp8-f16acc: fp16 accumulation of each block's P.V (the GeForce FP8 mma form)
# ---------------------------------------------------------------------------------------


def test_f16_from_f64_matches_numpy(rng):
    """float64 -> float16 in one rounding: numpy's double -> half cast is IEEE RNE from the
    double itself (no fp32 step), so it is an independent oracle; values that fp32 would round
    onto an fp16 tie (double rounding) are included on purpose."""
    all16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = np.sort(all16[np.isfinite(all16)].astype(np.float64))
    mids = (finite[1:] + finite[:-1]) / 2
    # just above / below a tie by far less than an fp32 ulp: via fp32 they would become the tie
    near = np.concatenate([mids * (1 + 2.0**-40), mids * (1 - 2.0**-40)])
    rand = rng.standard_normal(20000) * np.exp2(rng.integers(-30, 17, 20000))
    x = np.concatenate([finite, mids, near, rand, [65519.99, 65520.0, 70000.0, -70000.0, np.inf, -np.inf,
                                                   2.0**-25, 2.0**-25 * (1 + 2.0**-30), 2.0**-1074]])
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).astype(np.float32)
    got = _C.convert(x, "f16_from_f64")
    np.testing.assert_array_equal(got, want, err_msg=tag(rng))
    assert not np.array_equal(x[len(finite) + len(mids):len(finite) + 3 * len(mids)].astype(np.float32).astype(np.float16),
                              want[len(finite) + len(mids):len(finite) + 3 * len(mids)].astype(np.float16)), \
        "the near-tie values no longer tell one rounding from two"
    assert np.isnan(_C.convert(np.array([np.nan]), "f16_from_f64")).all()


@pytest.mark.parametrize("sk", [1, 31, 64, 150])
def test_f16acc_block_sum_is_the_specified_fp16_chain(rng, sk):
    """Equal scores (q = 0: every p is exactly 1, P's code 448) leave only the P.V sum, which this
    test recomputes from the spec in sa3_reference.c step 6: per 64-key block h = 0, then for
    each 32 keys h = f16(h + exact sum), the block's h added to the fp32 O, O * (amax/1.75)/448 / l.
    V is scaled so fp16 rounding really happens (partials above 2048 lose low bits)."""
    d = 24
    q = np.zeros((1, 1, 3, d), F32)
    k = rng.standard_normal((1, 1, sk, d)).astype(F32)
    v = (rng.standard_normal((1, 1, sk, d)) * 3).astype(F32)
    out = _C.reference_attention(q, k, v, mode="int8-fp8-f16acc", k_block=64)
    amax = np.abs(v[0, 0]).max(0).astype(F32)
    vq = conv(v[0, 0] * (F32(1.75) / amax), "e4m3").astype(np.float64)  # per-channel e4m3 V
    o = np.zeros(d, F32)
    for b0 in range(0, sk, 64):
        h = np.zeros(d, np.float64)
        for g0 in range(b0, min(b0 + 64, sk), 32):
            step = (448.0 * vq[g0:min(g0 + 32, b0 + 64, sk)]).sum(0)  # exact in float64
            h = (h + step).astype(np.float16).astype(np.float64)
        o = (o + h.astype(F32)).astype(F32)
    want = (o * ((amax / F32(1.75)) / F32(448))) / F32(sk)
    np.testing.assert_array_equal(out[0, 0, 0], want.astype(F32), err_msg=tag(rng))
    np.testing.assert_array_equal(out[0, 0, 1], out[0, 0, 0])


def test_f16acc_partials_stay_finite_at_the_bound(rng):
    """The worst case of the kernel's overflow bound: 64 keys of one block, all with p = 1 (equal
    scores) and V at its channel max (code 1.75): each block's fp16 partial is 64*448*1.75 =
    50176, below 65504. The output must be V exactly, not inf."""
    d = 16
    q = rng.standard_normal((1, 2, 5, d)).astype(F32)
    k = np.repeat(rng.standard_normal((1, 2, 1, d)).astype(F32), 200, axis=2)  # equal keys: equal scores
    v = np.repeat((rng.standard_normal((1, 2, 1, d)) * 5).astype(F32), 200, axis=2)  # constant V
    out, lse = _C.reference_attention(q, k, v, mode="int8-fp8-f16acc", return_lse=True)
    assert np.isfinite(out).all() and np.isfinite(lse).all()
    np.testing.assert_allclose(out, v[:, :, :5], rtol=2.0**-10, err_msg=tag(rng))


def test_f16acc_differs_from_fp32_accumulation_only_by_fp16_rounding(rng):
    """Same P codes, V codes divided by 2^8: on K-offset random inputs the two modes stay within
    the fp16 partial rounding (2^-11 relative per 32-key step, averaged) of each other, far
    closer than either is to float64."""
    q, k, v = make_qkv(rng, 1, 2, 2, 77, 333, 64, k_offset=8.0)
    for causal in (False, True):
        a = _C.reference_attention(q, k, v, mode="int8-fp8", is_causal=causal, granularity="mma")
        b, lse_b = _C.reference_attention(q, k, v, mode="int8-fp8-f16acc", is_causal=causal, granularity="mma",
                                          return_lse=True)
        _, lse_a = _C.reference_attention(q, k, v, mode="int8-fp8", is_causal=causal, granularity="mma",
                                          return_lse=True)
        assert 0 < rel_l1(b, a) < 2e-3, (rel_l1(b, a), tag(rng))
        np.testing.assert_array_equal(lse_a, lse_b)  # P and the scores are the same


def test_f16acc_k_block_must_cover_whole_mma_steps():
    x = np.ones((1, 1, 8, 32), F32)
    with pytest.raises(ValueError, match="multiple of 32 for mode='int8-fp8-f16acc'"):
        _C.reference_attention(x, x, x, mode="int8-fp8-f16acc", k_block=16)
