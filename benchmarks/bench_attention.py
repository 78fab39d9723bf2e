#!/usr/bin/env python3
"""Benchmark sageattn3 against torch SDPA on the shapes of ANCHORS.md (and --shape ones).

Thin wrapper: the logic lives in sageattn3/_bench.py, also reachable as
`python -m sageattn3 bench`. See `--help` for the method and the options.
"""
import sys
from pathlib import Path

try:
    from sageattn3 import _bench
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from sageattn3 import _bench

if __name__ == "__main__":
    sys.exit(_bench.main(prog="benchmarks/bench_attention.py"))
