"""Is sageattn(kernel="auto") ever slower than the SDPA call it routes to? Times bare SDPA,
sageattn auto and sageattn mma at one small shape (default s1k: 1x24x1024x128 bf16), each back to
back after 0.3 s of warm-up, three times, with the host time per timed call. An H100 bench run
once read auto at 0.44x SDPA at s1k; this script showed why (H200 machine, 2026-11-25): there the
host time per call (32-51 us) is as long as the GPU time (32-49 us), so event timings follow host
jitter. The bench now queues its timed calls behind a GPU hold (sageattn3/_bench.py, time_steady).
Usage: python scripts/check_auto_overhead.py [S] [H] [D]"""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sageattn3 import sageattn  # noqa: E402

S, H, D = (int(x) for x in (sys.argv[1:] + ["1024", "24", "128"][len(sys.argv) - 1:])[:3])
q, k, v = (torch.randn(1, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
calls = {
    "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
    "auto": lambda: sageattn(q, k, v, tensor_layout="HND"),
    "mma": lambda: sageattn(q, k, v, tensor_layout="HND", kernel="mma"),
}
for rep in range(3):
    for name, fn in calls.items():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.3:
            fn()
        torch.cuda.synchronize()
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(50)]
        h0 = time.perf_counter()
        for a, b in ev:
            a.record()
            fn()
            b.record()
        host_us = (time.perf_counter() - h0) / len(ev) * 1e6
        torch.cuda.synchronize()
        gpu_us = 1000 * statistics.median(a.elapsed_time(b) for a, b in ev)
        print(f"round {rep} {name:5} event-timed {gpu_us:7.1f} us/call, host {host_us:6.1f} us/call", flush=True)
