"""The yunchang and xDiT adapters' contracts, in one process: what they return, what they
refuse (by name), and xDiT registration against stand-ins of its registry and enum."""
from __future__ import annotations

import enum
import math

import pytest

torch = pytest.importorskip("torch")

from sageattn3 import _lse  # noqa: E402
from sageattn3.parallel import register_xdit_backend, xdit_attn_backend, yunchang_attn_processor  # noqa: E402


def ref_lse(qh, kh, causal=False, scale=None):
    g = qh.shape[1] // kh.shape[1]
    s = qh.double() @ kh.double().repeat_interleave(g, 1).transpose(-1, -2)
    s = s * (1 / math.sqrt(qh.shape[-1]) if scale is None else scale)
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).tril().logical_not(), -math.inf)
    return torch.logsumexp(s, -1)


def test_yunchang_processor_contract():
    q, k, v = torch.randn(2, 13, 4, 32), torch.randn(2, 13, 2, 32), torch.randn(2, 13, 2, 32)
    out, lse = yunchang_attn_processor(q, k, v, dropout_p=0.0, softmax_scale=0.2, causal=True,
                                       window_size=(-1, -1), softcap=0.0, alibi_slopes=None, return_softmax=False)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == (2, 4, 13) and lse.dtype == torch.float32 and lse.is_contiguous()
    ref = ref_lse(q.transpose(1, 2), k.transpose(1, 2), True, 0.2)
    assert (lse.double() - ref).abs().max() < 1e-5
    # positional order as yunchang's zigzag ring passes it: (q, k, v, dropout_p, softmax_scale)
    out2, _ = yunchang_attn_processor(q, k, v, 0.0, 0.2, causal=True, deterministic=True)
    assert torch.equal(out, out2)


@pytest.mark.parametrize("kw, match", [
    (dict(dropout_p=0.1), "dropout_p"),
    (dict(window_size=(128, 128)), "window_size"),
    (dict(softcap=30.0), "softcap"),
    (dict(alibi_slopes=torch.ones(4)), "alibi_slopes"),
    (dict(return_softmax=True), "return_softmax"),
])
def test_yunchang_processor_refuses_what_it_cannot_honour(kw, match):
    x = torch.randn(1, 5, 4, 32)
    with pytest.raises(ValueError, match=match):
        yunchang_attn_processor(x, x, x, **kw)


def test_yunchang_processor_rejects_unknown_keywords():
    x = torch.randn(1, 5, 4, 32)
    with pytest.raises(TypeError, match="block_table"):
        yunchang_attn_processor(x, x, x, block_table=None)


def test_xdit_backend_contract():
    q, k, v = torch.randn(1, 4, 17, 64), torch.randn(1, 4, 17, 64), torch.randn(1, 4, 17, 64)
    out, lse = xdit_attn_backend(q, k, v, dropout_p=0.0, is_causal=False, attention_kwargs=None)
    assert out.shape == q.shape and lse.shape == (1, 4, 17) and lse.dtype == torch.float32
    assert (lse.double() - ref_lse(q, k)).abs().max() < 1e-5
    # sparse backends' metadata (as xDiT's Wan sets "thw") and an unset mask are ignored
    meta = {"thw": (3, 4, 5), "sp_size": 2, "scale": 1.0, "attn_mask": None}
    out_s, lse_s = xdit_attn_backend(q, k, v, 0.0, True, attention_kwargs=meta)
    assert (lse_s.double() - ref_lse(q, k, True)).abs().max() < 1e-5


@pytest.mark.parametrize("kw, exc, match", [
    (dict(dropout_p=0.1), ValueError, "dropout_p"),
    (dict(attention_kwargs={"attn_mask": torch.zeros(17, 17)}), ValueError, "attn_mask"),
    (dict(attention_kwargs={"indices_k": torch.arange(3)}), ValueError, "indices_k"),
    (dict(attention_kwargs={"cu_seqlens_k": torch.arange(3), "max_seqlen_k": 9}), ValueError, "max_seqlen_k"),
    (dict(attention_kwargs=[1]), TypeError, "attention_kwargs"),
])
def test_xdit_backend_refuses(kw, exc, match):
    x = torch.randn(1, 4, 17, 64)
    with pytest.raises(exc, match=match):
        xdit_attn_backend(x, x, x, **kw)


def test_register_xdit_backend_with_stand_ins():
    class AttentionBackendType(enum.Enum):  # shape of xDiT's enum
        SDPA = "SDPA"
        SDPA_FLASH = "SDPA with FLASH backend"
        CUDNN = "cuDNN"

    def old(*a, **k):
        return None

    registry = {AttentionBackendType.SDPA_FLASH: old}
    prev = register_xdit_backend(registry=registry, backend_type=AttentionBackendType)
    assert prev is old
    assert registry[AttentionBackendType.SDPA_FLASH] is xdit_attn_backend
    assert registry["sageattn3"] is xdit_attn_backend
    assert register_xdit_backend("cudnn", registry=registry, backend_type=AttentionBackendType) is None
    assert registry[AttentionBackendType.CUDNN] is xdit_attn_backend
    with pytest.raises(ValueError, match="SDPA_FLASH"):
        register_xdit_backend("FLASH_9", registry=registry, backend_type=AttentionBackendType)


def test_register_xdit_backend_without_xdit_says_so():
    try:
        import xfuser  # noqa: F401
        pytest.skip("xfuser is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="xfuser"):
        register_xdit_backend()


def test_adapters_route_through_attention_with_lse(monkeypatch):
    """Both adapters call the one internal entry the lead will route to the kernels."""
    seen = []

    def fake(q, k, v, *, layout, is_causal, sm_scale=None, heads=None):
        seen.append((layout, is_causal, sm_scale))
        return q, torch.zeros(q.shape[0], q.shape[2] if layout == "NHD" else q.shape[1], 1)

    monkeypatch.setattr(_lse, "attention_with_lse", fake)
    x = torch.randn(1, 5, 4, 32)
    yunchang_attn_processor(x, x, x, softmax_scale=0.3, causal=True)
    xdit_attn_backend(x, x, x, 0.0, False)
    assert seen == [("NHD", True, 0.3), ("HND", False, None)]
