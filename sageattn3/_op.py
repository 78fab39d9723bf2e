"""torch.library custom op wrapping the dispatcher, so torch.compile(fullgraph=True) sees one
opaque op with a shape-only fake implementation. Eager calls skip it (the op dispatch costs
more host time than the kernel launch); only traced code goes through here.

`attention` validates the call in C first when it runs eagerly (torch's own argument checks
would otherwise answer a bad call with a RuntimeError); under tracing the arguments are fake
tensors, and the op's real implementation validates them when the graph runs.
"""
from __future__ import annotations

from typing import Optional

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


def attention(q, k, v, layout: str, heads: int, is_causal: bool, sm_scale: Optional[float], kernel: str,
              pv: str):
    """The custom op sageattn3::attention (heads 0 = not given)."""
    if not torch.compiler.is_compiling():
        _dispatch.validate_args(layout, heads, kernel, pv)
        _dispatch.problem(q, k, v, layout, heads if heads else None, is_causal, sm_scale)
    return _attention(q, k, v, layout, heads, is_causal, sm_scale, kernel, pv)
