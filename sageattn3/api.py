"""Public attention functions.

`sageattn3_blackwell` keeps the official SageAttention3 signature (ComfyUI core imports it
from `sageattn3` and registers it as attention "sage3"; existing custom nodes import it from
`sageattn3.api`). `sageattn` is the general entry with layouts, scale and precision choice.
Both run a sageattn3 kernel when one can serve the call and torch SDPA otherwise; the
reason for every fallback is logged once and counted in `sageattn3.stats()`.

Keywords (the rules live in `_keywords.py`): `sageattn` takes its own names plus the
aliases SageAttention 2's and yunchang's callers use (`scale`/`softmax_scale`, `causal`)
and SageAttention 2's result-neutral options; anything else is a TypeError naming it.
`sageattn3_blackwell` keeps `**kwargs`: result-changing keywords are honoured or rejected,
other extras are ignored with a one-time warning per name.
"""
from __future__ import annotations

from typing import Optional

from . import _dispatch, _keywords
from ._keywords import UNSET_CAUSAL, UNSET_SCALE

__all__ = ["sageattn", "sageattn3_blackwell"]


def _run(q, k, v, layout, heads, is_causal, sm_scale, kernel, pv, attn_mask=None):
    if _dispatch.torch is None:
        raise ImportError("sageattn3 attention needs torch; only the NumPy reference works without it")
    _dispatch.validate_args(layout, heads, kernel, pv)
    if attn_mask is None and _compiling():
        # Under torch.compile the decision must live inside an opaque custom op.
        from . import _op
        return _op.attention(q, k, v, layout, heads or 0, bool(is_causal), sm_scale, kernel, pv)
    return _dispatch.run(q, k, v, layout=layout, heads=heads, is_causal=is_causal, sm_scale=sm_scale,
                         kernel=kernel, pv=pv, attn_mask=attn_mask)


def _run_lse(q, k, v, layout, heads, is_causal, sm_scale, kernel, pv):
    if _dispatch.torch is None:
        raise ImportError("sageattn3 attention needs torch; only the NumPy reference works without it")
    _dispatch.validate_args(layout, heads, kernel, pv)
    if _compiling():
        from . import _op
        return _op.attention_lse(q, k, v, layout, heads or 0, bool(is_causal), sm_scale, kernel, pv)
    from . import _lse
    return _lse.attention_with_lse(q, k, v, layout=layout, heads=heads, is_causal=is_causal, sm_scale=sm_scale,
                                   kernel=kernel, pv=pv)


def _compiling() -> bool:
    compiler = getattr(_dispatch.torch, "compiler", None)
    return compiler is not None and compiler.is_compiling()


def sageattn(q, k, v, tensor_layout: str = "HND", is_causal: bool = UNSET_CAUSAL,
             sm_scale: Optional[float] = UNSET_SCALE, *, heads: Optional[int] = None,
             kernel: str = "auto", pv: str = "auto", attn_mask=None, return_lse: bool = False, **aliases):
    """Attention softmax(q k^T * sm_scale) v with quantized kernels where they serve.

    tensor_layout: "HND" (B,H,S,D), "NHD" (B,S,H,D) or "NHD_FLAT" (B,S,H*D, needs `heads`).
    k/v may have fewer heads than q (GQA/MQA). is_causal follows torch SDPA (top-left).
    attn_mask: honoured, by SDPA (the kernels take none).
    return_lse: return (out, lse) with lse the natural-log log-sum-exp of each row's scores,
    float32 (B, Hq, Sq) in every layout (what ring attention merges by); written by the kernel
    where one serves the call (hopper, mma), else computed by torch's LSE-returning SDPA ops.
    pv: "fp16" (P.V in the input's 16-bit type: most accurate), "fp8" (FP8 e4m3 P.V, fp32
    accumulate, sm89+), "fp8_f16acc" (FP8 e4m3 P.V with each KV tile accumulated in fp16, the
    double-rate form on RTX 40xx/50xx; mma only), "auto" (per-device default, see `info()`).
    Aliases: `scale` / `softmax_scale` for sm_scale, `causal` for is_causal (two spellings
    with different values are a TypeError). SageAttention 2's options that don't change the
    result here (smooth_k, smooth_v, qk_quant_gran, pv_accum_dtype, quantization_backend)
    are checked against SageAttention 2's choices and ignored. Any other keyword is a
    TypeError naming it.
    """
    if aliases:
        is_causal, sm_scale = _keywords.sageattn_extras(aliases, is_causal, sm_scale)
    if is_causal is UNSET_CAUSAL:
        is_causal = False
    if sm_scale is UNSET_SCALE:
        sm_scale = None
    if return_lse:
        if attn_mask is not None:
            raise ValueError("sageattn(return_lse=True) takes no attn_mask (no path that returns the LSE "
                             "applies a mask)")
        return _run_lse(q, k, v, tensor_layout, heads, is_causal, sm_scale, kernel, pv)
    return _run(q, k, v, tensor_layout, heads, is_causal, sm_scale, kernel, pv, attn_mask=attn_mask)


def sageattn3_blackwell(q, k, v, attn_mask=None, is_causal=UNSET_CAUSAL, per_block_mean=True, **kwargs):
    """Drop-in for SageAttention3's function of the same name: (B, H, S, D) inputs.

    Unlike the original, an `attn_mask` is honoured (the call goes to SDPA with it) and the
    inputs are never modified. `per_block_mean` selects Q smoothing in the NVFP4 kernel; the
    INT8 kernels don't need it (INT8 keeps Q's range) and ignore it.
    Extra keywords: `tensor_layout`, `sm_scale` (or `scale`/`softmax_scale`) and `causal`
    are honoured; misspellings of a result-changing name (`is_casual`, `mask`, ...) and
    `return_lse=True` are a TypeError; anything else is ignored with a one-time warning.
    """
    del per_block_mean
    if kwargs:
        layout, is_causal, sm_scale, heads = _keywords.blackwell_extras(kwargs, is_causal)
        return _run(q, k, v, layout, heads, is_causal, sm_scale, "auto", "auto", attn_mask=attn_mask)
    if is_causal is UNSET_CAUSAL:
        is_causal = False
    return _run(q, k, v, "HND", None, is_causal, None, "auto", "auto", attn_mask=attn_mask)
