"""Consumer-limits mode: an H100/H200 decides as an RTX card would.

SAGEATTN3_CONSUMER_LIMITS=sm89 | sm120 | sm86 (or `set_mode()`, or pytest's
`--consumer-limits`) makes every CUDA device report that GeForce class's arch and shared-memory
limits (99 KB per block, 100 KB per SM) in the device facts `_C` caches (csrc/sa3_limits.c). The
families' supports() and launch, and this package's policy (`_policy.plan` on `Problem.sm_arch`,
the P.V default, the self-test's verified list) then take the same host path as on that card:
the mma family picks its small-shared-memory configurations (cuda/mma/mma_configs.h), the
policy picks FP8 P.V, the hopper family declines (sm_90 only), the self-test runs (no
(family, sm_120) pair is verified).

What it can't change: the kernels run the GPU's own binary (sm_90a SASS on an H200), where FP8
mma.sync is emulated (F2FP unpack + HMMA) and the H200's SM has 228 KB of shared memory (the limit
per block is kept by the configuration choice; the mma launches ask for a 100 KB carveout per SM, a
preference the driver may override). README
and cuda/mma/NOTES.md list what differs on real GeForce hardware.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from ._ext import _C

log = logging.getLogger("sageattn3")

ENV = "SAGEATTN3_CONSUMER_LIMITS"
_OFF = ("", "0", "off", "none", "no", "false")


def profiles() -> dict:
    """{name: {sm_arch, smem_optin, smem_per_sm, cards}} (empty without the C extension)."""
    return dict(_C.consumer_limit_profiles()) if _C is not None else {}


def parse(raw: Optional[str]) -> Optional[str]:
    """The profile a setting names (None = off); ValueError naming the choices otherwise."""
    value = (raw or "").strip().lower().replace("sm_", "sm")
    if value in _OFF:
        return None
    choices = profiles()
    if value not in choices:
        raise ValueError(f"{ENV}={raw!r}: expected one of {', '.join(choices) or '(no C extension)'}, or 0/off")
    return value


def mode() -> Optional[str]:
    """The profile in force (None = off)."""
    return _current


def set_mode(profile: Optional[str]) -> Optional[str]:
    """Switch consumer limits to `profile` (None = off) for every device; returns the previous
    one. Drops the cached device facts and the self-test's decisions (they depend on the arch)."""
    global _current
    profile = parse(profile) if profile is not None else None
    prev = _current
    if _C is not None:
        _C.set_consumer_limits(profile)
    _current = profile
    if profile != prev:
        from . import _dispatch, _selftest

        _dispatch._device_cache.clear()
        _selftest.reset()
    return prev


def describe() -> Optional[str]:
    """One line for info()/check, or None when off."""
    if _current is None:
        return None
    p = profiles().get(_current, {})
    return (f"{ENV}={_current}: devices report sm_{p.get('sm_arch')} ({p.get('cards')}) limits, "
            f"{p.get('smem_optin')} B shared memory per block, {p.get('smem_per_sm')} B per SM; kernels run "
            "this GPU's own binary (FP8 mma.sync emulated on sm_90)")


def _from_env() -> Optional[str]:
    raw = os.environ.get(ENV)
    try:
        return parse(raw)
    except ValueError as exc:
        log.warning("sageattn3: %s; consumer limits stay off", exc)
        return None


_current: Optional[str] = None
if _C is not None:
    _initial = _from_env()
    if _initial is not None:
        _C.set_consumer_limits(_initial)
        _current = _initial
