"""Which kernel family serves which call, as data.

`_dispatch` walks these tables on every call (through `plan`, cached per device arch), and
`info()`'s route table, the `kernel=` choices and the ComfyUI node's kernel list are generated
from them, so what info() says is what the dispatcher does. Whether a family can serve a given
call is the family's own answer (`supports()` in C, cuda/<family>/); this file only orders
the families and holds the thresholds. Measurements behind the choices: cuda/<family>/NOTES.md.
"""
from __future__ import annotations

from typing import Dict, Tuple

# Every kernel family the policy knows, in the order the kernel= choices and the node list
# them. A family missing from a build (not compiled, or no compiled arch runs on this GPU)
# makes its calls fall back with the reason "arch".
FAMILIES: Tuple[str, ...] = ("mma",)

# kernel="auto": the families to ask, in order, per device arch (10*major + minor); the first
# whose supports() says yes serves the call. "sdpa" ends the list: SDPA is faster than
# anything after it. Archs not listed use DEFAULT_ORDER.
AUTO_ORDER: Dict[int, Tuple[str, ...]] = {
    # H100/H200: cuDNN SDPA is faster than the mma kernel at every measured shape.
    90: ("sdpa",),
}
DEFAULT_ORDER: Tuple[str, ...] = ("mma",)

# kernel="auto": a call with fewer score elements per (batch, head) than this goes to SDPA
# (launch and quantization overhead dominate there).
MIN_SCORES_PER_HEAD = 1024 * 1024

# pv="auto": the P.V precision per family and arch (archs not listed: PV_FALLBACK).
DEFAULT_PV: Dict[str, Dict[int, str]] = {
    # FP8 P.V is the faster mma path on sm89 and sm120; on sm_90 16-bit P.V measured faster.
    "mma": {89: "fp8", 120: "fp8"},
}
PV_FALLBACK = "fp16"
PV_MODES = ("auto", "fp16", "fp8")

# kernel= choices: "auto", each family (forced: calls it can't serve go to SDPA), "sdpa".
KERNEL_CHOICES: Tuple[str, ...] = ("auto",) + FAMILIES + ("sdpa",)

# Fallback reasons that mean "no kernel can run here at all": logged as a WARNING (once);
# every other reason is logged at INFO (once).
WARNING_REASONS = frozenset({"no_extension", "no_cuda_build", "arch", "device_query"})


def auto_order(sm_arch: int) -> Tuple[str, ...]:
    return AUTO_ORDER.get(sm_arch, DEFAULT_ORDER)


def default_pv(family: str, sm_arch: int) -> str:
    return DEFAULT_PV.get(family, {}).get(sm_arch, PV_FALLBACK)


_plans: dict = {}


def plan(sm_arch: int, kernel: str, pv: str) -> tuple:
    """The entries `_C.Problem.select` walks: (family, pv) pairs, maybe ending in "sdpa"."""
    key = (sm_arch, kernel, pv)
    p = _plans.get(key)
    if p is None:
        order = auto_order(sm_arch) if kernel == "auto" else (kernel,)
        p = tuple(f if f == "sdpa" else (f, default_pv(f, sm_arch) if pv == "auto" else pv) for f in order)
        _plans[key] = p
    return p


def min_scores(kernel: str) -> int:
    return MIN_SCORES_PER_HEAD if kernel == "auto" else 0
