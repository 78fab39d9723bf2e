"""Per-CTA timeline of the hopper attention kernel (cuda/hopper/NOTES.md, v8).

    python scripts/hopper_timeline.py build DIR      # a copy of this checkout in DIR, its kernel
                                                     # instrumented, built for sm_90a (nvcc needed)
    python scripts/hopper_timeline.py run DIR [SHAPE ...]   # on an H100/H200: the timeline per shape

The instrumented kernel reads the SM clock at each phase of every CTA (start, barrier init, register
hand-over, Q landed, Q ready, first QK^T, end of loop, end of epilogue, plus the producer's last copy
and the second consumer's loop and epilogue ends) and writes the stamps over the first rows of the
CTA's LSE output; `run` calls it with return_lse=True and reduces the stamps. The instrumentation
changes the kernel's schedule (NOTES.md: it ran 3% faster non-causal, 18% slower causal), so read
the phases as proportions, and time real builds with `python -m sageattn3 bench`.

The instrumentation is a set of text edits on cuda/hopper/hopper_attn.cu, each anchored on one
unique line; `build` fails loudly when an anchor is gone (tests/test_hopper_timeline.py checks they
apply to the kernel in this checkout).
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from checkout_build import REPO, build_inplace, copy_worktree

KERNEL = Path("cuda/hopper/hopper_attn.cu")
STAMPS = ("start", "barriers", "q_ready", "first_qk", "loop_end", "epilogue_end", "smid", "producer_done",
          "gtimer_start", "gtimer_end", "ntiles", "cw1_loop_end", "cw1_epilogue_end", "regs", "q_landed", "rows")

# (anchor, replacement): each anchor must occur exactly once in the kernel source.
EDITS = [
    ("namespace sa3h {\nnamespace {\n",
     "namespace sa3h {\nnamespace {\n__shared__ uint32_t tl_q_landed;\n"),
    ("    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));\n",
     "    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));\n"
     "    if (tid == 0 && (threadIdx.x >> 7) == 1) tl_q_landed = (uint32_t)clock64();\n"),
    ("    using L = Smem<DP, NS, NC>;\n    extern __shared__",
     "    using L = Smem<DP, NS, NC>;\n    __shared__ uint32_t tl_sm[4];\n    const uint32_t tl_c0 = (uint32_t)clock64();\n"
     "    uint64_t tl_g0;\n    asm volatile(\"mov.u64 %0, %%globaltimer;\" : \"=l\"(tl_g0));\n    extern __shared__"),
    ("        mbar_init_fence();\n    }\n    __syncthreads();\n",
     "        mbar_init_fence();\n    }\n    __syncthreads();\n    const uint32_t tl_sync = (uint32_t)clock64();\n"),
    ("                bulk_g2s(sv + s * L::kV, vt + (int64_t)j * L::kV, L::kV, &full_v[s], pol);\n            }\n",
     "                bulk_g2s(sv + s * L::kV, vt + (int64_t)j * L::kV, L::kV, &full_v[s], pol);\n            }\n"
     "            tl_sm[0] = (uint32_t)clock64();\n"),
    ("    regs_inc<Roles<NC>::kConsumerRegs>();\n",
     "    regs_inc<Roles<NC>::kConsumerRegs>();\n    const uint32_t tl_regs = (uint32_t)clock64();\n"),
    ("    named_barrier_sync(1 + cw, 128);\n\n",
     "    named_barrier_sync(1 + cw, 128);\n    const uint32_t tl_q = (uint32_t)clock64();\n\n"),
    ("    if (lane == 0) mbar_arrive(&empty_k[0]);\n",
     "    if (lane == 0) mbar_arrive(&empty_k[0]);\n    const uint32_t tl_s0 = (uint32_t)clock64();\n"),
    ("        step(ntiles - 1, std::false_type{});\n    }\n",
     "        step(ntiles - 1, std::false_type{});\n    }\n    const uint32_t tl_loop = (uint32_t)clock64();\n"
     "    if (cw == 1 && tid == 0) tl_sm[1] = tl_loop;\n"),
    ("        if (row1 < p.seq_q) lrow[row1] = (m[1] + __log2f(l[1]) - kLog2P) * kLn2 + row_lse[cw * 64 + r1];\n"
     "    }\n}\n",
     "        if (row1 < p.seq_q) lrow[row1] = (m[1] + __log2f(l[1]) - kLog2P) * kLn2 + row_lse[cw * 64 + r1];\n"
     "    }\n"
     "    const uint32_t tl_epi = (uint32_t)clock64();\n"
     "    if (cw == 1 && tid == 0) tl_sm[2] = tl_epi;\n"
     "    named_barrier_sync(15, 128 * NC);\n"
     "    if (p.lse != nullptr && cw == 0 && tid == 0) {\n"
     "        uint64_t g1;\n        asm volatile(\"mov.u64 %0, %%globaltimer;\" : \"=l\"(g1));\n"
     "        uint32_t smid;\n        asm volatile(\"mov.u32 %0, %%smid;\" : \"=r\"(smid));\n"
     "        uint32_t *tl = reinterpret_cast<uint32_t *>(p.lse + b * p.lse_stride_b + hq * p.lse_stride_h) + q0;\n"
     "        const uint32_t v[16] = {tl_c0, tl_sync, tl_q, tl_s0, tl_loop, tl_epi, smid, tl_sm[0], (uint32_t)tl_g0,\n"
     "                                (uint32_t)g1, (uint32_t)ntiles, tl_sm[1], tl_sm[2], tl_regs, tl_q_landed, (uint32_t)BM};\n"
     "        for (int i = 0; i < 16; ++i) tl[i] = v[i];\n"
     "    }\n}\n"),
]


def instrument(source: str) -> str:
    for anchor, replacement in EDITS:
        n = source.count(anchor)
        if n != 1:
            raise SystemExit(f"hopper_timeline: anchor found {n} times in {KERNEL} (expected once):\n{anchor}")
        source = source.replace(anchor, replacement)
    return source


def build(out: Path) -> None:
    if out.exists():
        raise SystemExit(f"hopper_timeline: {out} exists")
    copy_worktree(out)
    (out / KERNEL).write_text(instrument((REPO / KERNEL).read_text()))
    build_inplace(out)
    print(f"instrumented build in {out}; on the GPU: python {Path(__file__).relative_to(REPO)} run {out}")


SHAPES = {"flux": (1, 24, 4608, False), "batch": (4, 40, 4096, False), "16k": (1, 40, 16384, False),
          "16k-causal": (1, 40, 16384, True), "s1k": (1, 24, 1024, False), "one-tile": (1, 132, 128, False)}


def parse_stamps(torch, raw):
    """raw: the instrumented call's LSE as int32, (B*H, S). Each CTA's consumer 0 wrote its stamps
    over the LSE rows from the CTA's first row on; the last stamp is the CTA's row count (128 or
    192: two or three consumers), and CTA 0 starts at row 0. Returns {stamp: int64 values, one per
    CTA}."""
    rows = int(raw[0, len(STAMPS) - 1])
    if rows not in (128, 192):
        raise SystemExit(f"hopper_timeline: no stamps in the LSE output (rows per CTA read as {rows})")
    starts = torch.arange(0, raw.shape[1], rows, device=raw.device)
    st = raw[:, starts[:, None] + torch.arange(len(STAMPS), device=raw.device)]
    return dict(zip(STAMPS, (st.reshape(-1, len(STAMPS)).cpu().long() & 0xffffffff).T))


def run(build_dir: Path, names) -> None:
    sys.path.insert(0, str(build_dir))
    import torch
    import sageattn3
    assert Path(sageattn3.__file__).resolve().is_relative_to(build_dir.resolve()), sageattn3.__file__
    for name in names or SHAPES:
        b, h, s, causal = SHAPES[name]
        q, k, v = (torch.randn(b, h, s, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        for _ in range(4):
            _, lse = sageattn3.sageattn(q, k, v, kernel="hopper", return_lse=True, is_causal=causal)
        torch.cuda.synchronize()
        st = parse_stamps(torch, lse.view(torch.int32).reshape(b * h, s))

        def cycles(a, z):  # stamps are the clock's low 32 bits
            return ((st[z] - st[a]) & 0xffffffff).double()
        ghz = float(cycles("start", "epilogue_end").sum() / cycles("gtimer_start", "gtimer_end").sum())

        def us(a, z, per=None):
            x = cycles(a, z) / (per if per is not None else 1)
            return float(x.mean()) / ghz / 1e3
        tiles = st["ntiles"].double()
        print(f"== {name} (B={b}, H={h}, S={s}, causal={causal}): {len(tiles)} CTAs, {float(tiles.mean()):.1f} "
              f"tiles each, clock ~{ghz:.2f} GHz; per CTA in us:")
        print(f"  launch->barriers {us('start', 'barriers'):.2f} | registers {us('barriers', 'regs'):.2f} | "
              f"Q loads {us('regs', 'q_landed'):.2f} | Q quantized {us('q_landed', 'q_ready'):.2f} | "
              f"first QK^T {us('q_ready', 'first_qk'):.2f} | loop {us('first_qk', 'loop_end'):.2f} "
              f"({us('first_qk', 'loop_end', tiles):.3f}/tile) | epilogue {us('loop_end', 'epilogue_end'):.2f} | "
              f"life {us('start', 'epilogue_end'):.2f}")
        gaps, by_sm = [], {}
        for i, sm in enumerate(st["smid"].tolist()):
            by_sm.setdefault(sm, []).append(i)
        g0, g1 = st["gtimer_start"].tolist(), st["gtimer_end"].tolist()
        base = min(g0)
        for idx in by_sm.values():
            idx.sort(key=lambda i: (g0[i] - base) & 0xffffffff)
            gaps += [((g0[z] - g1[a]) & 0xffffffff) / 1e3 for a, z in zip(idx, idx[1:])]
        span = max((x - base) & 0xffffffff for x in g1) / 1e3
        busy = sum(((y - x) & 0xffffffff) for x, y in zip(g0, g1)) / 1e3 / len(by_sm)
        print(f"  kernel span {span:.1f} us, SMs busy {100 * busy / span:.0f}% of it"
              + (f", gap between CTAs on an SM: median {statistics.median(gaps):.2f} us" if gaps else ""))


def main(argv) -> int:
    if len(argv) < 2 or argv[0] not in ("build", "run"):
        print(__doc__)
        return 2
    if argv[0] == "build":
        build(Path(argv[1]).resolve())
    else:
        unknown = [n for n in argv[2:] if n not in SHAPES]
        if unknown:
            raise SystemExit(f"unknown shapes {unknown}; known: {', '.join(SHAPES)}")
        run(Path(argv[1]), argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
