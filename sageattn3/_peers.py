"""Other attention backends a user could install instead of sageattn3 ("peers"), found at run
time so `python -m sageattn3 bench` (and benchmarks/bench_comfyui_wan.py) can time them in the
same process, on the same inputs, beside us. Nothing here is imported by the attention path.

Each peer has: `key` (the JSON/row key), `label`, `probe()` -> self with `available`, `reason`,
`version`, `where` filled (never raises, whatever importing the peer does), `supports(shape,
layout, causal) -> (bool, reason)` (decided on the host from the shape only) and `call(torch, q,
k, v, layout, heads, causal)`: takes our benchmark's q/k/v in our layout ("HND" (B,H,S,D), "NHD"
(B,S,H,D) or "NHD_FLAT" (B,S,H*D)) and returns the output in that same layout. Layout changes
happen inside `call` and only where the peer needs them, so a copy it makes is timed and shows
in the benchmark's peak-memory column (no copy is made before the call).

`shape` is anything with b, h, heads_kv, s, seq_k and d attributes (the bench's Shape).
"""
from __future__ import annotations

import importlib
from typing import List, Optional, Tuple


def _version(dist: str, mod) -> str:
    try:
        from importlib import metadata
        return metadata.version(dist)
    except Exception:
        pass
    v = getattr(mod, "__version__", None)
    if isinstance(v, str) and v:
        return v
    return "unknown (no package metadata)"


def _kv_heads(k, layout: str, q_heads: int, q) -> int:
    if layout == "NHD_FLAT":
        return k.shape[-1] // (q.shape[-1] // q_heads)
    return k.shape[1] if layout == "HND" else k.shape[2]


class Peer:
    key = ""
    tag = ""  # short name in the bench table's combined columns
    label = ""
    module = ""
    dist = ""

    def __init__(self):
        self.available = False
        self.reason = "not probed"
        self.version: Optional[str] = None
        self.where: Optional[str] = None
        self.mod = None

    def probe(self, torch=None, arch: Optional[int] = None) -> "Peer":
        """Import the peer and check it can run here (arch = 10*major+minor of the GPU, if
        known). Never raises: whatever goes wrong becomes `reason`."""
        try:
            mod = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            missing = getattr(exc, "name", None)
            if missing is None or missing == self.module or self.module.startswith(str(missing) + "."):
                self.reason = f"not installed (import {self.module} failed: {exc})"
            else:
                self.reason = f"import {self.module} failed: {type(exc).__name__}: {exc}"
            return self
        except BaseException as exc:  # a peer's import may raise anything (SystemExit, CUDA errors)
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.reason = f"import {self.module} failed: {type(exc).__name__}: {exc}"
            return self
        self.mod = mod
        self.version = _version(self.dist, mod)
        self.where = getattr(mod, "__file__", None)
        try:
            ok, why = self._usable(torch, arch)
        except Exception as exc:
            ok, why = False, f"availability check raised {type(exc).__name__}: {exc}"
        self.available, self.reason = bool(ok), why
        return self

    def _usable(self, torch, arch) -> Tuple[bool, str]:
        return True, ""

    def supports(self, shape, layout: str, causal: bool) -> Tuple[bool, str]:
        raise NotImplementedError

    def call(self, torch, q, k, v, layout: str, heads: Optional[int], causal: bool):
        raise NotImplementedError

    def facts(self) -> dict:
        return {"key": self.key, "label": self.label, "module": self.module, "available": self.available,
                "reason": self.reason, "version": self.version, "where": self.where}


class SageAttention2(Peer):
    """SageAttention 2.x (thu-ml): `sageattn(q, k, v, tensor_layout="HND"|"NHD", is_causal=...)`,
    which picks its kernel by the GPU's arch. It reads (B,S,H*D) as a (B,S,H,D) view in place."""
    key = "sageattention"
    tag = "sa2"
    label = "SageAttention2"
    module = "sageattention"
    dist = "sageattention"
    # arch -> the flag its core module sets when that arch's extension imported (sm86 uses Triton)
    _ARCH_FLAG = {80: "SM80_ENABLED", 86: None, 89: "SM89_ENABLED", 90: "SM90_ENABLED", 120: "SM89_ENABLED",
                  121: "SM89_ENABLED"}

    def _usable(self, torch, arch):
        if not callable(getattr(self.mod, "sageattn", None)):
            return False, "sageattention has no sageattn()"
        if arch is None:
            return True, ""
        if arch not in self._ARCH_FLAG:
            return False, f"sageattn() has no kernel for sm_{arch} (it serves sm_80/86/89/90/120/121)"
        flag = self._ARCH_FLAG[arch]
        core = getattr(self.mod, "core", None)
        if flag and core is not None and getattr(core, flag, True) is False:
            return False, f"this sageattention build lacks its sm_{arch} extension ({flag} is False)"
        return True, ""

    def supports(self, shape, layout, causal):
        if shape.d > 128:
            return False, f"takes head dim <= 128 (got {shape.d})"
        if shape.h % shape.heads_kv:
            return False, f"needs query heads a multiple of KV heads (got {shape.h}/{shape.heads_kv})"
        if causal and shape.s != shape.seq_k:
            return False, "not timed causal with Sq != Sk (its mask alignment is not documented)"
        return True, ""

    def call(self, torch, q, k, v, layout, heads, causal):
        if layout == "NHD_FLAT":
            b, s, _ = q.shape
            d = q.shape[-1] // heads
            hk = _kv_heads(k, layout, heads, q)
            o = self.mod.sageattn(q.view(b, s, heads, d), k.view(b, k.shape[1], hk, d),
                                  v.view(b, v.shape[1], hk, d), tensor_layout="NHD", is_causal=causal)
            return o.reshape(b, s, heads * d)
        return self.mod.sageattn(q, k, v, tensor_layout=layout, is_causal=causal)


class ComfyKitchen(Peer):
    """comfy-kitchen (Comfy-Org): `int8_attention(q, k, v)` on (B,H,S,D), strided views accepted
    (last dim contiguous), no causal. NHD/NHD_FLAT go in as transposed views; its output is a
    contiguous (B,H,S,D), so NHD_FLAT costs one output copy (as in ComfyUI's own reshape)."""
    key = "comfy_kitchen"
    tag = "ck"
    label = "comfy-kitchen"
    module = "comfy_kitchen"
    dist = "comfy-kitchen"

    def _usable(self, torch, arch):
        if not callable(getattr(self.mod, "int8_attention", None)):
            return False, "comfy_kitchen has no int8_attention()"
        check = getattr(self.mod, "int8_attention_is_available", None)
        if check is not None and not check():
            return False, "comfy_kitchen.int8_attention_is_available() is False on this GPU/build"
        return True, ""

    def supports(self, shape, layout, causal):
        if causal:
            return False, "has no causal attention (int8_attention)"
        if shape.d > 256:
            return False, f"takes head dim <= 256 (got {shape.d})"
        if shape.h % shape.heads_kv:
            return False, f"needs query heads a multiple of KV heads (got {shape.h}/{shape.heads_kv})"
        return True, ""

    def call(self, torch, q, k, v, layout, heads, causal):
        if causal:
            raise ValueError("comfy_kitchen.int8_attention has no causal mode")
        if layout == "HND":
            return self.mod.int8_attention(q, k, v)
        from ._check import to_hnd
        hk = _kv_heads(k, layout, heads, q) if layout == "NHD_FLAT" else None
        o = self.mod.int8_attention(to_hnd(q, layout, heads), to_hnd(k, layout, hk),
                                    to_hnd(v, layout, hk))
        o = o.transpose(1, 2)
        return o if layout == "NHD" else o.reshape(o.shape[0], o.shape[1], -1)


PEERS = (SageAttention2, ComfyKitchen)


def discover(torch=None, arch: Optional[int] = None) -> List[Peer]:
    """Every known peer, probed (available or with the reason it is not)."""
    return [cls().probe(torch, arch) for cls in PEERS]
