"""Host (CPU-side) cost per call of getting four tensors into sageattn3._C.

Measures `_C.check_attention(q, k, v, out)` -- intake of 4 tensors + validation + building the
result dict -- through each intake route, next to the Python-level costs it competes with:

  check_attention, torch fast path   torch.Tensor attributes read directly (the hot path's route)
  check_attention, DLPack route      objects that only expose __dlpack__/__dlpack_device__
  check_attention, NumPy route       ndarrays through the NumPy C API (no Python calls at all)
  tensor.__dlpack__()                one DLPack export (what a DLPack-only intake pays per tensor)
  python attribute reads             data_ptr(), stride(), shape, dtype from Python, per tensor
  tiny SDPA call                     torch.nn.functional.scaled_dot_product_attention on (1,1,4,32)
  _C.problem                         the hot path's one validation: intake of q/k/v + checks -> Problem
  sageattn() whole call              the public API end to end (CUDA: kernel forced and auto; CPU: the
                                     validated SDPA fallback, i.e. validation + policy + SDPA)

The NumPy route makes no Python-level calls, so (torch route - NumPy route) / 4 is the torch
intake cost per tensor, and likewise for DLPack; both are printed. Runs on CUDA if available
(tensors on the current device, stream = torch's current stream), else on CPU (allow_cpu=True).

Every candidate is timed in interleaved rounds (so a noisy, shared machine slows all of them
alike); the table shows the minimum and median per-call time over rounds, in microseconds.
Results go to benchmarks/results/host_overhead_<date>_<device>.json.

    python benchmarks/bench_host_overhead.py [--rounds 30] [--number 2000]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


class _DLPackOnly:
    """Exposes only the DLPack protocol of a tensor, so _C takes its DLPack route."""

    __slots__ = ("t",)

    def __init__(self, t):
        self.t = t

    def __dlpack__(self, **kwargs):
        return self.t.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except Exception:
        return None


def _time_rounds(cands: dict, rounds: int, number: int) -> dict:
    """Per-call wall and thread-CPU times (us) for each candidate, interleaved round-robin."""
    wall = {name: [] for name in cands}
    cpu = {name: [] for name in cands}
    for fn in cands.values():  # warm-up (first torch lookup, caches, allocator)
        for _ in range(min(number, 200)):
            fn()
    for _ in range(rounds):
        for name, fn in cands.items():
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            for _ in range(number):
                fn()
            w1, c1 = time.perf_counter_ns(), time.thread_time_ns()
            wall[name].append((w1 - w0) / number / 1000.0)
            cpu[name].append((c1 - c0) / number / 1000.0)
    return {
        name: {
            "wall_min_us": min(wall[name]),
            "wall_median_us": statistics.median(wall[name]),
            "cpu_min_us": min(cpu[name]),
            "calls": number * rounds,
        }
        for name in cands
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--number", type=int, default=2000, help="calls per round")
    ap.add_argument("--shape", default="1,8,128,64", help="B,H,S,D of q/k/v/out (HND)")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from sageattn3 import _C

    shape = tuple(int(x) for x in args.shape.split(","))
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    device_name = torch.cuda.get_device_name(dev) if cuda else (platform.processor() or platform.machine() or "cpu")
    allow_cpu = not cuda
    stream = torch.cuda.current_stream(dev).cuda_stream if cuda else None

    q, k, v = (torch.randn(shape, device=dev).to(torch.float16) for _ in range(3))
    o = torch.empty_like(q)
    dq, dk, dv, do = (_DLPackOnly(x) for x in (q, k, v, o))
    nq, nk, nv, no = (np.zeros(shape, np.float16) for _ in range(4))
    tiny = torch.randn(1, 1, 4, 32, device=dev).to(torch.float16)
    check = _C.check_attention

    # Sanity: every route sees the same call (and the CUDA route is really accepted).
    r_torch = check(q, k, v, o, allow_cpu=allow_cpu, stream=stream)
    r_dl = check(dq, dk, dv, do, allow_cpu=allow_cpu, stream=stream)
    assert r_torch == r_dl, (r_torch, r_dl)
    check(nq, nk, nv, no, allow_cpu=True)

    cands = {
        "check_attention torch fast path (4 tensors)": lambda: check(q, k, v, o, allow_cpu=allow_cpu, stream=stream),
        "check_attention DLPack route (4 tensors)": lambda: check(dq, dk, dv, do, allow_cpu=allow_cpu, stream=stream),
        "check_attention NumPy route (4 tensors)": lambda: check(nq, nk, nv, no, allow_cpu=True),
        # DLPack reads stream 0 as ambiguous; the legacy default stream is 1
        "tensor.__dlpack__() (1 tensor)": lambda: q.__dlpack__(stream=stream or 1) if cuda else q.__dlpack__(),
        "python data_ptr/stride/shape/dtype (1 tensor)": lambda: (q.data_ptr(), q.stride(), q.shape, q.dtype),
        "tiny SDPA call (1,1,4,32)": lambda: F.scaled_dot_product_attention(tiny, tiny, tiny),
        "_C.problem validation (3 tensors)": lambda: _C.problem(q, k, v, "HND", None, False, None, None),
    }
    if not cuda:
        import sageattn3
        cands["sageattn() -> SDPA whole call (1,1,4,32) cpu"] = lambda: sageattn3.sageattn(tiny, tiny, tiny)
    if cuda:
        # The whole public hot path on a tiny shape (kernel forced, so it launches our 3
        # kernels): what a diffusion step pays per attention call on top of GPU time.
        import sageattn3
        qa, ka, va = (torch.randn(1, 1, 128, 64, device=dev, dtype=torch.bfloat16) for _ in range(3))
        cands["sageattn(kernel='mma') whole call (1,1,128,64)"] = lambda: sageattn3.sageattn(qa, ka, va, kernel="mma")
        cands["sageattn(kernel='auto') -> SDPA whole call (1,1,128,64)"] = lambda: sageattn3.sageattn(qa, ka, va)
        torch.cuda.synchronize()
    res = _time_rounds(cands, args.rounds, args.number)
    if cuda:
        torch.cuda.synchronize()

    t_torch = res["check_attention torch fast path (4 tensors)"]
    t_dl = res["check_attention DLPack route (4 tensors)"]
    t_np = res["check_attention NumPy route (4 tensors)"]
    derived = {}
    for key in ("wall_min_us", "cpu_min_us"):
        derived[f"torch_intake_per_tensor_{key}"] = (t_torch[key] - t_np[key]) / 4
        derived[f"dlpack_intake_per_tensor_{key}"] = (t_dl[key] - t_np[key]) / 4

    print(f"sageattn3 host overhead on {dev} ({device_name}), torch {torch.__version__}, "
          f"python {platform.python_version()}, {args.rounds} rounds x {args.number} calls")
    print(f"{'what':48s} {'min us':>9s} {'median us':>10s} {'cpu min us':>11s}")
    for name, r in res.items():
        print(f"{name:48s} {r['wall_min_us']:9.3f} {r['wall_median_us']:10.3f} {r['cpu_min_us']:11.3f}")
    print(f"{'=> torch intake per tensor (torch - NumPy) / 4':48s} {derived['torch_intake_per_tensor_wall_min_us']:9.3f}"
          f" {'':10s} {derived['torch_intake_per_tensor_cpu_min_us']:11.3f}")
    print(f"{'=> DLPack intake per tensor (DLPack - NumPy) / 4':48s} "
          f"{derived['dlpack_intake_per_tensor_wall_min_us']:9.3f} {'':10s} "
          f"{derived['dlpack_intake_per_tensor_cpu_min_us']:11.3f}")

    out = {
        "benchmark": "host_overhead",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "device": str(dev),
        "device_name": device_name,
        "shape": list(shape),
        "rounds": args.rounds,
        "number": args.number,
        "results_us": res,
        "derived_us": derived,
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "git_commit": _git_commit(),
            "build": _C.build_info(),
        },
    }
    if not args.no_save:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tag = re.sub(r"[^A-Za-z0-9]+", "-", "cuda-" + device_name if cuda else "cpu").strip("-").lower()
        path = out_dir / f"host_overhead_{_dt.date.today().isoformat()}_{tag}.json"
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
