"""Loads the C extension once. `import sageattn3` must work without torch and without CUDA;
if the extension itself is missing (a broken install), the package still imports and every
call goes to SDPA, with the reason in `info()`."""
from __future__ import annotations

try:
    from . import _C  # type: ignore[attr-defined]

    LOAD_ERROR = None
except ImportError as exc:  # pragma: no cover - only on a broken install
    _C = None
    LOAD_ERROR = f"sageattn3._C could not be imported: {exc}"


def build_info() -> dict:
    if _C is None:
        return {"cuda": False, "why_no_cuda": LOAD_ERROR, "cuda_archs": []}
    return _C.build_info()


def has_kernels() -> bool:
    return _C is not None and bool(_C.build_info().get("cuda"))
