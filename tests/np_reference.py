"""float64 NumPy attention for the CPU tests of the C reference (tests/test_reference*.py)."""
from __future__ import annotations

import numpy as np


def attention64(q, k, v, *, is_causal=False, sm_scale=None):
    """float64 (out, lse, p) in HND with GQA by repetition and a top-left causal mask."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, rep, 1), np.repeat(v, rep, 1)
    scale = 1.0 / np.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    s = np.einsum("bhid,bhjd->bhij", q, k) * scale
    if is_causal:
        sq, sk = s.shape[-2:]
        s = np.where(np.arange(sk)[None, :] <= np.arange(sq)[:, None], s, -np.inf)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - m)
    lse = m[..., 0] + np.log(e.sum(-1))
    p = e / e.sum(-1, keepdims=True)
    return p @ v, lse, p
