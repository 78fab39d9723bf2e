"""Keyword surface of the public functions (sageattn3/_keywords.py): typos are errors, aliases
are honoured, result-neutral extras of sageattn3_blackwell are ignored with one warning.
CPU tensors: every call here is served by the SDPA fallback, compared against SDPA itself."""
from __future__ import annotations

import inspect
import warnings

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import sageattn3  # noqa: E402
from sageattn3 import _keywords  # noqa: E402


@pytest.fixture
def qkv():
    g = torch.Generator().manual_seed(3)
    # Sq=Sk=7 so causal and non-causal differ in every row but the last
    return tuple(torch.randn(1, 2, 7, 32, generator=g) for _ in range(3))


def _sdpa(q, k, v, **kw):
    return F.scaled_dot_product_attention(q, k, v, **kw)


# ------------------------------------------------------------------------ sageattn

@pytest.mark.parametrize("typo", ["is_casual", "casual", "sm_scal", "tensor_layot", "kernal", "attention_mask"])
def test_sageattn_unknown_keyword_is_a_type_error_naming_it(qkv, typo):
    with pytest.raises(TypeError, match=repr(typo)):
        sageattn3.sageattn(*qkv, **{typo: True})


def test_sageattn_typo_suggests_the_name(qkv):
    with pytest.raises(TypeError, match="did you mean 'is_causal'"):
        sageattn3.sageattn(*qkv, is_casual=True)


@pytest.mark.parametrize("alias", ["scale", "softmax_scale"])
def test_sageattn_scale_aliases_are_honoured(qkv, alias):
    out = sageattn3.sageattn(*qkv, **{alias: 0.01})
    torch.testing.assert_close(out, _sdpa(*qkv, scale=0.01))
    assert not torch.allclose(out, _sdpa(*qkv)), "the test needs a scale that changes the result"


def test_sageattn_causal_alias_is_honoured(qkv):
    out = sageattn3.sageattn(*qkv, causal=True)
    torch.testing.assert_close(out, _sdpa(*qkv, is_causal=True))
    assert not torch.allclose(out, _sdpa(*qkv))


@pytest.mark.parametrize("kw", [dict(sm_scale=0.5, scale=0.25), dict(scale=0.5, softmax_scale=0.25),
                                dict(is_causal=False, causal=True), dict(is_causal=True, causal=False),
                                dict(sm_scale=None, scale=0.5)])
def test_sageattn_two_spellings_with_different_values(qkv, kw):
    with pytest.raises(TypeError, match="two spellings"):
        sageattn3.sageattn(*qkv, **kw)


def test_sageattn_two_spellings_with_the_same_value(qkv):
    out = sageattn3.sageattn(*qkv, sm_scale=0.5, scale=0.5, is_causal=True, causal=True)
    torch.testing.assert_close(out, _sdpa(*qkv, scale=0.5, is_causal=True))


def test_sageattn_positional_is_causal_and_scale_still_work(qkv):
    out = sageattn3.sageattn(*qkv, "HND", True, 0.3)
    torch.testing.assert_close(out, _sdpa(*qkv, scale=0.3, is_causal=True))


@pytest.mark.parametrize("kw", [dict(smooth_k=True), dict(smooth_k=False), dict(smooth_v=True),
                                dict(qk_quant_gran="per_warp"), dict(qk_quant_gran="per_thread"),
                                dict(pv_accum_dtype="fp32+fp16"), dict(pv_accum_dtype="fp16"),
                                dict(quantization_backend="cuda")])
def test_sageattn_sa2_result_neutral_options_are_accepted(qkv, kw):
    torch.testing.assert_close(sageattn3.sageattn(*qkv, **kw), _sdpa(*qkv))


@pytest.mark.parametrize("kw,exc", [(dict(qk_quant_gran="per_block"), ValueError), (dict(qk_quant_gran=1), TypeError),
                                    (dict(pv_accum_dtype="fp64"), ValueError), (dict(smooth_k="yes"), TypeError),
                                    (dict(quantization_backend="cpu"), ValueError)])
def test_sageattn_sa2_options_with_bad_values(qkv, kw, exc):
    with pytest.raises(exc, match=next(iter(kw))):
        sageattn3.sageattn(*qkv, **kw)


def test_signature_still_shows_the_defaults():
    sig = str(inspect.signature(sageattn3.sageattn))
    assert "is_causal: 'bool' = False" in sig and "sm_scale: 'Optional[float]' = None" in sig, sig
    assert "is_causal=False" in str(inspect.signature(sageattn3.sageattn3_blackwell))
    assert not _keywords.UNSET_CAUSAL and _keywords.UNSET_SCALE.value is None


# ------------------------------------------------------------ sageattn3_blackwell

@pytest.mark.parametrize("layout", ["bogus", "HND ", "", "NHD_FLAT2"])
def test_blackwell_bad_tensor_layout_raises(qkv, layout):
    with pytest.raises(ValueError, match="layout"):
        sageattn3.sageattn3_blackwell(*qkv, tensor_layout=layout)


def test_blackwell_tensor_layout_not_a_str(qkv):
    with pytest.raises(TypeError, match="tensor_layout"):
        sageattn3.sageattn3_blackwell(*qkv, tensor_layout=1)


def test_blackwell_tensor_layout_nhd_is_honoured(qkv):
    qn, kn, vn = (x.transpose(1, 2).contiguous() for x in qkv)
    out = sageattn3.sageattn3_blackwell(qn, kn, vn, tensor_layout="NHD")
    torch.testing.assert_close(out, _sdpa(*qkv).transpose(1, 2))


@pytest.mark.parametrize("alias", ["sm_scale", "scale", "softmax_scale"])
def test_blackwell_scale_is_honoured(qkv, alias):
    torch.testing.assert_close(sageattn3.sageattn3_blackwell(*qkv, **{alias: 0.01}), _sdpa(*qkv, scale=0.01))


def test_blackwell_causal_alias_is_honoured_and_conflicts_raise(qkv):
    torch.testing.assert_close(sageattn3.sageattn3_blackwell(*qkv, causal=True), _sdpa(*qkv, is_causal=True))
    with pytest.raises(TypeError, match="two spellings"):
        sageattn3.sageattn3_blackwell(*qkv, is_causal=False, causal=True)
    with pytest.raises(TypeError, match="two spellings"):
        sageattn3.sageattn3_blackwell(*qkv, sm_scale=0.1, scale=0.2)


@pytest.mark.parametrize("name", ["is_casual", "casual", "mask", "attention_mask", "attn_bias", "attn_masks",
                                  "sm_scal", "tensor_layou", "layout"])
def test_blackwell_misspelt_result_changing_keyword_raises(qkv, name):
    with pytest.raises(TypeError, match=repr(name)):
        sageattn3.sageattn3_blackwell(*qkv, **{name: True})


def test_blackwell_return_lse(qkv):
    with pytest.raises(TypeError, match="return_lse"):
        sageattn3.sageattn3_blackwell(*qkv, return_lse=True)
    torch.testing.assert_close(sageattn3.sageattn3_blackwell(*qkv, return_lse=False), _sdpa(*qkv))


def test_blackwell_ignored_keyword_warns_once_per_name(qkv, monkeypatch):
    monkeypatch.setattr(_keywords, "_warned", set())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(3):
            out = sageattn3.sageattn3_blackwell(*qkv, some_extra=1, qk_quant_gran="per_thread")
        torch.testing.assert_close(out, _sdpa(*qkv))
    texts = [str(w.message) for w in seen]
    assert len(texts) == 2, texts
    assert any("'some_extra'" in t for t in texts) and any("'qk_quant_gran'" in t for t in texts)
    assert all(w.filename == __file__ for w in seen), "the warning points at the caller"


def test_blackwell_plain_call_unchanged(qkv):
    torch.testing.assert_close(sageattn3.sageattn3_blackwell(*qkv), _sdpa(*qkv))
    torch.testing.assert_close(sageattn3.sageattn3_blackwell(*qkv, None, True), _sdpa(*qkv, is_causal=True))
