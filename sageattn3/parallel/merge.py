"""Merge two partial attentions over disjoint key sets by their log-sum-exp.

    out, lse = merge_attention(out_a, lse_a, out_b, lse_b, layout="HND")

For the same queries attended to key sets A and B (outputs out_a/out_b, natural-log LSEs
lse_a/lse_b of shape (B, H, S)), the attention over A u B is

    out = out_a - sigmoid(lse_b - lse_a) * (out_a - out_b)
    lse = lse_a - logsigmoid(lse_a - lse_b)

evaluated in float32. This form never exponentiates a large positive number (the naive
exp(lse_a) * out_a + ... overflows), see the ring-flash-attention discussion that yunchang
and torch's context parallelism also follow. A row whose LSE is -inf saw no key in that
part (a fully masked chunk): it gets weight 0, whatever its output holds (even NaN); a row
empty on both sides keeps out_b's row (sageattn3 writes zeros there) with LSE -inf.
"""
from __future__ import annotations

import math

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None
    F = None

__all__ = ["merge_attention"]


def merge_attention(out_a, lse_a, out_b, lse_b, *, layout: str = "HND"):
    """(out float32 in the inputs' layout, lse float32 (B, H, S)) of the union of two key sets.

    layout: "HND" for outs shaped (B, H, S, D), "NHD" for (B, S, H, D); the LSEs are
    (B, H, S) in both. Inputs may be any float dtype; they are only read.
    """
    if torch is None:
        raise ImportError("merge_attention() needs torch")
    if layout not in ("HND", "NHD"):
        raise ValueError(f"merge_attention(): layout must be 'HND' or 'NHD', got {layout!r}")
    for name, t in (("out_a", out_a), ("lse_a", lse_a), ("out_b", out_b), ("lse_b", lse_b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"merge_attention(): {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"merge_attention(): {name} must be a floating-point tensor, got {t.dtype}")
    if out_a.dim() != 4 or out_a.shape != out_b.shape:
        raise ValueError(f"merge_attention(): out_a and out_b must be 4-D of one shape, got "
                         f"{tuple(out_a.shape)} and {tuple(out_b.shape)}")
    b, x1, x2, _ = out_a.shape
    want = (b, x1, x2) if layout == "HND" else (b, x2, x1)
    for name, t in (("lse_a", lse_a), ("lse_b", lse_b)):
        if tuple(t.shape) != want:
            raise ValueError(f"merge_attention(): {name} must have shape (B, H, S) = {want} for outs of shape "
                             f"{tuple(out_a.shape)} (layout {layout!r}), got {tuple(t.shape)}")
    if len({out_a.device, lse_a.device, out_b.device, lse_b.device}) != 1:
        raise ValueError("merge_attention(): all inputs must be on one device")

    la, lb = lse_a.float(), lse_b.float()
    a_empty, b_empty = la == -math.inf, lb == -math.inf
    # weight of out_b; forced to 1 / 0 for rows empty in A / B (both empty: 1, zeroed below)
    w = torch.where(a_empty, 1.0, torch.where(b_empty, 0.0, torch.sigmoid(lb - la)))
    lse = torch.where(a_empty, lb, torch.where(b_empty, la, la - F.logsigmoid(la - lb)))

    def rows(t):  # (B, H, S) -> broadcastable against the outs
        t = t if layout == "HND" else t.transpose(1, 2)
        return t.unsqueeze(-1)

    oa, ob = out_a.float(), out_b.float()
    out = torch.lerp(oa, ob, rows(w))
    # An empty part's output may hold anything (SDPA writes NaN for fully masked rows), and
    # 0 * NaN is NaN: take the other part's rows verbatim there (two passes, no host sync).
    out = torch.where(rows(a_empty | b_empty), torch.where(rows(a_empty), ob, oa), out)
    return out, lse.contiguous()
