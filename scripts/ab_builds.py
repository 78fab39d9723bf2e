"""A/B of builds of the extension, the way cuda/hopper/NOTES.md (v9-v11) compares kernel versions.

    python scripts/ab_builds.py build OUT.so [--rev REV]    # REV's extension (default: this working
                                                            # tree) built for SAGEATTN3_CUDA_ARCHS (90a)
    python scripts/ab_builds.py run A.so B.so ... [--shapes flux,16k] [--rounds 2]   # on the GPU

`run` times each build in a process of its own, the builds alternating and the rounds repeated, the
order reversed every other round (A B, B A, A B, ...), so that no build always runs first or always
after the same one. Each process asserts that the hopper family served every timed call (a build
whose kernel declines would otherwise be timed as the SDPA fallback) and that it imported the staged
package. In each process
every shape is timed as `sageattn(kernel="hopper")`, then SDPA, back to back, by the bench's
`time_steady` (3 warm-up calls, then the median of 20 CUDA-event-timed calls queued behind a GPU
hold, so each times the GPU's work and not the host's launch gap; bf16, (B,H,S,D) tensors). The summary is the fastest round per
build and shape, and each build's ratio to the first one. Ratios to SDPA across processes move a few
percent with the clock (NOTES.md, v8); the hopper-vs-hopper ratios are what this is for.

Each build runs with this checkout's Python package (`sageattn3/`) around the given extension, so it
compares kernels, not Python layers. A build is ~18 MB; to carry it to a GPU machine, `strip` it and
`xz` it (~2 MB), and `xz -dc` it there. Build with the Python of the machine that will run it (the
extension's file name carries its ABI).
"""
from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from checkout_build import REPO, build_inplace, copy_worktree
# name: (batch, heads, tokens, head_dim, causal[, key tokens]): the shapes of `python -m sageattn3
# bench`, all as (B,H,S,D) tensors here (the bench gives the Wan shapes as (B,S,H*D)); hd64-causal,
# which the bench lacks but the D = 64 causal kernel instances need for their A/Bs; and wan-cross,
# the Wan 2.2 14B step's cross-attention (82,992 queries on the 512 text tokens).
SHAPES = {"flux": (1, 24, 4608, 128, False), "batch": (4, 40, 4096, 128, False), "16k": (1, 40, 16384, 128, False),
          "16k-causal": (1, 40, 16384, 128, True), "hd64": (1, 32, 16384, 64, False), "s1k": (1, 24, 1024, 128, False),
          "wan-832x480": (1, 40, 32760, 128, False), "wan-832x1216": (1, 40, 82992, 128, False),
          "hd64-causal": (1, 32, 16384, 64, True), "wan-cross": (1, 40, 82992, 128, False, 512)}


def build(out: Path, rev: str | None) -> None:
    out = out.resolve()
    with tempfile.TemporaryDirectory(prefix="sa3_ab_") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        if rev is None:
            copy_worktree(src)
        else:
            archive = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        built = build_inplace(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, out)
    print(f"built {out} ({rev or 'working tree'}, archs {os.environ.get('SAGEATTN3_CUDA_ARCHS', '90a')})")


def stage(ext: Path, into: Path) -> Path:
    """A copy of this checkout's package in `into`, with `ext` as its extension; returns `into`."""
    if not ext.is_file():
        raise SystemExit(f"ab_builds: no such extension file: {ext}")
    pkg = into / "sageattn3"
    shutil.copytree(REPO / "sageattn3", pkg,
                    ignore=shutil.ignore_patterns("_C*.so", "_C*.pyd", "__pycache__"))
    shutil.copy2(ext, pkg / ("_C" + importlib.machinery.EXTENSION_SUFFIXES[0]))
    return into


def summarize(records) -> str:
    """records: (build, shape, hopper_us, sdpa_us) tuples, several rounds each -> a table of the
    fastest round per build and shape, with each build's time relative to the first build's."""
    if not records:
        return "(no results)"
    builds, shapes, best = [], [], {}
    for b, s, h, sd in records:
        if b not in builds:
            builds.append(b)
        if s not in shapes:
            shapes.append(s)
        old = best.get((b, s))
        if old is None or h < old[0]:
            best[(b, s)] = (h, sd)
    head = ["shape"] + [f"{b} us (x{builds[0]}), x SDPA" for b in builds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in shapes:
        cells = [s]
        ref = best.get((builds[0], s))
        for b in builds:
            if (b, s) not in best:
                cells.append("-")
                continue
            h, sd = best[(b, s)]
            rel = f"{h / ref[0]:.3f}" if ref else "-"
            cells.append(f"{h:.1f} ({rel}), {sd / h:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _child(name: str, shapes) -> None:
    import statistics

    import torch
    import torch.nn.functional as F

    import sageattn3

    staged = Path(os.environ["SA3_AB_STAGED"]).resolve()
    if not Path(sageattn3.__file__).resolve().is_relative_to(staged):
        raise SystemExit(f"ab_builds: imported {sageattn3.__file__}, not the staged build in {staged}")
    torch.manual_seed(0)

    from sageattn3._bench import time_steady

    def median_us(f):
        times_ms, _ = time_steady(torch, f, warmup=3, runs=20, warmup_s=0.0)
        return statistics.median(times_ms) * 1e3

    for s in shapes:
        b, h, n, d, causal = SHAPES[s][:5]
        nk = SHAPES[s][5] if len(SHAPES[s]) > 5 else n
        q = torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(b, h, nk, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        sageattn3.reset_stats()
        th = median_us(lambda: sageattn3.sageattn(q, k, v, kernel="hopper", is_causal=causal))
        st = sageattn3.stats()
        if st["fallback"] or not st["served"].get("hopper"):
            raise SystemExit(f"ab_builds: {name} {s}: hopper did not serve every call: {st}")
        ts = median_us(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
        print(f"AB {name} {s} {th:.1f} {ts:.1f}", flush=True)


def run(exts, shapes, rounds: int) -> None:
    names = [Path(e).name.split(".")[0] for e in exts]
    if len(set(names)) != len(names):
        raise SystemExit(f"ab_builds: the builds need distinct file names (they name the columns): {names}")
    records = []
    with tempfile.TemporaryDirectory(prefix="sa3_ab_run_") as tmp:
        staged = [stage(Path(e), Path(tmp) / str(i)) for i, e in enumerate(exts)]
        for r in range(rounds):
            order = list(zip(names, staged))
            for name, where in order if r % 2 == 0 else order[::-1]:
                path = os.pathsep.join(p for p in (str(where), os.environ.get("PYTHONPATH", "")) if p)
                env = dict(os.environ, PYTHONPATH=path, SA3_AB_STAGED=str(where))
                out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_child", name, ",".join(shapes)],
                                     env=env, cwd=tmp, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"ab_builds: {name} failed in round {r + 1}:\n{out.stderr[-3000:]}")
                for line in out.stdout.splitlines():
                    if line.startswith("AB "):
                        _, b, s, h, sd = line.split()
                        records.append((b, s, float(h), float(sd)))
                        print(f"round {r + 1}: {b:12s} {s:13s} hopper {float(h):10.1f} us  sdpa {float(sd):10.1f} us",
                              flush=True)
    print(summarize(records))


def _parse_shapes(arg: str):
    shapes = [s for s in arg.split(",") if s]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        raise SystemExit(f"ab_builds: unknown shapes {unknown}; known: {', '.join(SHAPES)}")
    return shapes


def main(argv) -> int:
    usage = __doc__.split("\n\n")[1]
    if not argv or argv[0] not in ("build", "run", "_child"):
        raise SystemExit("usage:\n" + usage)
    if argv[0] == "_child":
        _child(argv[1], _parse_shapes(argv[2]))
        return 0
    opts, pos = {}, []
    it = iter(argv[1:])
    for a in it:
        if a in ("--rev", "--shapes", "--rounds"):
            opts[a] = next(it, None)
            if opts[a] is None:
                raise SystemExit(f"ab_builds: {a} needs a value")
        elif a.startswith("--"):
            raise SystemExit(f"ab_builds: unknown option {a}\nusage:\n{usage}")
        else:
            pos.append(a)
    if argv[0] == "build":
        if len(pos) != 1 or set(opts) - {"--rev"}:
            raise SystemExit("usage:\n" + usage)
        build(Path(pos[0]), opts.get("--rev"))
        return 0
    if not pos or set(opts) - {"--shapes", "--rounds"}:
        raise SystemExit("usage:\n" + usage)
    rounds = opts.get("--rounds", "2")
    if not rounds.isdigit() or int(rounds) < 1:
        raise SystemExit(f"ab_builds: --rounds must be a positive integer, not {rounds!r}")
    run(pos, _parse_shapes(opts.get("--shapes", ",".join(SHAPES))), int(rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
