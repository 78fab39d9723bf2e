"""Kernel-tuning timer (not the project benchmark): SDPA vs the mma kernel on a few shapes,
same process, CUDA events, median. Usage: python scripts/quick_bench.py [shape names]"""
import os
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from gpu_helpers import make_qkv, run_mma, to_hnd  # noqa: E402

SHAPES = {  # b, h, s, d, causal, layout
    "s1k": (1, 24, 1024, 128, False, "HND"),
    "flux": (1, 24, 4608, 128, False, "HND"),
    "16k": (1, 40, 16384, 128, False, "HND"),
    "16kc": (1, 40, 16384, 128, True, "HND"),
    "wan480": (1, 40, 32760, 128, False, "NHD_FLAT"),
    "wan1216": (1, 40, 82992, 128, False, "NHD_FLAT"),
    "hd64": (1, 32, 16384, 64, False, "HND"),
    "hd256": (1, 16, 16384, 256, False, "HND"),
}


def timeit(fn, reps):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


names = sys.argv[1:] or list(SHAPES)
# QB_VARIANTS="pv/tag,..." (default fp16/base,fp8/base): each entry times the kernel with that P.V mode and
# SAGEATTN3_MMA_VARIANT=tag in the environment. The committed kernel ignores the variable; a tuning build
# reads it in sa3_attn_dispatch (cuda/mma/attn_mma.cu) to pick an experimental config, and must not be committed.
variants = [tuple(x.split("/")) for x in os.environ.get("QB_VARIANTS", "fp16/base,fp8/base").split(",")]
print(f"{'shape':8} {'sdpa':>7} " + " ".join(f"{pv}/{qr}".rjust(10) for pv, qr in variants))
for name in names:
    b, h, s, d, causal, layout = SHAPES[name]
    q, k, v = make_qkv(b, h, h, s, s, d, layout=layout)
    qh, kh, vh = (to_hnd(t, layout, h) for t in (q, k, v))
    reps = 5 if s > 50000 else 20
    ops = 4 * b * h * s * s * d / (2 if causal else 1)
    t_sdpa = timeit(lambda: F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal), reps)
    row = f"{name:8} {ops / t_sdpa / 1e9:7.0f} "
    for pv, qr in variants:
        os.environ["SAGEATTN3_MMA_VARIANT"] = qr
        t = timeit(lambda: run_mma(q, k, v, layout=layout, heads=h, causal=causal, pv=pv), reps)
        row += f"{ops / t / 1e9:10.0f}"
    print(row + "   (TOPS)", flush=True)
