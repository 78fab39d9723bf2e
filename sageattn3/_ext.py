"""Loads the C extension once. `import sageattn3` must work without torch and without CUDA;
if the extension itself is missing (a broken install), the package still imports and every
call goes to SDPA, with the reason in `info()` and in one warning at import.

One case fails instead: importing a source checkout whose _C was never built (e.g. running
`python -m pytest` or `python -m sageattn3` inside the checkout after a non-editable
`pip install .`, which puts the checkout first on sys.path). Falling back there would hide
the installed, working copy behind an advice to install the CUDA toolkit; the error names
both places and what to run."""
from __future__ import annotations

import os
import sys
import warnings


class SourceCheckoutNotBuilt(ImportError):
    """`import sageattn3` found a source checkout with no built sageattn3._C."""


class NoKernelsWarning(UserWarning):
    """This sageattn3 has no CUDA kernels (a CPU-only build, or no loadable _C): every call
    goes to torch SDPA. Said once, at import."""


_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(_PKG_DIR)


def _is_source_checkout() -> bool:
    return all(os.path.exists(os.path.join(_CHECKOUT, name)) for name in ("setup.py", "csrc", "pyproject.toml"))


def _installed_copy():
    """Directory of another sageattn3 package on sys.path (e.g. site-packages), or None."""
    from importlib.machinery import PathFinder

    here = os.path.realpath(_CHECKOUT)
    others = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != here]
    spec = PathFinder.find_spec("sageattn3", others)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _checkout_message() -> str:
    installed = _installed_copy()
    where = (f"the installed copy is at {installed}: leave the checkout (cd elsewhere) to use it, "
             if installed else "no installed copy was found on sys.path; ")
    return (f"you are importing the source checkout at {_PKG_DIR}, whose C extension sageattn3._C is not built; "
            f"{where}or build the checkout in place: `pip install --no-build-isolation --no-deps -e .` "
            f"(or `python setup.py build_ext --inplace`) in {_CHECKOUT}")


try:
    from . import _C  # type: ignore[attr-defined]

    LOAD_ERROR = None
except ImportError as exc:  # only on a broken install or an unbuilt checkout
    if _is_source_checkout() and not any(n.startswith("_C.") for n in os.listdir(_PKG_DIR)):
        raise SourceCheckoutNotBuilt(_checkout_message()) from None
    _C = None
    LOAD_ERROR = (f"sageattn3._C could not be imported from {_PKG_DIR} ({exc}); reinstall sageattn3: "
                  f"pip install --no-build-isolation --no-deps --force-reinstall <source>")


def build_info() -> dict:
    if _C is None:
        return {"cuda": False, "why_no_cuda": LOAD_ERROR, "cuda_archs": []}
    return _C.build_info()


def has_kernels() -> bool:
    return _C is not None and bool(_C.build_info().get("cuda"))


def warn_if_no_kernels(how_to_get_kernels: str) -> None:
    """One warning at import when this build can't run any kernel (called by __init__)."""
    info = build_info()
    if info.get("cuda"):
        return
    warnings.warn(f"sageattn3 has no CUDA kernels: {info.get('why_no_cuda')}. Every attention call goes to "
                  f"torch SDPA. To get kernels: {how_to_get_kernels} Check with: python -m sageattn3 info",
                  NoKernelsWarning, stacklevel=2)
