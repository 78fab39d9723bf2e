"""LSE of the CPU reference (`_C.reference_attention(..., return_lse=True)`) against float64.

The LSE is float32, natural log, (B, Hq, Sq) in every layout. EXACT mode is fp32 against a
float64 log-sum-exp: |err| <= 1e-5 * (1 + |lse|). The quantized modes compute the LSE of
their quantized scores of the smoothed K plus scale * q.mean(K); to first order its error
is dLSE_i = sum_j p_ij ds_ij with ds_ij = scale * (qs_i . dk_j + dq_i . ks_j), so with the
rounding errors independent and zero-mean (variances as in test_reference.py):

    Var(dLSE_i) = scale^2 * ( sum_j p_ij^2 sum_d qs_id^2 Var(dk_jd)
                              + sum_d Var(dq_id) (sum_j p_ij ks_jd)^2 )

(the dq_i term is shared by all keys of the row, hence the square of the p-weighted sum).
P and V rounding do not enter: l sums the unrounded p. A test fails when the mean |err|
exceeds 2x the predicted mean (sqrt(2/pi) * RMS) or any row's error exceeds 6x the largest
predicted RMS, plus an fp32 floor of 1e-5 * (1 + |lse|). Over 150 seeds of the cases below
measured/predicted mean was at most 1.53 and max error / largest RMS at most 3.77.
Fresh random inputs every run; SA3_TEST_SEED=<int> replays one.
"""
from __future__ import annotations

import os
import secrets

import numpy as np
import pytest

from np_reference import attention64

_C = pytest.importorskip("sageattn3._C")


@pytest.fixture
def rng():
    """(seed, generator): a fresh seed per test, named in every failure message."""
    seed = int(os.environ.get("SA3_TEST_SEED", secrets.randbits(64)))
    return seed, np.random.default_rng(seed)


def tag(seed) -> str:
    return f"(seed {seed}; rerun with SA3_TEST_SEED={seed})"


def make_qkv(gen, B, Hq, Hkv, Sq, Sk, D, k_offset=4.0, dtype=np.float32):
    q = gen.standard_normal((B, Hq, Sq, D))
    k = gen.standard_normal((B, Hkv, Sk, D)) + k_offset * gen.standard_normal((B, Hkv, 1, D))
    v = gen.standard_normal((B, Hkv, Sk, D))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


def _int8_var(x, block):
    var = np.empty_like(x)
    for s0 in range(0, x.shape[2], block):
        amax = np.abs(x[:, :, s0:s0 + block]).max(axis=(2, 3), keepdims=True)
        var[:, :, s0:s0 + block] = (amax / 127.0) ** 2 / 12.0
    return var


def _fp4_var(x):
    """NVFP4 rounding variance, groups of 16 along the last axis (last group partial)."""
    n = x.shape[-1]
    pad = (-n) % 16
    xm = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,))], -1) if pad else x
    g = xm.reshape(xm.shape[:-1] + (-1, 16))
    unit = np.abs(g).max(-1, keepdims=True) / 6.0
    t = np.abs(g) / np.where(unit > 0, unit, 1.0)
    step = np.where(t < 2, 0.5, np.where(t < 4, 1.0, 2.0))
    return ((step * unit) ** 2 / 12.0).reshape(xm.shape)[..., :n]


def predicted_lse_rms(q, k, p, *, mode, smooth_k=True, per_block_mean=False, q_block=32, k_block=64,
                      sm_scale=None):
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    rep = q.shape[1] // k.shape[1]
    k = np.repeat(k, rep, 1)
    scale = 1.0 / np.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    ks = k - k.mean(2, keepdims=True) if smooth_k else k
    qs = q.copy()
    if per_block_mean:
        for s0 in range(0, q.shape[2], q_block):
            qs[:, :, s0:s0 + q_block] -= q[:, :, s0:s0 + q_block].mean(2, keepdims=True)
    if mode == "nvfp4":
        var_q, var_k = _fp4_var(qs), _fp4_var(ks)
    else:
        var_q, var_k = _int8_var(qs, q_block), _int8_var(ks, k_block)
    t_k = np.einsum("bhij,bhid,bhjd->bhi", p**2, qs**2, var_k)
    t_q = np.einsum("bhid,bhid->bhi", var_q, np.einsum("bhij,bhjd->bhid", p, ks) ** 2)
    return scale * np.sqrt(t_k + t_q)


SHAPES = [
    # (B, Hq, Hkv, Sq, Sk, D, causal)
    (1, 2, 2, 1, 1, 64, False),
    (2, 2, 2, 7, 7, 32, True),
    (1, 2, 2, 67, 201, 64, False),
    (1, 4, 2, 67, 201, 64, True),   # GQA, causal with Sq < Sk
    (1, 4, 1, 201, 67, 32, True),   # MQA, causal with Sq > Sk (rows >= Sk see every key)
    (1, 2, 1, 7, 129, 128, False),
]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_exact_lse_matches_float64(rng, shape, layout):
    seed, gen = rng
    B, Hq, Hkv, Sq, Sk, D, causal = shape
    q, k, v = make_qkv(gen, B, Hq, Hkv, Sq, Sk, D)
    args = (q, k, v) if layout == "HND" else tuple(np.ascontiguousarray(x.transpose(0, 2, 1, 3)) for x in (q, k, v))
    out, lse = _C.reference_attention(*args, mode="exact", is_causal=causal, layout=layout, return_lse=True)
    ref_o, ref_l, _ = attention64(q, k, v, is_causal=causal)
    assert lse.shape == (B, Hq, Sq) and lse.dtype == np.float32 and lse.flags["C_CONTIGUOUS"]
    err = np.abs(lse - ref_l)
    assert (err <= 1e-5 * (1 + np.abs(ref_l))).all(), f"max |err| {err.max():.2e} {tag(seed)}"
    if layout == "NHD":
        out = out.transpose(0, 2, 1, 3)
    assert np.abs(out - ref_o).max() <= 1e-5 * np.abs(ref_o).max(), tag(seed)


QCASES = [
    # (mode, shape index, smooth_k, per_block_mean, granularity, k_offset)
    ("int8-fp16", 2, True, False, "block", 4.0),
    ("int8-fp16", 3, True, True, "block", 20.0),
    ("int8-fp16", 4, False, False, "mma", 0.0),
    ("int8-fp8", 3, True, False, "mma", 20.0),
    ("int8-fp8", 5, True, True, "block", 4.0),
    ("nvfp4", 2, True, True, "block", 4.0),
    ("nvfp4", 4, True, False, "block", 20.0),
]


@pytest.mark.parametrize("case", QCASES, ids=lambda c: f"{c[0]}-{SHAPE_IDS[c[1]]}-sk{int(c[2])}-pbm{int(c[3])}-{c[4]}-off{c[5]:g}")
def test_quantized_lse_within_derived_bound(rng, case):
    seed, gen = rng
    mode, si, smooth_k, pbm, gran, k_offset = case
    B, Hq, Hkv, Sq, Sk, D, causal = SHAPES[si]
    q, k, v = make_qkv(gen, B, Hq, Hkv, Sq, Sk, D, k_offset=k_offset, dtype=np.float16)
    kw = dict(mode=mode, is_causal=causal, smooth_k=smooth_k, per_block_mean=pbm, granularity=gran)
    out, lse = _C.reference_attention(q, k, v, return_lse=True, **kw)
    plain = _C.reference_attention(q, k, v, **kw)
    np.testing.assert_array_equal(out, plain)  # asking for the LSE changes no output bit
    _, ref_l, p = attention64(q, k, v, is_causal=causal)
    # granularity "mma" groups rows differently; its scale groups are never larger than 32/64
    # rows, so the block model with 32/64 rows is an upper bound for it
    rms = predicted_lse_rms(q, k, p, mode=mode, smooth_k=smooth_k, per_block_mean=pbm)
    floor = 1e-5 * (1 + np.abs(ref_l))
    err = np.abs(lse.astype(np.float64) - ref_l)
    info = (f"{kw} q{q.shape} k{k.shape}: mean |err| {err.mean():.2e}, predicted "
            f"{np.sqrt(2 / np.pi) * rms.mean():.2e}, max {err.max():.2e} {tag(seed)}")
    assert np.isfinite(lse).all(), info
    assert err.mean() <= 2.0 * np.sqrt(2 / np.pi) * rms.mean() + floor.mean(), info
    assert (err <= 6.0 * rms.max() + floor).all(), info
    if smooth_k and k_offset >= 20:
        # the q.mean(K) correction is far larger than the error: leaving it out would fail
        rep = Hq // Hkv
        km = np.repeat(k.astype(np.float64).mean(2), rep, 1)
        corr = np.abs(np.einsum("bhid,bhd->bhi", q.astype(np.float64), km)) / np.sqrt(D)
        assert np.median(corr) > 10 * err.mean(), info


def test_lse_same_in_every_layout_and_stride(rng):
    seed, gen = rng
    q, k, v = make_qkv(gen, 2, 4, 2, 33, 47, 32, dtype=np.float16)
    kw = dict(mode="int8-fp8", is_causal=True, return_lse=True)
    _, hnd = _C.reference_attention(q, k, v, **kw)
    nhd_in = [np.ascontiguousarray(x.transpose(0, 2, 1, 3)) for x in (q, k, v)]
    _, nhd = _C.reference_attention(*nhd_in, layout="NHD", **kw)
    np.testing.assert_array_equal(hnd, nhd)
    views = [x.transpose(0, 2, 1, 3) for x in (q, k, v)]  # HND data read through NHD-shaped views
    _, strided = _C.reference_attention(*[np.ascontiguousarray(x) for x in views], layout="NHD", **kw)
    np.testing.assert_array_equal(strided, hnd)
    assert nhd.shape == (2, 4, 33) and nhd.flags["C_CONTIGUOUS"], tag(seed)


def test_chunks_merged_by_lse_equal_full_attention(rng):
    """A ring step's view: K/V split into uneven chunks, each through the reference with its
    own statistics, merged in float64 by the LSEs, equals attention over all keys."""
    seed, gen = rng
    q, k, v = make_qkv(gen, 1, 4, 2, 41, 173, 64)
    cuts = [0, 29, 30, 111, 173]
    outs, lses = [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        o, l = _C.reference_attention(q, k[:, :, a:b], v[:, :, a:b], mode="exact", return_lse=True)
        outs.append(o.astype(np.float64))
        lses.append(l.astype(np.float64))
    lse = np.logaddexp.reduce(np.stack(lses), axis=0)
    out = sum(np.exp(l - lse)[..., None] * o for o, l in zip(outs, lses))
    ref_o, ref_l, _ = attention64(q, k, v)
    assert np.abs(lse - ref_l).max() <= 1e-5 * (1 + np.abs(ref_l).max()), tag(seed)
    assert np.abs(out - ref_o).max() <= 1e-5 * np.abs(ref_o).max(), tag(seed)


def test_return_lse_argument_checked():
    x = np.ones((1, 1, 4, 32), np.float32)
    with pytest.raises(TypeError, match="return_lse must be a bool"):
        _C.reference_attention(x, x, x, return_lse="yes")
    out = _C.reference_attention(x, x, x, return_lse=False)
    assert isinstance(out, np.ndarray)
    pair = _C.reference_attention(x, x, x, return_lse=1)
    assert isinstance(pair, tuple) and len(pair) == 2
