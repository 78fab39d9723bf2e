"""torch.library custom op wrapping the dispatcher, so torch.compile(fullgraph=True) sees one
opaque op with a shape-only fake implementation. Eager calls skip it (the op dispatch costs
more host time than the kernel launch); only traced code goes through here.

`attention` validates the call in C first when it runs eagerly (torch's own argument checks
would otherwise answer a bad call with a RuntimeError); under tracing the arguments are fake
tensors, and the op's real implementation validates them when the graph runs.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _dispatch


@torch.library.custom_op("sageattn3::attention", mutates_args=())
def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str, heads: int,
               is_causal: bool, sm_scale: Optional[float], kernel: str, pv: str) -> torch.Tensor:
    h = heads if heads > 0 else None
    out = _dispatch.run(q, k, v, layout=layout, heads=h, is_causal=is_causal, sm_scale=sm_scale,
                        kernel=kernel, pv=pv)
    # One declared layout for real and fake results: contiguous (the NHD fallback returns a
    # transposed view; a custom op's output must also never alias an input).
    return out.contiguous()


@_attention.register_fake
def _(q, k, v, layout, heads, is_causal, sm_scale, kernel, pv):
    shape = _dispatch.out_shape(q, k, v, layout, heads if heads > 0 else None)
    return q.new_empty(shape)


def _validate_eagerly(q, k, v, layout, heads, is_causal, sm_scale, kernel, pv):
    """Bad arguments raise here, eagerly, with our messages (under torch.compile the graph was
    traced from a call that already passed this)."""
    if not torch.compiler.is_compiling():
        _dispatch.validate_args(layout, heads, kernel, pv)
        _dispatch.problem(q, k, v, layout, heads if heads else None, is_causal, sm_scale)


def attention(q, k, v, layout: str, heads: int, is_causal: bool, sm_scale: Optional[float], kernel: str,
              pv: str):
    """The custom op sageattn3::attention (heads 0 = not given)."""
    _validate_eagerly(q, k, v, layout, heads, is_causal, sm_scale, kernel, pv)
    return _attention(q, k, v, layout, heads, is_causal, sm_scale, kernel, pv)


@torch.library.custom_op("sageattn3::attention_lse", mutates_args=())
def _attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str, heads: int,
                   is_causal: bool, sm_scale: Optional[float], kernel: str,
                   pv: str) -> Tuple[torch.Tensor, torch.Tensor]:
    from . import _lse
    h = heads if heads > 0 else None
    out, lse = _lse.attention_with_lse(q, k, v, layout=layout, heads=h, is_causal=is_causal, sm_scale=sm_scale,
                                       kernel=kernel, pv=pv)
    return out.contiguous(), lse


@_attention_lse.register_fake
def _(q, k, v, layout, heads, is_causal, sm_scale, kernel, pv):
    shape = _dispatch.out_shape(q, k, v, layout, heads if heads > 0 else None)
    if layout == "HND":
        rows = (q.shape[0], q.shape[1], q.shape[2])
    elif layout == "NHD":
        rows = (q.shape[0], q.shape[2], q.shape[1])
    else:
        rows = (q.shape[0], heads, q.shape[1])
    return q.new_empty(shape), q.new_empty(rows, dtype=torch.float32)


def attention_lse(q, k, v, layout: str, heads: int, is_causal: bool, sm_scale: Optional[float], kernel: str,
                  pv: str):
    """The custom op sageattn3::attention_lse: (out, lse) (heads 0 = not given)."""
    _validate_eagerly(q, k, v, layout, heads, is_causal, sm_scale, kernel, pv)
    return _attention_lse(q, k, v, layout, heads, is_causal, sm_scale, kernel, pv)
