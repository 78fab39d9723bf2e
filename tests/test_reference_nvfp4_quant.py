"""_C.reference_nvfp4_quantize: the C reference's NVFP4 quantization of one head (what
reference_attention(mode="nvfp4") uses, and what tests/test_gpu_nvfp4.py compares the kernel's
workspace with bit for bit), against an independent NumPy transcription of the spec in
csrc/sa3_reference.c (NVFP4 block comment): fp32 steps, so the two agree exactly."""
from __future__ import annotations

import numpy as np
import pytest

from sageattn3._ext import _C

pytestmark = pytest.mark.skipif(_C is None, reason="no C extension")


def _round(x, kind):
    return np.asarray(_C.convert(np.ascontiguousarray(x, dtype=np.float32), kind), dtype=np.float32)


def _groups(x, g):
    """x (..., 16) with second level g -> (codes, scales): rg = 1/(6g), bs = e4m3(amax*rg),
    inv = 1/(bs*g), code = e2m1(x*inv)."""
    g = np.float32(g)
    amax = np.abs(x).max(axis=-1)
    bs = _round(amax * (np.float32(1) / (g * np.float32(6))), "e4m3") if g > 0 else np.zeros_like(amax)
    den = (bs * g).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(den > 0, np.float32(1) / den, np.float32(0)).astype(np.float32)
    return np.where(den[..., None] > 0, _round(x * inv[..., None], "e2m1"), np.float32(0)), bs


def _chunked_mean(x):
    total = np.zeros(x.shape[1], np.float32)
    for c0 in range(0, x.shape[0], 256):
        part = np.zeros(x.shape[1], np.float32)
        for r in range(c0, min(c0 + 256, x.shape[0])):
            part = (part + x[r]).astype(np.float32)
        total = (total + part).astype(np.float32)
    return (total / np.float32(x.shape[0])).astype(np.float32)


def _block_means(x, block):
    out = []
    for r0 in range(0, x.shape[0], block):
        part = np.zeros(x.shape[1], np.float32)
        for r in range(r0, min(r0 + block, x.shape[0])):
            part = (part + x[r]).astype(np.float32)
        out.append((part / np.float32(min(block, x.shape[0] - r0))).astype(np.float32))
    return np.stack(out)


def _mirror(x, groups, smooth, block=64):
    rows, cols = x.shape
    mean = None
    if smooth == "mean":
        mean = _chunked_mean(x)[None]
        xs = (x - mean).astype(np.float32)
    elif smooth == "block":
        mean = _block_means(x, block)
        xs = (x - np.repeat(mean, block, axis=0)[:rows]).astype(np.float32)
    else:
        xs = x
    g = np.float32(np.abs(xs).max()) / np.float32(2688)
    if groups == "rows":
        pad = np.zeros((rows, -(-cols // 16) * 16), np.float32)
        pad[:, :cols] = xs
        codes, bs = _groups(pad.reshape(rows, -1, 16), g)
        return codes.reshape(rows, -1)[:, :cols], bs, g, mean
    pad = np.zeros((-(-rows // 16) * 16, cols), np.float32)
    pad[:rows] = xs
    codes, bs = _groups(pad.T.reshape(cols, -1, 16), g)
    return codes.reshape(cols, -1).T[:rows], bs.T, g, mean


@pytest.mark.parametrize("rows,cols,groups,smooth", [
    (77, 64, "rows", "none"), (300, 72, "rows", "mean"), (600, 40, "rows", "mean"),  # > 2 K chunks
    (130, 128, "rows", "block"), (65, 64, "rows", "block"), (333, 128, "cols", "none"), (17, 72, "cols", "none"),
])
def test_matches_an_independent_transcription(rows, cols, groups, smooth):
    rng = np.random.default_rng(rows * cols)
    x = (rng.standard_normal((rows, cols)) * rng.uniform(0.1, 10, cols) + rng.standard_normal(cols) * 3)
    x = x.astype(np.float32)
    r = _C.reference_nvfp4_quantize(x, groups=groups, smooth=smooth, block=64)
    codes, bs, g, mean = _mirror(x, groups, smooth)
    assert np.float32(r["g"]) == g
    assert np.array_equal(r["codes"], codes) and np.array_equal(r["scales"], bs)
    if smooth == "none":
        assert r["mean"] is None
    else:
        assert np.array_equal(r["mean"], mean)
    # and it is a quantization: codes * scale * g reconstruct the (smoothed) input to NVFP4 precision
    scale = np.repeat(r["scales"], 16, axis=1 if groups == "rows" else 0)[:rows, :cols]
    xs = x - (0 if mean is None else np.repeat(mean, 64 if smooth == "block" else rows, axis=0)[:rows])
    assert np.abs(codes * scale * g - xs).sum() / np.abs(xs).sum() < 0.12


def test_all_zero_input_gives_zero_codes():
    r = _C.reference_nvfp4_quantize(np.zeros((20, 32), np.float32))
    assert r["g"] == 0 and not r["codes"].any() and not r["scales"].any()


@pytest.mark.parametrize("kwargs,msg", [({"groups": "x"}, "groups must be"), ({"smooth": "y"}, "smooth must be"),
                                        ({"block": 0}, "block must be")])
def test_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        _C.reference_nvfp4_quantize(np.ones((4, 16), np.float32), **kwargs)


def test_bad_shape():
    with pytest.raises(ValueError):
        _C.reference_nvfp4_quantize(np.ones((4, 4, 4), np.float32))
