"""Profiling driver (not a test or benchmark): a few launches of the mma kernel on one shape,
for `ncu` / `compute-sanitizer` to attach to. Usage: python scripts/profile_mma.py [shape] [pv] [reps]"""
import os
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from gpu_helpers import make_qkv, run_mma  # noqa: E402

SHAPES = {"16k": (1, 40, 16384, 128, "HND"), "wan480": (1, 40, 32760, 128, "NHD_FLAT"),
          "hd64": (1, 32, 16384, 64, "HND")}
name = sys.argv[1] if len(sys.argv) > 1 else "16k"
pv = sys.argv[2] if len(sys.argv) > 2 else "fp16"
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 2
b, h, s, d, layout = SHAPES[name]
q, k, v = make_qkv(b, h, h, s, s, d, layout=layout)
for _ in range(reps):
    run_mma(q, k, v, layout=layout, heads=h, pv=pv)
torch.cuda.synchronize()
print("profiled", name, pv, reps)
