"""xDiT (PyPI `xfuser`) attention backend: sageattn3 under xDiT's USP (Ulysses + ring).

xDiT keeps its backends in `xfuser.core.distributed.attention_backend.
ATTENTION_FUNCTION_REGISTRY`, keyed by `AttentionBackendType`, each a function

    fn(query, key, value, dropout_p, is_causal, attention_kwargs=None) -> (out, lse)

on (B, H, S, D) tensors, out (B, H, S, D), lse (B, H, S) float32 natural log. `USP()` calls
it directly for Ulysses and hands it to torch's `_templated_ring_attention` for ring
degrees > 1, which merges the steps by the LSE (so the LSE must be right, and it is
per call: every ring step is a separate call on one K/V chunk).

Enable it (in every rank, after `import xfuser`, before the pipeline runs):

    from sageattn3.parallel import register_xdit_backend
    register_xdit_backend()            # serves xDiT's "SDPA_FLASH" backend slot

then run xDiT with `--attention_backend SDPA_FLASH` (any ulysses/ring degrees). The enum
has no member of ours and xDiT checks backend names against it, so we take over an existing
slot; SDPA_FLASH is the one with no install requirement and no ring restriction in xDiT's
compatibility check. `register_xdit_backend("CUDNN")` takes another slot (CUDNN is xDiT's
default on CUDA without flash-attn). The function is also registered under the key
"sageattn3" for models calling `USP(..., backend="sageattn3")` explicitly.
"""
from __future__ import annotations

from .. import _lse

__all__ = ["xdit_attn_backend", "register_xdit_backend"]

# attention_kwargs entries that change a dense backend's result in xDiT (SDPA reads attn_mask;
# the flash backends pack K/V by indices_k / cu_seqlens_k / max_seqlen_k): refused when set.
# Everything else in that dict is metadata the sparse backends read (thw, tile_size, sp_size,
# text_mask, encoder_sequence_length, head-balance state, ...) and that xDiT's dense backends
# (SDPA_FLASH, CUDNN, FLASH, ...) ignore; so do we. Note "scale" there is diffusers' LoRA scale,
# not the softmax scale: like xDiT's own backends we always use 1/sqrt(D).
_MASK_KEYS = ("attn_mask", "indices_k", "cu_seqlens_k", "max_seqlen_k")


def xdit_attn_backend(query, key, value, dropout_p=0.0, is_causal=False, attention_kwargs=None):
    """xDiT backend contract -> (out (B, H, S, D) in query's dtype, lse (B, H, S) float32).

    Softmax scale 1/sqrt(D), as xDiT's backends. A mask or varlen packing in
    attention_kwargs ("attn_mask", "indices_k", ...) raises a ValueError naming the key;
    other entries (sparse backends' metadata) are ignored, as xDiT's dense backends do.
    """
    if dropout_p is not None and dropout_p != 0:
        raise ValueError(f"xdit_attn_backend(): dropout_p={dropout_p!r} is not supported (forward-only)")
    if attention_kwargs is not None:
        if not isinstance(attention_kwargs, dict):
            raise TypeError(f"xdit_attn_backend(): attention_kwargs must be a dict or None, "
                            f"got {type(attention_kwargs).__name__}")
        refused = [k for k in _MASK_KEYS if attention_kwargs.get(k) is not None]
        if refused:
            raise ValueError(f"xdit_attn_backend(): attention_kwargs {refused} (attention masks / varlen "
                             "packing) are not supported by sageattn3; use an xDiT backend that takes them")
    return _lse.attention_with_lse(query, key, value, layout="HND", is_causal=bool(is_causal))


def register_xdit_backend(slot: str = "SDPA_FLASH", *, registry=None, backend_type=None):
    """Point xDiT's backend `slot` (an `AttentionBackendType` member name) at
    xdit_attn_backend; also registers it under the key "sageattn3". Returns the function
    the slot held before (to restore it: registry[AttentionBackendType[slot]] = previous).

    registry / backend_type: xDiT's ATTENTION_FUNCTION_REGISTRY and AttentionBackendType,
    imported from xfuser when not given (tests pass stand-ins).
    """
    if registry is None or backend_type is None:
        try:
            from xfuser.core.distributed import attention_backend as xab
        except ImportError as exc:
            raise ImportError(f"register_xdit_backend() needs xDiT (pip install xfuser): {exc}") from exc
        registry = xab.ATTENTION_FUNCTION_REGISTRY if registry is None else registry
        backend_type = xab.AttentionBackendType if backend_type is None else backend_type
    try:
        member = backend_type[str(slot).upper()]
    except KeyError:
        names = [m.name for m in backend_type]
        raise ValueError(f"register_xdit_backend(): slot must name an xDiT AttentionBackendType, "
                         f"one of {names}, got {slot!r}") from None
    previous = registry.get(member)
    registry[member] = xdit_attn_backend
    registry["sageattn3"] = xdit_attn_backend
    return previous
