"""sageattn3: quantized attention for diffusion models, with an SDPA fallback everywhere.

    from sageattn3 import sageattn3_blackwell, sageattn
    sageattn3.info()   # what runs where on this machine, and why
    sageattn3.stats()  # which kernel served how many calls, fallbacks by reason
"""
from __future__ import annotations

__version__ = "0.1.0"

from ._stats import stats, reset_stats
from .api import sageattn, sageattn3_blackwell
from ._info import info, HOW_TO_GET_KERNELS as _HOW_TO_GET_KERNELS
from . import _ext

_ext.warn_if_no_kernels(_HOW_TO_GET_KERNELS)  # a CPU-only build says so once, at import

__all__ = ["sageattn", "sageattn3_blackwell", "info", "stats", "reset_stats", "__version__"]
