"""Attention that also returns the log-sum-exp of each query row (ring attention merges by it).

    out, lse = attention_with_lse(q, k, v, layout="NHD", is_causal=False, sm_scale=None)

`lse` is float32, natural log, shape (B, Hq, Sq), contiguous, in every layout: the LSE of
the scores sm_scale * q.k over the keys each row sees (top-left causal, as torch SDPA).
A row that sees no key has lse = -inf (merge_attention gives it weight 0).

`attention_with_lse` is the one entry the parallel adapters and `sageattn(return_lse=True)`
call. It asks the dispatcher's policy with an LSE output attached: the family the policy picks
writes the LSE from its kernel's epilogue (hopper and mma both do; a family that couldn't would
decline with "lse") and `sdpa_with_lse` serves whatever no family takes. Quantization statistics
are per call: every ring step is one call on its own K/V chunk, nothing is cached across calls.

Checked on the H200: the CUDA ops below (tests/test_gpu_lse.py) and the hopper kernel's LSE
against float64 and the C reference (tests/test_gpu_hopper.py). The mma kernel's LSE has the same
checks (tests/test_gpu_mma.py, tests/test_gpu_lse.py), not yet run on a GPU.

`sdpa_with_lse` uses torch's internal SDPA ops that return the logsumexp, never a
(Sq x Sk) buffer:
  CPU:  aten._scaled_dot_product_flash_attention_for_cpu (fp32/fp16/bf16, native GQA,
        top-left causal for Sq != Sk; lse (B, H, Sq) natural log but laid out (B, Sq, H),
        so it is made contiguous here: B*H*Sq floats).
  CUDA: aten._scaled_dot_product_flash_attention (fp16/bf16, native GQA; lse (B, H, Sq)
        natural log). Its causal mask is bottom-right when Sq != Sk (FlashAttention-2),
        so such calls go to
        aten._scaled_dot_product_efficient_attention(compute_log_sumexp=True) (any float
        dtype, top-left causal; lse padded to a multiple of 32 rows, sliced here; no GQA:
        MQA K/V become stride-0 views, other GQA ratios are repeated like SDPA's math path).
Checked on torch 2.13 (CPU op, tests/test_lse_sdpa.py) and torch 2.11 on the H200 (CUDA ops,
tests/test_gpu_lse.py). Where an op is missing or
refuses a call (head dim, arch), an exact chunked computation in fp32 serves it with
memory bounded by CHUNK_SCORES score elements per call.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

from . import _dispatch, _stats

try:
    import torch
except ImportError:  # pragma: no cover - import sageattn3 works without torch
    torch = None

__all__ = ["attention_with_lse", "sdpa_with_lse", "chunked_attention_with_lse"]

LAYOUTS = ("HND", "NHD", "NHD_FLAT")
# The chunked fallback materializes at most this many fp32 score elements at once.
CHUNK_SCORES = 1 << 24

# (device type, dtype, head dim, gqa) -> reason, for ops that refused a call: tried once.
_refused: dict = {}


def attention_with_lse(q, k, v, *, layout: str = "HND", heads: Optional[int] = None,
                       is_causal: bool = False, sm_scale: Optional[float] = None, kernel: str = "auto",
                       pv: str = "auto"):
    """(out in q's layout and dtype, lse (B, Hq, Sq) float32 contiguous); see the module doc.

    The single internal entry for callers that merge partial attentions (yunchang, xDiT,
    merge_attention users). The call is validated in C once; a kernel family that writes the
    LSE from its epilogue serves it where the policy picks one (families that can't write it
    decline with "lse"), else sdpa_with_lse does, with the reason counted in stats().
    Quantization statistics are per call: each ring step's K/V chunk gets its own.
    """
    prob = _dispatch.problem(q, k, v, layout, heads, is_causal, sm_scale)
    lse = None
    if prob.device >= 0:
        lse = torch.empty((prob.batch, prob.heads_q, prob.seq_q), dtype=torch.float32, device=q.device)
    out, key, detail = _dispatch._serve(prob, q, k, v, kernel, pv, lse=lse)
    if out is not None:
        return out, lse
    _stats.record_fallback(key, detail)
    if layout not in LAYOUTS:  # C took any case
        layout = prob.layout
    return sdpa_with_lse(q, k, v, layout=layout, heads=heads, is_causal=bool(is_causal), sm_scale=sm_scale)


# ---------------------------------------------------------------------------------------
# argument checks and layouts
# ---------------------------------------------------------------------------------------

def _check(q, k, v, layout, heads, is_causal, sm_scale, fn="sdpa_with_lse"):
    if torch is None:
        raise ImportError(f"{fn}() needs torch")
    if layout not in LAYOUTS:
        raise ValueError(f"{fn}(): layout must be one of {LAYOUTS}, got {layout!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}(): {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise TypeError(f"{fn}(): {name} must be float16, bfloat16 or float32, got {t.dtype}")
        want = 3 if layout == "NHD_FLAT" else 4
        if t.dim() != want:
            raise ValueError(f"{fn}(): {name} must be {want}-D for layout {layout!r}, got shape {tuple(t.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"{fn}(): q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"{fn}(): q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not isinstance(is_causal, (bool, int)) or isinstance(is_causal, int) and is_causal not in (0, 1):
        raise TypeError(f"{fn}(): is_causal must be a bool, got {is_causal!r}")
    if sm_scale is not None:
        if isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)) or not math.isfinite(sm_scale):
            raise ValueError(f"{fn}(): sm_scale must be None or a finite number, got {sm_scale!r}")
    if layout == "NHD_FLAT" and (not isinstance(heads, int) or isinstance(heads, bool) or heads <= 0):
        raise ValueError(f"{fn}(): layout 'NHD_FLAT' needs heads > 0, got {heads!r}")


def _to_hnd(q, k, v, layout, heads, fn):
    """(B, H, S, D) views of q/k/v (no copies), checked for consistent sizes."""
    if layout == "HND":
        qh, kh, vh = q, k, v
    elif layout == "NHD":
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    else:
        b, sq, hd = q.shape
        if hd % heads:
            raise ValueError(f"{fn}(): q's last dim {hd} is not a multiple of heads={heads} (layout 'NHD_FLAT')")
        d = hd // heads
        if k.shape[-1] % d or v.shape[-1] != k.shape[-1]:
            raise ValueError(f"{fn}(): k/v's last dims {k.shape[-1]}/{v.shape[-1]} must be equal multiples of "
                             f"the head dim {d} (layout 'NHD_FLAT')")
        hkv = k.shape[-1] // d
        qh = q.unflatten(2, (heads, d)).transpose(1, 2)
        kh = k.unflatten(2, (hkv, d)).transpose(1, 2)
        vh = v.unflatten(2, (hkv, d)).transpose(1, 2)
    b, hq, sq, d = qh.shape
    if kh.shape != vh.shape:
        raise ValueError(f"{fn}(): k and v must have the same shape, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    bk, hkv, sk, dk = kh.shape
    if bk != b or dk != d:
        raise ValueError(f"{fn}(): q and k must agree in batch and head dim, got q {tuple(q.shape)} and "
                         f"k {tuple(k.shape)} (layout {layout!r})")
    if hkv == 0 or hq % hkv:
        raise ValueError(f"{fn}(): q's head count {hq} must be a multiple of k/v's {hkv} (GQA/MQA)")
    if 0 in (b, hq, sq, d, sk):
        raise ValueError(f"{fn}(): empty tensor: q {tuple(q.shape)}, k {tuple(k.shape)}")
    return qh, kh, vh


def _from_hnd(out, layout):
    if layout == "HND":
        return out
    out = out.transpose(1, 2)
    return out if layout == "NHD" else out.flatten(2)


# ---------------------------------------------------------------------------------------
# torch's LSE-returning ops
# ---------------------------------------------------------------------------------------

def sdpa_with_lse(q, k, v, *, layout: str = "HND", heads: Optional[int] = None, is_causal: bool = False,
                  sm_scale: Optional[float] = None):
    """Exact attention (torch's SDPA kernels) with its LSE; see the module doc.

    Returns (out in the caller's layout and dtype, lse (B, Hq, Sq) float32 contiguous).
    """
    _check(q, k, v, layout, heads, is_causal, sm_scale)
    qh, kh, vh = _to_hnd(q, k, v, layout, heads, "sdpa_with_lse")
    scale = 1.0 / math.sqrt(qh.shape[-1]) if sm_scale is None else float(sm_scale)
    causal = bool(is_causal)
    res = None
    if qh.device.type == "cpu":
        res = _cpu_flash(qh, kh, vh, causal, scale)
    elif qh.device.type == "cuda":
        res = _cuda_ops(qh, kh, vh, causal, scale)
    if res is None:
        out, lse = _chunked(qh, kh, vh, causal, scale)
    else:
        out, lse = res
    return _from_hnd(out, layout), lse


def _refuse(key, exc):
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    _refused[key] = reason
    _stats.record_fallback("lse_op", f"{key[0]} refused ({reason}): chunked exact attention serves it")


def _cpu_flash(qh, kh, vh, causal, scale):
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    key = ("cpu_flash", qh.dtype, qh.shape[-1], qh.shape[1] != kh.shape[1])
    if op is None or key in _refused:
        return None
    try:
        out, lse = op(qh, kh, vh, 0.0, causal, scale=scale)[:2]
    except RuntimeError as exc:
        _refuse(key, exc)
        return None
    return out, lse.contiguous()


def _cuda_ops(qh, kh, vh, causal, scale):
    b, hq, sq, d = qh.shape
    hkv, sk = kh.shape[1], kh.shape[2]
    aten = torch.ops.aten
    if qh.dtype != torch.float32 and not (causal and sq != sk):
        key = ("cuda_flash", qh.dtype, d, hq != hkv)
        op = getattr(aten, "_scaled_dot_product_flash_attention", None)
        if op is not None and key not in _refused:
            try:
                out, lse = op(qh, kh, vh, 0.0, causal, False, scale=scale)[:2]
                return out, lse
            except RuntimeError as exc:
                _refuse(key, exc)
    key = ("cuda_efficient", qh.dtype, d, hq != hkv)
    op = getattr(aten, "_scaled_dot_product_efficient_attention", None)
    if op is None or key in _refused:
        return None
    if hq != hkv:
        if hkv == 1:
            kh, vh = kh.expand(b, hq, sk, d), vh.expand(b, hq, sk, d)  # views, stride 0
        else:
            kh, vh = kh.repeat_interleave(hq // hkv, 1), vh.repeat_interleave(hq // hkv, 1)
    try:
        out, lse = op(qh, kh, vh, None, True, 0.0, causal, scale=scale)[:2]
    except RuntimeError as exc:
        _refuse(key, exc)
        return None
    return out, lse[:, :, :sq].contiguous()


# ---------------------------------------------------------------------------------------
# exact chunked fallback (bounded memory)
# ---------------------------------------------------------------------------------------

def chunked_attention_with_lse(q, k, v, *, layout: str = "HND", heads: Optional[int] = None,
                               is_causal: bool = False, sm_scale: Optional[float] = None,
                               chunk_scores: int = CHUNK_SCORES):
    """Exact fp32 attention with LSE, computed in (query, key) chunks of at most
    `chunk_scores` score elements and merged by LSE; GQA through broadcasting views. The
    fallback of sdpa_with_lse, public so it can be tested on its own."""
    _check(q, k, v, layout, heads, is_causal, sm_scale, fn="chunked_attention_with_lse")
    qh, kh, vh = _to_hnd(q, k, v, layout, heads, "chunked_attention_with_lse")
    scale = 1.0 / math.sqrt(qh.shape[-1]) if sm_scale is None else float(sm_scale)
    out, lse = _chunked(qh, kh, vh, bool(is_causal), scale, chunk_scores)
    return _from_hnd(out, layout), lse


def _chunked(qh, kh, vh, causal, scale, chunk_scores=CHUNK_SCORES):
    from .parallel.merge import merge_attention

    b, hq, sq, d = qh.shape
    hkv, sk = kh.shape[1], kh.shape[2]
    g = hq // hkv
    q5 = qh.unflatten(1, (hkv, g))          # (B, Hkv, g, Sq, D) view
    k5, v5 = kh.unsqueeze(2), vh.unsqueeze(2)  # (B, Hkv, 1, Sk, D) views
    rows_budget = max(1, chunk_scores // max(1, b * hq))
    ck = max(1, min(sk, int(math.sqrt(rows_budget))))
    cq = max(1, min(sq, rows_budget // ck))
    out = torch.empty((b, hq, sq, d), dtype=qh.dtype, device=qh.device)
    lse = torch.empty((b, hq, sq), dtype=torch.float32, device=qh.device)
    for q0 in range(0, sq, cq):
        q1 = min(sq, q0 + cq)
        qc = q5[:, :, :, q0:q1].float() * scale
        acc_o = acc_l = None
        k_end = min(sk, q1) if causal else sk
        for k0 in range(0, k_end, ck):
            k1 = min(k_end, k0 + ck)
            s = qc @ k5[:, :, :, k0:k1].float().transpose(-1, -2)   # (B, Hkv, g, rows, keys)
            if causal:
                rows = torch.arange(q0, q1, device=s.device).unsqueeze(1)
                cols = torch.arange(k0, k1, device=s.device).unsqueeze(0)
                s = s.masked_fill(cols > rows, -math.inf)
            l_c = torch.logsumexp(s, -1)
            p = torch.exp(s - torch.where(torch.isinf(l_c), 0.0, l_c).unsqueeze(-1))
            o_c = p @ v5[:, :, :, k0:k1].float()
            if acc_o is None:
                acc_o, acc_l = o_c, l_c
            else:
                acc_o, acc_l = merge_attention(acc_o.flatten(1, 2), acc_l.flatten(1, 2),
                                               o_c.flatten(1, 2), l_c.flatten(1, 2))
                acc_o, acc_l = acc_o.unflatten(1, (hkv, g)), acc_l.unflatten(1, (hkv, g))
        if acc_o is None:  # causal rows q0.. with no key at all cannot happen (row i sees key 0)
            out[:, :, q0:q1] = 0
            lse[:, :, q0:q1] = -math.inf
            continue
        out[:, :, q0:q1] = acc_o.flatten(1, 2).to(qh.dtype)
        lse[:, :, q0:q1] = acc_l.flatten(1, 2)
    return out, lse
