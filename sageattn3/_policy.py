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
FAMILIES: Tuple[str, ...] = ("hopper", "mma", "nvfp4")

# kernel="auto": the families to ask, in order, per device arch (10*major + minor); the first
# whose supports() says yes serves the call. "sdpa" ends the list: SDPA is faster than
# anything after it. Archs not listed use DEFAULT_ORDER.
AUTO_ORDER: Dict[int, Tuple[str, ...]] = {
    # H100/H200: the wgmma kernel where it serves (D <= 128); otherwise cuDNN SDPA, which is
    # faster than the mma kernel at every measured shape there.
    90: ("hopper", "sdpa"),
    # RTX 50xx: NVFP4 attention (block-scaled FP4 mma.sync, cuda/nvfp4/), then the 8-bit mma
    # kernel. nvfp4 was never run on Blackwell hardware by us: it serves only after its
    # first-call self-test passed (_selftest.py); a failure leaves the call to mma. On sm_90 the
    # nvfp4 kernels run with the MMA emulated (kernel="nvfp4", for testing), never through auto.
    120: ("nvfp4", "mma"),
}
DEFAULT_ORDER: Tuple[str, ...] = ("mma",)

# kernel="auto": a call with fewer score elements per (batch, head) than this goes to SDPA
# (launch and quantization overhead dominate there). Per arch where measured otherwise.
MIN_SCORES_PER_HEAD = 1024 * 1024
MIN_SCORES_BY_ARCH: Dict[int, int] = {
    # hopper is ahead of SDPA from 4096^2 scores per head (flux, batch) and well behind at 1024^2
    # (s1k), where its pre-pass and per-CTA start-up don't pay off; nothing was measured in
    # between. The per-card numbers: cuda/hopper/NOTES.md (v8, v10).
    90: 4096 * 4096,
}
# The same for causal calls, which compute half the scores, so the fixed costs weigh double:
# hopper overtakes SDPA between 4096^2 and 8192^2 causal scores per head (the sweep behind it:
# cuda/hopper/NOTES.md, v14).
MIN_SCORES_CAUSAL_BY_ARCH: Dict[int, int] = {
    90: 8192 * 8192,
}

# kernel="auto": a call with fewer keys than this (per arch where measured; 0 = no rule) goes to
# SDPA, whatever its Sq*Sk: cross-attention on a short text context. Every query-tile CTA then runs
# a few key tiles, so its fixed cost (Q load and quantization, pipeline fill, epilogue) outweighs
# the loop. On sm_90 (H200, scripts/sweep_short_keys.py over 10 query shapes from 2304x24 to
# 82992x40 heads): at 1024 keys hopper is 0.72-0.98x SDPA everywhere, at 1536 it is 1.00-1.09x
# wherever MIN_SCORES_BY_ARCH lets it serve (Sq >= 8192 there); the Wan 14B cross-attention
# (512 keys) is 0.80x. Below Sq = 8192 the score rule already binds (it asks for more keys).
MIN_KEYS_BY_ARCH: Dict[int, int] = {
    90: 1536,
}

# pv="auto": the P.V precision per family and arch (archs not listed: PV_FALLBACK).
DEFAULT_PV: Dict[str, Dict[int, str]] = {
    # FP8 P.V is the faster mma path on sm89 and sm120, in its fp16-accumulate form (GeForce runs
    # FP8 mma.sync with an fp16 accumulator at twice the fp32-accumulate rate; each KV tile's
    # fp16 partial goes into an fp32 O: cuda/mma/attn_mma.cu); on sm_90 16-bit P.V measured
    # faster. Not measured on GeForce cards (none lent).
    "mma": {89: "fp8_f16acc", 120: "fp8_f16acc"},
    "hopper": {90: "fp8"},  # its only P.V mode
}
PV_FALLBACK = "fp16"
# pv="auto": the mode tried next, within the same family, where the default's configuration
# doesn't serve a call: fp16-accumulated FP8 has no 99 KB configuration at D > 128 (it spills
# there: cuda/mma/mma_configs.h; supports() says "pv_mode"), the fp32-accumulate form has one.
PV_NEXT: Dict[str, Dict[int, str]] = {
    "mma": {89: "fp8", 120: "fp8"},
}
# pv= choices. "fp8": FP8 e4m3 P.V with fp32 accumulation; "fp8_f16acc": the same P and V codes'
# product accumulated in fp16 per KV tile, then in fp32 (mma only).
PV_MODES = ("auto", "fp16", "fp8", "fp8_f16acc")

# (family, sm_arch) pairs that have run on real hardware and passed `python -m sageattn3 check`
# and `pytest -m gpu`: trusted without a self-test. Every other pair (mma on sm_80/86/89/120,
# PTX-JIT'd mma on sm_100+) runs a small self-test against the C reference at its first call in
# a process and is disabled there if it fails (sageattn3/_selftest.py). Value: the card and
# where its results are.
VERIFIED: Dict[Tuple[str, int], str] = {
    ("mma", 90): "H100 80GB HBM3 and H200 (benchmarks/results/2026-11-25_nvidia-h100-80gb-hbm3*.json, "
                 "benchmarks/results/check_wheel_2026-12-01_nvidia-h200.json)",
    ("hopper", 90): "H200 (benchmarks/results/check_wheel_2026-12-01_nvidia-h200.json, "
                    "benchmarks/results/2026-12-01_nvidia-h200.json)",
}

# (family, sm_arch) pairs where the family runs, but with an emulation of its key instruction
# (for testing on hardware we have): correct, far too slow to serve or benchmark. auto never
# lists them (AUTO_ORDER); kernel=<family> still runs them; the benchmark skips them.
EMULATED: Dict[Tuple[str, int], str] = {
    ("nvfp4", 90): "the block-scaled FP4 MMA of sm_120a is emulated on sm_90 (cuda/nvfp4/nvfp4_mma.cuh)",
}

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
        entries = []
        for f in order:
            if f == "sdpa":
                entries.append(f)
            elif pv != "auto":
                entries.append((f, pv))
            else:
                entries.append((f, default_pv(f, sm_arch)))
                nxt = PV_NEXT.get(f, {}).get(sm_arch)
                if nxt:
                    entries.append((f, nxt))
        p = tuple(entries)
        _plans[key] = p
    return p


def min_scores(kernel: str, sm_arch: int = 0, causal: bool = False) -> int:
    """kernel="auto": the fewest score elements (Sq*Sk, masked ones included) per (batch, head)
    a family serves; 0 for a forced family."""
    if kernel != "auto":
        return 0
    plain = MIN_SCORES_BY_ARCH.get(sm_arch, MIN_SCORES_PER_HEAD)
    return MIN_SCORES_CAUSAL_BY_ARCH.get(sm_arch, plain) if causal else plain


def min_keys(kernel: str, sm_arch: int = 0) -> int:
    """kernel="auto": the fewest keys (Sk) a family serves; 0 for a forced family or an arch
    without a measured rule."""
    if kernel != "auto":
        return 0
    return MIN_KEYS_BY_ARCH.get(sm_arch, 0)
