"""Counters of which path served each call, and log-once fallback reasons.

A reason is a short fixed key ("mask", "cpu", "short_seq", "misaligned", ...): the counters
stay small whatever the calls look like. The details of a reason (shapes, pointers, limits)
go into its one log line and `details()`, never into the key. Reasons that mean "kernels
can't run here at all" (`_policy.WARNING_REASONS`) are logged as a WARNING, others at INFO.
Counting is a dict increment: cheap enough for the hot path.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter

from ._policy import WARNING_REASONS

log = logging.getLogger("sageattn3")

_lock = threading.Lock()
_served: Counter = Counter()    # family name -> calls
_fallbacks: Counter = Counter() # reason key -> calls
_details: dict = {}             # reason key -> details of its first occurrence


def record_served(family: str) -> None:
    _served[family] += 1


def log_reason(key: str, detail: str = "") -> None:
    """Log one reason once per process (WARNING for 'can't run here at all', else INFO)."""
    if key in _details:
        return
    with _lock:
        if key in _details:
            return
        _details[key] = detail
    level = logging.WARNING if key in WARNING_REASONS else logging.INFO
    log.log(level, "sageattn3: falling back (%s)%s", key, f": {detail}" if detail else "")


def note_reason(key: str, detail: str) -> None:
    """Keep `detail` as the details of `key` without logging: for a caller that has just logged
    its own message (the self-test's one WARNING per device and family)."""
    with _lock:
        _details.setdefault(key, detail)


def record_fallback(key: str, detail: str = "") -> None:
    """Count a call that went to SDPA under reason `key`; log each key once."""
    _fallbacks[key] += 1
    if key not in _details:
        log_reason(key, detail)


def stats() -> dict:
    """{'served': {family: n}, 'fallback': {reason: n}} since start or the last reset."""
    return {"served": dict(_served), "fallback": dict(_fallbacks)}


def details() -> dict:
    """{reason: details of its first occurrence} for every reason logged so far."""
    return dict(_details)


def reset_stats() -> None:
    _served.clear()
    _fallbacks.clear()
