"""Shared pytest setup: the `gpu` marker.

Tests marked `@pytest.mark.gpu` are skipped (not failed) when torch is missing or
`torch.cuda.is_available()` is False, so `pytest tests` runs anywhere and `pytest -m gpu`
on the GPU machine runs only those.

Also: `python -m pytest` inside a checkout puts the checkout first on sys.path. After a
non-editable `pip install .` its sageattn3/ has no built _C; then the tests run against the
installed copy (as plain `pytest` would) and the header says so. With no installed copy
either, the run stops at once with sageattn3's own message saying how to build.
"""
import os
import sys
from importlib.machinery import PathFinder
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parent.parent


def _use_installed_copy_over_unbuilt_checkout():
    """Drop the checkout from sys.path when its sageattn3 has no _C and another copy is
    installed; returns that copy's folder, or None when nothing was changed."""
    pkg = _REPO / "sageattn3"
    if not pkg.is_dir() or any(p.name.startswith("_C.") for p in pkg.iterdir()):
        return None
    here = [p for p in sys.path if Path(p or os.getcwd()).resolve() == _REPO]
    if not here:
        return None
    spec = PathFinder.find_spec("sageattn3", [p for p in sys.path if p not in here])
    if spec is None or not spec.submodule_search_locations:
        return None
    for p in here:
        sys.path.remove(p)
    return list(spec.submodule_search_locations)[0]


_INSTALLED_COPY = _use_installed_copy_over_unbuilt_checkout()


def pytest_addoption(parser):
    parser.addoption("--consumer-limits", default=None, metavar="PROFILE",
                     help="run with SAGEATTN3_CONSUMER_LIMITS=PROFILE (sm86, sm89, sm120): the GPU reports that "
                          "GeForce class's arch and 99 KB shared memory, so an H100/H200 takes an RTX card's host "
                          "path (sageattn3/_limits.py)")


def pytest_report_header(config):
    lines = []
    if _INSTALLED_COPY:
        lines.append(f"sageattn3: testing the installed copy at {_INSTALLED_COPY} (the checkout's "
                     f"sageattn3/_C is not built; `pip install -e .` tests the checkout instead)")
    if os.environ.get("SAGEATTN3_CONSUMER_LIMITS", "").strip().lower() not in ("", "0", "off", "none", "no", "false"):
        try:
            from sageattn3 import _limits

            lines.append("sageattn3: " + (_limits.describe() or "consumer limits requested but off (bad value?)"))
        except ImportError:
            pass
    return lines or None


@pytest.fixture
def consumer_limits():
    """The consumer-limits profile in force for this run (None = off)."""
    from sageattn3 import _limits

    return _limits.mode()


def pytest_configure(config):
    profile = config.getoption("--consumer-limits", default=None)
    if profile:
        # before sageattn3 is imported (it reads the variable once, at import) and for subprocesses
        os.environ["SAGEATTN3_CONSUMER_LIMITS"] = profile
        if "sageattn3._limits" in sys.modules:
            sys.modules["sageattn3._limits"].set_mode(profile)
    if _INSTALLED_COPY is None and not any((_REPO / "sageattn3").glob("_C.*")):
        try:
            import sageattn3  # noqa: F401
        except ImportError as exc:
            if type(exc).__name__ == "SourceCheckoutNotBuilt":
                raise pytest.UsageError(str(exc)) from None
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped when torch.cuda.is_available() is False)")
    if os.environ.get("SAGEATTN3_CONSUMER_LIMITS"):
        try:  # a value sageattn3 can't use stops the run instead of silently testing without it
            from sageattn3 import _limits

            if _limits.parse(os.environ["SAGEATTN3_CONSUMER_LIMITS"]) != _limits.mode():
                raise pytest.UsageError(f"SAGEATTN3_CONSUMER_LIMITS={os.environ['SAGEATTN3_CONSUMER_LIMITS']!r} "
                                        f"did not take effect (mode {_limits.mode()!r})")
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        except ImportError:
            pass


def _cuda_available() -> bool:
    try:
        import torch
    except Exception:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch is missing or torch.cuda.is_available() is False")
    for item in gpu_items:
        item.add_marker(skip)

