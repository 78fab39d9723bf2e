"""Shared pytest setup: the `gpu` marker.

Tests marked `@pytest.mark.gpu` are skipped (not failed) when torch is missing or
`torch.cuda.is_available()` is False, so `pytest tests` runs anywhere and `pytest -m gpu`
on the GPU machine runs only those.
"""
import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped when torch.cuda.is_available() is False)")


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
