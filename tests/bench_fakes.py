"""Stand-ins that let the benchmark driver run on a CPU: torch.cuda's timer and memory calls
and a kernel that is SDPA. Shared by the CPU tests of the bench (test_cli.py, test_peers.py)."""
from __future__ import annotations

import time
import types

from sageattn3 import _bench, _check


class FakeEvent:
    def __init__(self, enable_timing=True):
        self.t = None

    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, other):
        return (other.t - self.t) * 1e3


def fake_cuda(monkeypatch):
    """A fake sm_90 device with only the mma family; the kernel call is SDPA on CPU tensors."""
    import torch  # here, not at import: test_cli.py imports FakeEvent in runs without torch

    props = types.SimpleNamespace(name="Fake GPU 80GB", major=9, minor=0, multi_processor_count=132,
                                  total_memory=80 * 2**30)
    monkeypatch.setattr(_bench, "DEVICE", "cpu")
    for name, val in {"is_available": lambda: True, "Event": FakeEvent, "synchronize": lambda *a: None,
                      "memory_allocated": lambda *a: 0, "max_memory_allocated": lambda *a: 4096,
                      "reset_peak_memory_stats": lambda *a: None, "empty_cache": lambda *a: None,
                      "current_device": lambda: 0, "get_device_properties": lambda *a: props}.items():
        monkeypatch.setattr(torch.cuda, name, val)

    def fake_kernel(torch_, family, q, k, v, out, layout, heads, causal, scale, pv):
        out.copy_(_check._direct_sdpa(torch, q, k, v, layout, heads, is_causal=causal, scale=scale))
    monkeypatch.setattr(_check, "_kernel_call", fake_kernel)
    monkeypatch.setattr(_bench, "_C", types.SimpleNamespace(
        build_info=lambda: {"cuda": True, "cuda_archs": ["sm_90a"], "why_no_cuda": None},
        device_info=lambda i: {"name": "Fake", "sm_arch": 90, "families": ["mma"]}))
