"""Counters of which path served each call, and log-once fallback reasons.

Kept in one small object per process; `sageattn3.stats()` returns a copy. Counting is a
dict increment: cheap enough for the hot path.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter

log = logging.getLogger("sageattn3")

_lock = threading.Lock()
_served: Counter = Counter()    # kernel name -> calls
_fallbacks: Counter = Counter() # reason -> calls
_logged: set = set()


def record_served(kernel: str) -> None:
    _served[kernel] += 1


def record_fallback(reason: str) -> None:
    """Count a call that went to SDPA (or the caller's own attention); log each reason once."""
    _fallbacks[reason] += 1
    if reason not in _logged:
        with _lock:
            if reason not in _logged:
                _logged.add(reason)
                log.info("sageattn3: falling back to SDPA: %s", reason)


def stats() -> dict:
    """{'served': {kernel: n}, 'fallback': {reason: n}} since start or the last reset."""
    return {"served": dict(_served), "fallback": dict(_fallbacks)}


def reset_stats() -> None:
    _served.clear()
    _fallbacks.clear()
