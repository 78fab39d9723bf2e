#!/usr/bin/env python3
"""Ring-step attention on one GPU: K/V split into uneven chunks, merged by the LSE.

What a ring of N ranks asks of each rank's kernel: the same queries against N K/V chunks
in turn, each call returning (out, lse), the partial results merged. Here one GPU plays
all steps at the Wan 2.x 832x1216 shape (1, 82992, 40, 128) NHD (--shape to change):

  full        one sageattn3._lse.attention_with_lse call over all keys (the baseline);
  split N     for N in --splits (2, 4, 8): K/V cut into N chunks of uneven length (sizes
              vary by about +-25% and are odd, as a ring's shards would not be equal after
              padding), each chunk one attention_with_lse call, merged in order with
              merge_attention (fp32).

Per split it records the GPU time of every step call (median over --runs CUDA-event-timed
repetitions), of the merges, and of the whole chunked pass (steps + merges back to back),
against the full call measured in the same run, plus the merged result's error against the
full call: rel-L1 and max |err| / max |ref| of the output, max |err| of the LSE. The route
each call took (kernel or fallback reason) is recorded from sageattn3.stats().

Chunks are sliced (contiguous, as a received ring buffer is) before timing; nothing is
allocated or synchronized inside a timed call beyond what the calls themselves do.
Timing reuses the steady-state method of benchmarks/bench_attention.py (rest, warm-up,
events behind a spin kernel). JSON to benchmarks/results/ring_chunks_<date>_<card>.json.

    python benchmarks/bench_ring_chunks.py [--splits 2 4 8] [--runs 11] [--dtype bf16]

Without a CUDA device it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

try:
    import sageattn3  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sageattn3  # noqa: E402
from sageattn3 import _bench, _lse  # noqa: E402
from sageattn3.parallel import merge_attention  # noqa: E402


def uneven_cuts(n_keys: int, parts: int):
    """Boundaries of `parts` chunks with lengths ~ n/parts * (0.75 .. 1.25), odd where possible."""
    if parts == 1:
        return [0, n_keys]
    weights = [0.75 + 0.5 * ((i * 7919) % parts) / max(1, parts - 1) for i in range(parts)]
    total = sum(weights)
    cuts = [0]
    for w in weights[:-1]:
        size = max(1, round(n_keys * w / total)) | 1
        cuts.append(min(n_keys - (parts - len(cuts)), cuts[-1] + size))
    cuts.append(n_keys)
    return cuts


def measure(torch, q, k, v, splits, timed, log=lambda m: None) -> dict:
    """The full call and each split's steps, merges and whole pass, timed by `timed(fn) ->
    {"ms": ...}`, with the merged result's error against the full call (device-agnostic:
    the tests run it on CPU with a stand-in timer)."""
    s = k.shape[1]
    sync = torch.cuda.synchronize if q.is_cuda else (lambda: None)

    def route(fn):
        sageattn3.reset_stats()
        fn()
        sync()
        return sageattn3.stats()

    full_call = lambda: _lse.attention_with_lse(q, k, v, layout="NHD")  # noqa: E731
    ref_o, ref_l = full_call()
    ref_o = ref_o.float()
    result = {"full": dict(timed(full_call), route=route(full_call)), "splits": []}
    log(f"full call: {result['full']['ms']:.2f} ms  (route {result['full']['route']})")
    for parts in splits:
        cuts = uneven_cuts(s, parts)
        chunks = [(k[:, a:c].contiguous(), v[:, a:c].contiguous()) for a, c in zip(cuts[:-1], cuts[1:])]
        steps = [(lambda kc=kc, vc=vc: _lse.attention_with_lse(q, kc, vc, layout="NHD")) for kc, vc in chunks]
        partial = [fn() for fn in steps]

        def merges(partial=partial):
            acc = partial[0]
            for o, l in partial[1:]:
                acc = merge_attention(acc[0], acc[1], o, l, layout="NHD")
            return acc

        def chunked(steps=steps):
            acc = steps[0]()
            for fn in steps[1:]:
                o, l = fn()
                acc = merge_attention(acc[0], acc[1], o, l, layout="NHD")
            return acc

        out, lse = chunked()
        err = (out - ref_o).abs()
        entry = {
            "parts": parts, "chunk_lengths": [c - a for a, c in zip(cuts[:-1], cuts[1:])],
            "steps": [timed(fn) for fn in steps],
            "merges": timed(merges) if parts > 1 else None,
            "total": timed(chunked),
            "route": route(steps[0]),
            "out_rel_l1_vs_full": float(err.sum() / ref_o.abs().sum()),
            "out_max_err_vs_full": float(err.max() / ref_o.abs().max()),
            "lse_max_err_vs_full": float((lse - ref_l).abs().max()),
        }
        step_ms = [st["ms"] for st in entry["steps"]]
        entry["step_ms_sum"] = sum(step_ms)
        entry["total_vs_full"] = entry["total"]["ms"] / result["full"]["ms"]
        result["splits"].append(entry)
        merge_ms = entry["merges"]["ms"] if entry["merges"] else 0.0
        log(f"split {parts}: steps {', '.join(f'{t:.2f}' for t in step_ms)} ms (sum {sum(step_ms):.2f}), "
            f"merges {merge_ms:.2f} ms, total {entry['total']['ms']:.2f} ms = "
            f"{entry['total_vs_full']:.2f}x full; rel-L1 vs full {entry['out_rel_l1_vs_full']:.2e}, "
            f"lse max err {entry['lse_max_err_vs_full']:.2e}")
        del chunks, partial, out, lse, err
        if q.is_cuda:
            torch.cuda.empty_cache()
    return result


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="1,82992,40,128", help="B,S,H,D of q = k = v, layout NHD")
    ap.add_argument("--splits", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    ap.add_argument("--runs", type=int, default=11, help="timed repetitions per measurement (median)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rest", type=float, default=1.0, help="seconds of GPU rest before each measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="output directory (default benchmarks/results)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_ring_chunks: needs torch")
        return 0
    if not torch.cuda.is_available():
        print("bench_ring_chunks: no CUDA device; would run shape", args.shape, "splits", args.splits)
        return 0
    b, s, h, d = (int(x) for x in args.shape.split(","))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    q, k, v = (torch.randn((b, s, h, d), generator=gen, device=dev, dtype=dtype) for _ in range(3))
    # per-channel K offset, as real DiT keys have (what K smoothing and the LSE correction are for)
    k += 3.0 * torch.randn((b, 1, h, d), generator=gen, device=dev, dtype=dtype)

    def timed(fn):
        times, host_us = _bench.time_steady(torch, fn, args.warmup, args.runs, rest_s=args.rest)
        return {"ms": statistics.median(times), "times_ms": times, "host_us": host_us}

    result = {"env": _bench.environment(torch), "shape_nhd": [b, s, h, d], "dtype": args.dtype}
    result.update(measure(torch, q, k, v, args.splits, timed, log=lambda m: print(m, flush=True)))
    out_dir = args.out or _bench.default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = result["env"]
    path = _bench._unique(out_dir / f"ring_chunks_{env['date']}_{_bench.slug(env['card'])}.json")
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
