"""yunchang adapter: sageattn3 as the local kernel of yunchang's Ulysses / ring / USP attention.

    from yunchang import LongContextAttention, set_seq_parallel_pg
    from sageattn3.parallel import yunchang_attn_processor

    set_seq_parallel_pg(ulysses_degree, ring_degree, rank, world_size)
    attn = LongContextAttention(attn_type=None, attn_processor=yunchang_attn_processor)
    out = attn(q, k, v, causal=False)          # q/k/v: this rank's (B, S/N, H, D) shard

No patching: yunchang's `select_flash_attn_impl(attn_type=None, "fwd-only", attn_processor)`
falls through to `attn_processor`, and its basic ring (`ring_impl_type="basic"`, the
default; zigzag/stripe ignore attn_processor) calls it once per ring step as
`fn(q, k, v, dropout_p=, softmax_scale=, causal=causal and step == 0, window_size=,
softcap=, alibi_slopes=, return_softmax=)` on (B, S, H, D) tensors and merges the returned
`(out, lse)` with lse (B, H, S) float32 natural log (`update_out_and_lse` transposes it to
(B, S, H, 1) itself). Pure Ulysses is LongContextAttention with ring degree 1 (one step);
yunchang's `UlyssesAttention` class takes no attn_processor.

Forward only (inference): the contract's training-time features raise a ValueError naming
them instead of being ignored. Each call quantizes its own K/V chunk (per-call statistics).
"""
from __future__ import annotations

from .. import _lse

__all__ = ["yunchang_attn_processor"]

# keyword arguments some yunchang callers add that change nothing in a forward pass
_HARMLESS = {"deterministic"}


def yunchang_attn_processor(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, return_softmax=False, **kwargs):
    """yunchang's forward-only kernel contract -> (out (B, S, H, D) in q's dtype,
    lse (B, H, S) float32 contiguous, natural log)."""
    unknown = sorted(set(kwargs) - _HARMLESS)
    if unknown:
        raise TypeError(f"yunchang_attn_processor(): unexpected keyword argument(s) {unknown}")
    if dropout_p is not None and dropout_p != 0:
        raise ValueError(f"yunchang_attn_processor(): dropout_p={dropout_p!r} is not supported "
                         "(sageattn3 is forward-only, no dropout); pass dropout_p=0.0")
    if window_size is not None and tuple(window_size) != (-1, -1):
        raise ValueError(f"yunchang_attn_processor(): window_size={tuple(window_size)!r} (sliding-window "
                         "attention) is not supported; pass (-1, -1)")
    if softcap is not None and softcap != 0:
        raise ValueError(f"yunchang_attn_processor(): softcap={softcap!r} (logit soft-capping) is not "
                         "supported; pass 0.0")
    if alibi_slopes is not None:
        raise ValueError("yunchang_attn_processor(): alibi_slopes (ALiBi bias) is not supported; pass None")
    if return_softmax:
        raise ValueError("yunchang_attn_processor(): return_softmax=True (the attention probabilities) "
                         "is not supported")
    return _lse.attention_with_lse(q, k, v, layout="NHD", is_causal=bool(causal), sm_scale=softmax_scale)
