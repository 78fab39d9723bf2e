"""sdpa_with_lse / attention_with_lse / chunked fallback / merge_attention against float64.

Fresh random inputs per test (seed in failure messages, SA3_TEST_SEED=<int> replays);
outputs compared to a float64 softmax and a float64 log-sum-exp. Bounds: fp32 1e-5, fp16
2e-3, bf16 1.6e-2 relative to max |ref| for the output (one rounding of the result plus
fp32 accumulation), and 1e-4 * (1 + |lse|) for the LSE in every dtype (the LSE is fp32 of
the rounded inputs; the float64 reference uses the same rounded inputs).
"""
from __future__ import annotations

import math
import os
import secrets
import types

import pytest

torch = pytest.importorskip("torch")

from sageattn3 import _lse  # noqa: E402
from sageattn3.parallel import merge_attention  # noqa: E402

OUT_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.fixture
def gen():
    seed = int(os.environ.get("SA3_TEST_SEED", secrets.randbits(63)))
    return types.SimpleNamespace(seed_value=seed, torch=torch.Generator().manual_seed(seed))


def tag(g):
    return f"(seed {g.seed_value}; rerun with SA3_TEST_SEED={g.seed_value})"


def rand(g, *shape, dtype=torch.float32, offset=0.0):
    x = torch.randn(*shape, generator=g.torch, dtype=torch.float64)
    if offset:
        x = x + offset * torch.randn(*shape[:-2], 1, shape[-1], generator=g.torch, dtype=torch.float64)
    return x.to(dtype)


def ref64(qh, kh, vh, causal, scale=None):
    """float64 (out, lse) for HND tensors, GQA by repetition, top-left causal."""
    q, k, v = (t.double() for t in (qh, kh, vh))
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.transpose(-1, -2) * scale
    if causal:
        sq, sk = s.shape[-2:]
        s = s.masked_fill(torch.ones(sq, sk, dtype=torch.bool).tril().logical_not(), -math.inf)
    lse = torch.logsumexp(s, -1)
    return torch.softmax(s, -1) @ v, lse


def to_layout(x, layout):
    """HND -> the layout's tensor (a strided view for NHD, a reshape for NHD_FLAT)."""
    if layout == "HND":
        return x
    x = x.transpose(1, 2)
    return x if layout == "NHD" else x.reshape(x.shape[0], x.shape[1], -1)


def from_layout(x, layout, heads):
    if layout == "HND":
        return x
    if layout == "NHD_FLAT":
        x = x.unflatten(2, (heads, -1))
    return x.transpose(1, 2)


def check(out, lse, qh, kh, vh, causal, scale, g, dtype):
    ref_o, ref_l = ref64(qh, kh, vh, causal, scale)
    assert lse.dtype == torch.float32 and lse.is_contiguous() and lse.shape == ref_l.shape, tag(g)
    assert out.dtype == dtype, tag(g)
    lerr = (lse.double() - ref_l).abs()
    assert (lerr <= 1e-4 * (1 + ref_l.abs())).all(), f"lse max err {lerr.max():.2e} {tag(g)}"
    oerr = (out.double() - ref_o).abs().max() / ref_o.abs().max()
    assert oerr <= OUT_TOL[dtype], f"out rel err {oerr:.2e} {tag(g)}"


CASES = [
    # (B, Hq, Hkv, Sq, Sk, D, causal)
    (1, 2, 2, 1, 1, 32, False),
    (2, 4, 4, 37, 53, 40, True),     # causal with Sq < Sk (top-left)
    (1, 4, 2, 61, 29, 64, True),     # GQA, causal with Sq > Sk
    (1, 6, 1, 33, 71, 128, False),   # MQA
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["HND", "NHD", "NHD_FLAT"])
def test_sdpa_with_lse_matches_float64(gen, case, dtype, layout):
    B, Hq, Hkv, Sq, Sk, D, causal = case
    qh, kh, vh = rand(gen, B, Hq, Sq, D, dtype=dtype), rand(gen, B, Hkv, Sk, D, dtype=dtype, offset=3.0), \
        rand(gen, B, Hkv, Sk, D, dtype=dtype)
    before = [t.clone() for t in (qh, kh, vh)]
    scale = 0.7 / math.sqrt(D) if causal else None
    out, lse = _lse.sdpa_with_lse(*(to_layout(t, layout) for t in (qh, kh, vh)), layout=layout,
                                  heads=Hq if layout == "NHD_FLAT" else None, is_causal=causal, sm_scale=scale)
    assert out.shape == to_layout(qh, layout).shape, tag(gen)
    check(from_layout(out, layout, Hq), lse, qh, kh, vh, causal, scale, gen, dtype)
    for t, b in zip((qh, kh, vh), before):
        assert torch.equal(t, b), "inputs must be read-only"


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("chunk", [7, 500, 1 << 24])
def test_chunked_fallback_matches_float64(gen, case, chunk):
    B, Hq, Hkv, Sq, Sk, D, causal = case
    qh, kh, vh = rand(gen, B, Hq, Sq, D), rand(gen, B, Hkv, Sk, D, offset=3.0), rand(gen, B, Hkv, Sk, D)
    out, lse = _lse.chunked_attention_with_lse(to_layout(qh, "NHD"), to_layout(kh, "NHD"), to_layout(vh, "NHD"),
                                               layout="NHD", is_causal=causal, chunk_scores=chunk)
    check(out.transpose(1, 2), lse, qh, kh, vh, causal, None, gen, torch.float32)


def test_fallback_used_when_the_op_refuses(gen, monkeypatch):
    """An op that raises (e.g. an unsupported head dim) is tried once; the chunked path
    serves the call and every later one with the same key."""
    calls = []

    def refusing(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("head dim not supported")

    monkeypatch.setattr(_lse, "_refused", {})
    monkeypatch.setattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", refusing, raising=False)
    qh, kh, vh = rand(gen, 1, 2, 19, 24), rand(gen, 1, 2, 23, 24), rand(gen, 1, 2, 23, 24)
    for _ in range(2):
        out, lse = _lse.sdpa_with_lse(qh, kh, vh, is_causal=True)
        check(out, lse, qh, kh, vh, True, None, gen, torch.float32)
    assert len(calls) == 1


def test_attention_with_lse_counts_its_route(gen):
    import sageattn3
    sageattn3.reset_stats()
    qh, kh, vh = rand(gen, 1, 2, 9, 32), rand(gen, 1, 2, 9, 32), rand(gen, 1, 2, 9, 32)
    out, lse = _lse.attention_with_lse(qh, kh, vh)
    check(out, lse, qh, kh, vh, False, None, gen, torch.float32)
    assert sum(sageattn3.stats()["fallback"].values()) == 1


@pytest.mark.parametrize("bad, exc, match", [
    (dict(layout="BHSD"), ValueError, "layout"),
    (dict(sm_scale=float("nan")), ValueError, "sm_scale"),
    (dict(sm_scale="0.1"), ValueError, "sm_scale"),
    (dict(is_causal="yes"), TypeError, "is_causal"),
    (dict(q=torch.zeros(1, 2, 9, 32, dtype=torch.float64)), TypeError, "q must be float16"),
    (dict(k=torch.zeros(1, 2, 9, 16), v=torch.zeros(1, 2, 9, 16)), ValueError, "head dim"),
    (dict(k=torch.zeros(1, 3, 9, 32), v=torch.zeros(1, 3, 9, 32)), ValueError, "multiple"),
    (dict(v=torch.zeros(1, 2, 8, 32)), ValueError, "same shape"),
    (dict(q=torch.zeros(2, 9, 32)), ValueError, "4-D"),
    (dict(q=[1.0]), TypeError, "torch.Tensor"),
    (dict(q=torch.zeros(1, 9, 64), k=torch.zeros(1, 9, 64), v=torch.zeros(1, 9, 64), layout="NHD_FLAT", heads=0),
     ValueError, "heads > 0"),
    (dict(q=torch.zeros(1, 9, 64), k=torch.zeros(1, 9, 48), v=torch.zeros(1, 9, 48), layout="NHD_FLAT", heads=2),
     ValueError, "multiples of the head dim"),
])
def test_bad_arguments_named(bad, exc, match):
    args = dict(q=torch.zeros(1, 2, 9, 32), k=torch.zeros(1, 2, 9, 32), v=torch.zeros(1, 2, 9, 32), layout="HND")
    args.update(bad)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    with pytest.raises(exc, match=match):
        _lse.sdpa_with_lse(q, k, v, **args)


# ---------------------------------------------------------------------------------------
# merge_attention
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_merge_of_uneven_chunks_equals_full(gen, layout, dtype):
    qh, kh, vh = rand(gen, 2, 4, 23, 64, dtype=dtype), rand(gen, 2, 2, 101, 64, dtype=dtype, offset=3.0), \
        rand(gen, 2, 2, 101, 64, dtype=dtype)
    cuts = [0, 1, 40, 41, 101]
    acc = None
    for a, b in zip(cuts[:-1], cuts[1:]):
        o, l = _lse.sdpa_with_lse(to_layout(qh, layout), to_layout(kh[:, :, a:b], layout),
                                  to_layout(vh[:, :, a:b], layout), layout=layout)
        acc = (o, l) if acc is None else merge_attention(*acc, o, l, layout=layout)
    out, lse = acc
    assert out.dtype == torch.float32 and lse.dtype == torch.float32 and lse.is_contiguous()
    tol = {torch.float32: 1e-5, torch.bfloat16: 1.6e-2}[dtype]
    ref_o, ref_l = ref64(qh, kh, vh, False)
    assert (lse.double() - ref_l).abs().max() <= 1e-4 * (1 + ref_l.abs().max()), tag(gen)
    assert (from_layout(out, layout, 4).double() - ref_o).abs().max() <= tol * ref_o.abs().max(), tag(gen)


def test_merge_extreme_lse_is_stable(gen):
    """LSE differences of +-1e4 and magnitudes of 1e30 neither overflow nor lose the larger part."""
    o_a, o_b = rand(gen, 1, 2, 5, 8), rand(gen, 1, 2, 5, 8)
    l_a = torch.tensor([[[0.0, 1e4, -1e4, 1e30, 3.0]] * 2])
    l_b = torch.tensor([[[0.0, -1e4, 1e4, 1e30, 3.0 + math.log(3.0)]] * 2])
    out, lse = merge_attention(o_a, l_a, o_b, l_b)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    w_b = torch.tensor([0.5, 0.0, 1.0, 0.5, 0.75])
    want = o_a + w_b.view(1, 1, 5, 1) * (o_b - o_a)
    assert torch.allclose(out, want, atol=1e-6), tag(gen)
    want_l = torch.tensor([math.log(2.0), 1e4, 1e4, 1e30, 3.0 + math.log(4.0)])
    assert torch.allclose(lse[0, 0], want_l, rtol=1e-6, atol=1e-6)


def test_merge_empty_rows_give_no_nan(gen):
    """Rows with lse -inf (a fully masked chunk) take weight 0 even when their output is NaN."""
    o_a, o_b = rand(gen, 1, 5, 1, 8), rand(gen, 1, 5, 1, 8)  # NHD: 5 tokens, 1 head
    l_a = torch.tensor([[[-math.inf, 0.5, -math.inf, 1.0, 2.0]]])
    l_b = torch.tensor([[[0.25, -math.inf, -math.inf, 1.0, -math.inf]]])
    o_a[0, 0] = float("nan")
    o_b[0, 1] = float("nan")
    o_b[0, 2] = 0.0
    o_a[0, 2] = 0.0
    out, lse = merge_attention(o_a, l_a, o_b, l_b, layout="NHD")
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert torch.equal(out[0, 0], o_b[0, 0]) and torch.equal(out[0, 1], o_a[0, 1]) and torch.equal(out[0, 4], o_a[0, 4])
    assert torch.equal(out[0, 2], torch.zeros(1, 8))
    assert lse[0, 0, [0, 1, 2, 4]].tolist() == [0.25, 0.5, -math.inf, 2.0]
    assert lse[0, 0, 3].item() == pytest.approx(1.0 + math.log(2.0), rel=1e-6)


def test_merge_bad_arguments():
    o = torch.zeros(1, 2, 3, 4)
    l = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="layout"):
        merge_attention(o, l, o, l, layout="BSHD")
    with pytest.raises(ValueError, match="lse_b must have shape"):
        merge_attention(o, l, o, torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="lse_a must have shape"):
        merge_attention(o, l, o, l, layout="NHD")
    with pytest.raises(ValueError, match="one shape"):
        merge_attention(o, l, torch.zeros(1, 2, 3, 5), l)
    with pytest.raises(TypeError, match="floating-point"):
        merge_attention(o, l.long(), o, l)
