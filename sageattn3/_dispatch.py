"""Dispatch policy: decide per call whether a sageattn3 kernel serves it, run it, or say why not.

`try_attention` is the one decision point. It never raises for calls it cannot serve; it
returns `(None, reason)` so each caller picks its own fallback (SDPA in the public API,
ComfyUI's own attention function in the node). Everything here is O(1) Python per call:
no per-element work, no host-device synchronization.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

from . import _stats
from ._ext import _C, LOAD_ERROR

try:  # torch is optional for `import sageattn3`
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - exercised in a subprocess test
    torch = None
    F = None

LAYOUTS = ("HND", "NHD", "NHD_FLAT")
KERNELS = ("auto", "mma", "sdpa")
PV_MODES = ("auto", "fp16", "fp8")

# With kernel="auto", calls smaller than this many score elements per (batch*head) go to
# SDPA: launch and quantization overhead dominate there.
MIN_SCORES_PER_HEAD = 1024 * 1024

# Architectures where kernel="auto" keeps SDPA because it measured faster than every kernel
# we have there. sm_90 (H100/H200): cuDNN SDPA runs ~570-635 TOPS at D=128, the mma kernel
# 0.66-0.92x of it from 4.6k tokens up, 0.49x at 1k (benchmarks/results/); the wgmma Hopper
# kernel that should win there is not built yet.
# kernel="mma" still forces the mma kernel.
SDPA_FASTER_ON = {90: "on sm_90 cuDNN SDPA is faster than the mma kernel (measured on H100); "
                      "the Hopper wgmma kernel is not built yet"}

_workspace_cache: dict = {}
_device_cache: dict = {}


def _no_kernel_reason() -> Optional[str]:
    if _C is None:
        return LOAD_ERROR
    info = _C.build_info()
    if not info.get("cuda"):
        return "built without CUDA kernels: " + str(info.get("why_no_cuda"))
    return None


_STATIC_REASON = _no_kernel_reason()


def _device_facts(index: int) -> dict:
    """_C.device_info, cached; on a CUDA error (e.g. a driver older than our runtime) a
    dict with mma_supported=False and the reason, so calls fall back instead of raising."""
    facts = _device_cache.get(index)
    if facts is None:
        try:
            facts = _C.device_info(index)
        except Exception as exc:  # noqa: BLE001 - any failure here means "can't serve"
            facts = {"name": f"cuda:{index}", "sm_arch": 0, "mma_supported": False, "default_pv": "fp16",
                     "error": f"querying the device failed: {exc}"}
        _device_cache[index] = facts
    return facts


def _shape(q, k, layout: str, heads: Optional[int]):
    """(B, Hq, Hkv, Sq, Sk, D) from the caller's layout, without touching data."""
    if layout == "HND":
        b, hq, sq, d = q.shape
        hkv, sk = k.shape[1], k.shape[2]
    elif layout == "NHD":
        b, sq, hq, d = q.shape
        sk, hkv = k.shape[1], k.shape[2]
    else:
        b, sq, hd = q.shape
        if not heads or hd % heads:
            raise ValueError(f"q: layout 'NHD_FLAT' needs a last dim that is a multiple of heads={heads} "
                             f"(B, S, H*D), got shape {tuple(q.shape)}")
        hq = heads
        d = hd // heads
        sk = k.shape[1]
        if d == 0 or k.shape[2] % d:
            raise ValueError(f"k: layout 'NHD_FLAT' needs a last dim that is a multiple of the head dim {d} "
                             f"(q {tuple(q.shape)} with heads={heads}), got shape {tuple(k.shape)}")
        hkv = k.shape[2] // d
    return b, hq, hkv, sq, sk, d


def _v_head_dim(q, v, layout: str, heads: Optional[int], hkv: int, d: int) -> int:
    if layout != "NHD_FLAT":
        return v.shape[-1]
    return v.shape[-1] // hkv if hkv else d


def try_attention(q, k, v, *, layout: str = "HND", heads: Optional[int] = None,
                  is_causal: bool = False, sm_scale: Optional[float] = None,
                  kernel: str = "auto", pv: str = "auto") -> Tuple[Optional["torch.Tensor"], Optional[str]]:
    """Run a sageattn3 kernel on q/k/v if one can serve the call.

    layout: "HND" (B,H,S,D), "NHD" (B,S,H,D) or "NHD_FLAT" (B,S,H*D) with `heads` given
    (ComfyUI's layout). Returns (out, None) with `out` shaped and laid out like `q`, or
    (None, reason) when the call must go elsewhere. Raises only for invalid arguments
    (TypeError/ValueError), never for "can't serve".
    """
    # (B,S,H*D) is validated first, on every path: a last dim that isn't heads*D is a
    # ValueError, never a silent SDPA call on a misread view. Other layouts are read below.
    dims = _shape(q, k, layout, heads) if layout == "NHD_FLAT" else None
    if kernel == "sdpa":
        return None, "kernel='sdpa' requested"
    if _STATIC_REASON is not None:
        return None, _STATIC_REASON
    if not q.is_cuda:
        return None, "tensors are not on a CUDA device"
    if q.requires_grad or k.requires_grad or v.requires_grad:
        if torch.is_grad_enabled():
            return None, "requires_grad: sageattn3 has no backward kernel"
    if q.dtype is not torch.float16 and q.dtype is not torch.bfloat16:
        return None, f"dtype {q.dtype}: kernels take float16/bfloat16"
    b, hq, hkv, sq, sk, d = dims or _shape(q, k, layout, heads)
    # Cases SDPA serves but the kernels don't, decided before sizing the workspace.
    if 0 in (b, hq, hkv, sq, sk, d):
        return None, "empty tensor"
    if _v_head_dim(q, v, layout, heads, hkv, d) != d:
        return None, "v's head dim differs from q/k's"
    if d < 32 or d > 256 or d % 8:
        return None, f"head dim {d}: kernels take multiples of 8 in 32..256"
    dev = q.get_device()
    facts = _device_facts(dev)
    if not facts["mma_supported"]:
        return None, facts.get("error") or f"no compiled kernel for sm_{facts['sm_arch']} ({facts['name']})"
    if kernel == "auto":
        if facts["sm_arch"] in SDPA_FASTER_ON:
            return None, SDPA_FASTER_ON[facts["sm_arch"]]
        if sq * sk < MIN_SCORES_PER_HEAD:
            return None, "short sequence: SDPA is faster there"
    if pv == "auto":
        pv = facts["default_pv"]
    key = (b, hkv, sk, d, pv)
    nbytes = _workspace_cache.get(key)
    if nbytes is None:
        nbytes = _C.workspace_bytes(b, hkv, sk, d, pv)
        _workspace_cache[key] = nbytes
    out = torch.empty_like(q)
    ws = torch.empty(nbytes, dtype=torch.uint8, device=q.device)
    stream = torch._C._cuda_getCurrentRawStream(dev)
    try:
        _C.attention(q, k, v, out, ws.data_ptr(), nbytes, stream, layout,
                     heads if heads is not None else 0, bool(is_causal),
                     math.nan if sm_scale is None else float(sm_scale), pv)
    except _C.UnsupportedError as exc:
        return None, str(exc)
    _stats.record_served("mma")
    return out, None


def run(q, k, v, *, layout: str, heads: Optional[int], is_causal: bool, sm_scale: Optional[float],
        kernel: str, pv: str, attn_mask=None):
    """A sageattn3 kernel when one serves the call, else SDPA (the reason logged once and
    counted in stats()). The one fallback decision shared by the API and the custom op."""
    if attn_mask is not None:
        if layout == "NHD_FLAT":
            _shape(q, k, layout, heads)  # same validation try_attention does first
        reason = "attn_mask given: kernels take no mask"
    else:
        out, reason = try_attention(q, k, v, layout=layout, heads=heads, is_causal=is_causal,
                                    sm_scale=sm_scale, kernel=kernel, pv=pv)
        if out is not None:
            return out
    _stats.record_fallback(reason)
    return sdpa(q, k, v, layout=layout, heads=heads, attn_mask=attn_mask, is_causal=is_causal,
                sm_scale=sm_scale)


def sdpa(q, k, v, *, layout: str = "HND", heads: Optional[int] = None, attn_mask=None,
         is_causal: bool = False, sm_scale: Optional[float] = None):
    """torch SDPA on the caller's layout, output in the same layout (the fallback path)."""
    if layout == "HND":
        qh, kh, vh = q, k, v
    elif layout == "NHD":
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    else:
        b, sq, hd = q.shape
        d = hd // heads
        hkv = k.shape[-1] // d
        qh = q.view(b, sq, heads, d).transpose(1, 2)
        kh = k.view(k.shape[0], k.shape[1], hkv, d).transpose(1, 2)
        vh = v.view(v.shape[0], v.shape[1], hkv, -1).transpose(1, 2)  # v's head dim may differ
    kwargs = {}
    if qh.shape[1] != kh.shape[1]:
        kwargs["enable_gqa"] = True
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask, is_causal=is_causal,
                                         scale=sm_scale, **kwargs)
    if layout == "HND":
        return out
    out = out.transpose(1, 2)
    if layout == "NHD":
        return out
    return out.reshape(out.shape[0], out.shape[1], -1)


def out_shape(q, k, v, layout: str, heads: Optional[int]):
    """The output's shape: q's, with v's head dim (which SDPA allows to differ)."""
    if layout != "NHD_FLAT":
        return (*q.shape[:-1], v.shape[-1])
    d = q.shape[-1] // heads
    hkv = k.shape[-1] // d
    return (q.shape[0], q.shape[1], heads * (v.shape[-1] // hkv))


def validate_args(layout: str, heads: Optional[int], kernel: str, pv: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"tensor_layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "NHD_FLAT" and (not isinstance(heads, int) or heads <= 0):
        raise ValueError(f"layout 'NHD_FLAT' needs heads > 0, got {heads!r}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if pv not in PV_MODES:
        raise ValueError(f"pv must be one of {PV_MODES}, got {pv!r}")


def default_scale(d: int) -> float:
    return 1.0 / math.sqrt(d)
