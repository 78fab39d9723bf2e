"""Where the hopper family overtakes SDPA as the key count grows (cross-attention on a short
context): the measurement behind `_policy.MIN_KEYS_BY_ARCH`.

    python scripts/sweep_short_keys.py [--out FILE.json] [--queries 8192x24,...] [--keys 2048,...]
                                                             # on the GPU; ~1 min on an H200

For each query length (the Wan 2.2 latents, 16k, flux) and key length (CLIP's 257, T5's 512, up to
4096) it times `sageattn(kernel="hopper")`, `kernel="mma"` and SDPA the way the bench does
(`_bench.time_steady`: warm-up, then the median of CUDA-event-timed calls behind a GPU hold), bf16
(B,H,S,D) tensors, and prints each one's ratio to SDPA. Without a CUDA device it lists the cases
and exits 0.
"""
from __future__ import annotations

import json
import statistics
import sys

QUERIES = ((82992, 40), (32760, 40), (16384, 40), (4608, 24))  # (Sq, heads), D = 128
KEYS = (77, 257, 512, 1024, 1536, 2048, 3072, 4096)


def option(argv, name, default):
    return argv[argv.index(name) + 1] if name in argv else default


def parse_queries(text: str):
    """'8192x24,4608x40' -> ((8192, 24), (4608, 40)): query length x heads."""
    return tuple(tuple(int(n) for n in item.split("x")) for item in text.split(","))


def main(argv) -> int:
    out = option(argv, "--out", None)
    queries = parse_queries(option(argv, "--queries", ",".join(f"{s}x{h}" for s, h in QUERIES)))
    keys = tuple(int(n) for n in option(argv, "--keys", ",".join(map(str, KEYS))).split(","))
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: would time hopper, mma and SDPA at Sq x heads in "
              f"{queries} against Sk in {keys}")
        return 0
    import torch.nn.functional as F

    import sageattn3
    from sageattn3._bench import time_steady

    def median_us(fn):
        times_ms, _ = time_steady(torch, fn, warmup=3, runs=15, warmup_s=0.2)
        return statistics.median(times_ms) * 1e3

    rows = []
    for sq, h in queries:
        for sk in keys:
            q = torch.randn(1, h, sq, 128, device="cuda", dtype=torch.bfloat16)
            k, v = (torch.randn(1, h, sk, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            r = {"sq": sq, "heads": h, "sk": sk,
                 "hopper_us": median_us(lambda: sageattn3.sageattn(q, k, v, kernel="hopper")),
                 "mma_us": median_us(lambda: sageattn3.sageattn(q, k, v, kernel="mma")),
                 "sdpa_us": median_us(lambda: F.scaled_dot_product_attention(q, k, v))}
            rows.append(r)
            print(f"Sq {sq:6d} H {h} Sk {sk:5d}: hopper {r['hopper_us']:9.1f} us (x{r['sdpa_us'] / r['hopper_us']:.2f}"
                  f" SDPA), mma {r['mma_us']:9.1f} (x{r['sdpa_us'] / r['mma_us']:.2f}), SDPA {r['sdpa_us']:9.1f}",
                  flush=True)
            del q, k, v
    if out:
        with open(out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
