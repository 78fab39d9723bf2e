#!/usr/bin/env python3
"""Instruction classes in the mma attention kernels' main loop, from the sm_89 / sm_120a SASS, and
what they imply for an RTX 4090 / 5090: an ESTIMATE (no GeForce card is available to us).

For every kernel configuration (cuda/mma/mma_configs.h) the attention translation unit is compiled
with -cubin (or a given cubin is read), `cuobjdump -sass` is split per kernel, and the kernel's
fast main loop is found: the backward branch whose body holds the most tensor instructions (the
EDGE loop holds as many plus the masking; the shorter one is the fast loop). The conditional O
rescale inside it (a forward-skipped block without mma or exp, run only when a row's max moved)
is left out. One pass of the loop is one warp's 16*MT query rows against one 64-key tile.

Per pass, in SM clocks, against the card's published per-SM rates:
  tensor  sum over mma instructions of ops / (the rate of that instruction's type)
  exp     MUFU.EX2 x 32 lanes / 16 per clock (4 SFUs per SM sub-partition)
  issue   instructions / 4 (one per clock per scheduler)
  smem    shared-memory bytes moved (ldmatrix, LDS, STS, cp.async fills) / 128 B per clock
The estimate takes the largest of the four (perfect overlap, every SM busy, main loop only: long
sequences, no quantization pre-pass, no epilogue), so real kernels land below it.

Rates (dense, per SM per clock, from NVIDIA's Ada (RTX 4090: 128 SMs, 2520 MHz boost) and
Blackwell GeForce (RTX 5090: 170 SMs, 2407 MHz) figures; both come to the same per-SM rates):
  INT8 mma 2048; FP8 mma with FP16 accumulate 2048, with FP32 accumulate 1024; FP16/BF16 mma
  with FP32 accumulate 512, FP16 with FP16 accumulate 1024 (GeForce halves FP32-accumulate
  rates; RTX 4090: 660.6 dense INT8/FP8-f16acc TOPS, 330.3 FP8-f32acc, 165.2 FP16-f32acc).

Usage: python scripts/sass_mma_counts.py [--arch sm_89 sm_120a] [--json out.json] [--cubin ARCH=PATH]
Needs nvcc and cuobjdump (toolkit bin/, PATH, or pip nvidia-cuda-cuobjdump).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MMA = ROOT / "cuda" / "mma"
ROW = re.compile(r"X\(\s*(LARGE|SMALL)\s*,\s*(\d+)\s*,\s*([A-Z0-9_]+)\s*,\s*(\d+)\s*,\s*([01])\s*,\s*([01])\s*,"
                 r"\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)")
KERNEL = re.compile(r"sa3_attn_mma_kernelI(6__half|13__nv_bfloat16)N(?:S_\d+([A-Za-z_]\w*?)IN)?S_11sa3_mma_cfgI"
                    r"Li(\d+)ELi(\d+)ELb([01])ELb([01])ELb([01])ELi(\d+)ELi(\d+)EE*Lb([01])E+v")
INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")

CARDS = {  # published: SMs, boost clock (GHz); per-SM-per-clock rates below are the same for both
    "RTX 4090": {"arch": "sm_89", "sms": 128, "ghz": 2.52},
    "RTX 5090": {"arch": "sm_120a", "sms": 170, "ghz": 2.407},
}
# dense ops per clock per SM, GeForce Ada/Blackwell, by SASS tensor instruction
def tensor_rate(op: str) -> tuple:
    """(ops per instruction, ops per clock per SM) for a warp-level mma SASS opcode."""
    shape = re.search(r"\.(\d{3,5})", op)
    m, n, k = {"16832": (16, 8, 32), "16816": (16, 8, 16), "1688": (16, 8, 8), "16864": (16, 8, 64)}.get(
        shape.group(1) if shape else "", (16, 8, 16))
    ops = 2 * m * n * k
    if op.startswith("IMMA"):
        return ops, 2048
    if op.startswith("QMMA"):
        return ops, 2048 if ".F16." in op + "." else 1024  # QMMA.16832.F16.E4M3: FP16 accumulate
    if op.startswith("HMMA"):
        return ops, 1024 if op.split(".")[2:3] == ["F16"] else 512  # HMMA.16816.F32[.BF16]: FP32 accumulate
    return ops, 512


SMEM_BYTES = {"LDSM.16.M88.4": 512, "LDSM.16.MT88.4": 512, "LDSM.16.M88.2": 256, "LDSM.16.MT88.2": 256,
              "LDSM.16.M88": 128, "LDS.128": 512, "LDS.64": 256, "LDS": 128, "LDS.U8": 32, "STS.128": 512,
              "STS.64": 256, "STS": 128, "LDGSTS.E.BYPASS.128": 512, "LDGSTS.E.BYPASS.128.ZFILL": 512,
              "LDGSTS.E.128": 512, "LDGSTS.E.128.ZFILL": 512}


def config_rows():
    return [(m[0], int(m[1]), m[2], *map(int, m[3:])) for m in ROW.findall((MMA / "mma_configs.h").read_text())]


def toolkit_bin():
    """The CUDA toolkit's bin/ (CUDA_HOME / CUDA_PATH, else the nvcc on PATH, through nvcc's own
    --dryrun TOP= for wrapper scripts), or None. tests/test_sass_mma.py uses it too."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and (Path(root) / "bin" / "nvcc").exists():
            return Path(root) / "bin"
    nvcc = shutil.which("nvcc")
    if not nvcc:
        return None
    res = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True)
    for m in re.finditer(r"TOP=(\S+)", res.stdout + res.stderr):
        if (Path(m.group(1)) / "bin" / "nvcc").exists():
            return Path(m.group(1)) / "bin"
    return Path(nvcc).resolve().parent


def cuobjdump(bin_dir):
    cand = [bin_dir / "cuobjdump"] if bin_dir else []
    if shutil.which("cuobjdump"):
        cand.append(Path(shutil.which("cuobjdump")))
    spec = importlib.util.find_spec("nvidia")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        cand += sorted(Path(loc).glob("cu*/bin/cuobjdump"))
    return next((str(c) for c in cand if c.exists()), None)


def compile_cubin(nvcc: str, arch: str, out: Path) -> Path:
    cubin = out / f"attn_mma_{arch}.cubin"
    subprocess.run([nvcc, "-cubin", "-O3", "-std=c++17", "--expt-relaxed-constexpr", f"-arch={arch}",
                    "-I", str(ROOT / "cuda" / "common"), "-I", str(MMA), str(MMA / "attn_mma.cu"), "-o", str(cubin)],
                   check=True, cwd=ROOT)
    return cubin


def nvcc_for(archs) -> tuple:
    """(nvcc's path, the archs of `archs` it compiles, "") or (None, [], why not): for the SASS tests."""
    bin_dir = toolkit_bin()
    if bin_dir is None or not (bin_dir / "nvcc").exists():
        return None, [], "nvcc not found (CUDA_HOME, CUDA_PATH or PATH): SASS checks need it"
    nvcc = str(bin_dir / "nvcc")
    listed = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True).stdout.split()
    have = [a for a in archs if a.rstrip("af") in listed]
    return (nvcc, have, "") if have else (None, [], f"this nvcc supports none of {tuple(archs)}")


def ptxas_usage(text: str) -> dict:
    """{mangled: {REG, STACK, SPILL, SHARED}} from ptxas -v (SHARED: the kernel's own static shared
    memory; ptxas leaves out the 1 KB sm_90+ reserve that cuobjdump counts)."""
    out, name = {}, None
    for line in text.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            name = m.group(1)
            out[name] = {"REG": 0, "STACK": 0, "SPILL": 0, "SHARED": 0}
            continue
        if name is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            out[name]["STACK"] = int(m.group(1))
            out[name]["SPILL"] = int(m.group(2)) + int(m.group(3))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[name]["REG"] = int(m.group(1))
            sm = re.search(r"(\d+) bytes smem", line)
            out[name]["SHARED"] = int(sm.group(1)) if sm else 0
            name = None
    return out


def split_functions(sass: str) -> dict:
    """{mangled name: [(addr, predicated, opcode, operands)]}."""
    funcs, name = {}, None
    for line in sass.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            name = m.group(1)
            funcs[name] = []
            continue
        m = INSN.search(line)
        if m and name:
            funcs[name].append((int(m.group(1), 16), bool(m.group(2)), m.group(3), m.group(4).strip()))
    return funcs


def is_tensor(op: str) -> bool:
    return op.startswith(("IMMA", "HMMA", "QMMA", "OMMA"))


def main_loop(insns):
    """(loop instructions without the skipped rescale block, skipped count) of the fast main loop."""
    index = {a: i for i, (a, *_r) in enumerate(insns)}
    loops = []
    for i, (addr, _p, op, args) in enumerate(insns):
        if not op.startswith("BRA"):
            continue
        t = re.search(r"0x([0-9a-f]+)", args)
        if t and int(t.group(1), 16) <= addr and int(t.group(1), 16) in index:
            body = insns[index[int(t.group(1), 16)]:i + 1]
            loops.append((sum(is_tensor(x[2]) for x in body), len(body), index[int(t.group(1), 16)], i))
    if not loops:
        return [], 0
    most = max(n for n, *_ in loops)
    _, _, lo, hi = min((x for x in loops if x[0] == most), key=lambda x: x[1])
    skip = set()
    for i in range(lo, hi):
        addr, _p, op, args = insns[i]
        t = re.search(r"0x([0-9a-f]+)", args) if op.startswith("BRA") else None
        if t and insns[lo][0] < int(t.group(1), 16) <= insns[hi][0]:
            j = index.get(int(t.group(1), 16))
            region = range(i + 1, j) if j else range(0)
            if region and not any(is_tensor(insns[k][2]) or insns[k][2] == "MUFU.EX2" for k in region):
                skip.update(region)
    return [insns[k] for k in range(lo, hi + 1) if k not in skip], len(skip)


def analyse(insns) -> dict:
    loop, skipped = main_loop(insns)
    c = {"instructions": 0, "tensor_instr": 0, "tensor_ops": 0, "tensor_clk": 0.0, "ex2": 0, "mufu_other": 0,
         "smem_bytes": 0, "shfl": 0, "fp32_alu": 0, "int_alu": 0, "conv": 0, "rescale_skipped": skipped, "ops": {}}
    for _a, _p, op, _args in loop:
        if op == "NOP":
            continue
        c["instructions"] += 1
        c["ops"][op] = c["ops"].get(op, 0) + 1
        if is_tensor(op):
            ops, rate = tensor_rate(op)
            c["tensor_instr"] += 1
            c["tensor_ops"] += ops
            c["tensor_clk"] += ops / rate
        elif op == "MUFU.EX2":
            c["ex2"] += 1
        elif op.startswith("MUFU"):
            c["mufu_other"] += 1
        elif op.startswith("SHFL"):
            c["shfl"] += 1
        elif op.split(".")[0] in ("FFMA", "FMUL", "FADD", "FMNMX", "FSEL", "FSETP"):
            c["fp32_alu"] += 1
        elif op.split(".")[0] in ("IADD3", "IMAD", "LOP3", "SHF", "LEA", "ISETP", "SEL", "IMNMX", "PRMT", "MOV"):
            c["int_alu"] += 1
        elif op.split(".")[0] in ("F2FP", "F2I", "I2F", "F2F", "I2FP"):
            c["conv"] += 1
        c["smem_bytes"] += SMEM_BYTES.get(op, 0)
    return c


def estimate(c: dict, rows: int, dp: int, card: dict) -> dict:
    useful = 4 * rows * 64 * dp  # QK^T + P.V of one warp's rows against one 64-key tile
    clk = {"tensor": c["tensor_clk"], "exp": c["ex2"] * 32 / 16, "issue": c["instructions"] / 4,
           "smem": c["smem_bytes"] / 128}
    bound = max(clk, key=clk.get)
    per_sm = useful / clk[bound] if clk[bound] else 0.0
    out = {"clk": {k: round(v, 1) for k, v in clk.items()}, "bound": bound,
           "tops": round(per_sm * card["sms"] * card["ghz"] * 1e9 / 1e12, 1)}
    fp32_pv = c["ops"].get("QMMA.16832.F32.E4M3.E4M3", 0)
    if fp32_pv:
        # Projection for FP8 P.V with FP16 accumulation (issue 12 item 2): the same QMMAs at the
        # FP16-accumulate rate, plus one FADD per output accumulator per tile (the fp32 sum of
        # each tile's FP16 partial product) on the issue side.
        ops, rate = tensor_rate("QMMA.16832.F32.E4M3.E4M3")
        proj = dict(clk, tensor=clk["tensor"] - fp32_pv * ops / rate + fp32_pv * ops / 2048,
                    issue=(c["instructions"] + rows * dp // 32) / 4)
        pb = max(proj, key=proj.get)
        out["f16acc_projection"] = {"clk": {k: round(v, 1) for k, v in proj.items()}, "bound": pb,
                                    "tops": round(useful / proj[pb] * card["sms"] * card["ghz"] * 1e9 / 1e12, 1)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", nargs="+", default=["sm_89", "sm_120a"])
    ap.add_argument("--cubin", action="append", default=[], metavar="ARCH=PATH", help="read this cubin for ARCH")
    ap.add_argument("--json", default=None, help="write the counts and estimates here")
    ap.add_argument("--all-rows", action="store_true", help="also the LARGE rows (sm_80/90 class)")
    args = ap.parse_args(argv)
    bin_dir = toolkit_bin()
    tool = cuobjdump(bin_dir)
    if tool is None:
        print("cuobjdump not found", file=sys.stderr)
        return 2
    given = dict(x.split("=", 1) for x in args.cubin)
    rows = [r for r in config_rows() if args.all_rows or r[0] == "SMALL"]
    report = {"note": "ESTIMATE from SASS instruction counts and published per-SM rates; not measured (no "
                      "GeForce card available)", "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            if arch in given:
                cubin = Path(given[arch])
            else:
                if bin_dir is None:
                    print("nvcc not found", file=sys.stderr)
                    return 2
                cubin = compile_cubin(str(bin_dir / "nvcc"), arch, Path(tmp))
            sass = subprocess.run([tool, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
            funcs = {}
            for name, insns in split_functions(sass).items():
                m = KERNEL.search(name)
                if m:  # wrapper: "" for a plain configuration, e.g. sa3_fp8_f16acc for a P.V variant
                    funcs[(m.group(1), m.group(2) or "") + tuple(int(x) for x in m.groups()[2:])] = insns
            card_name, card = next((n, c) for n, c in CARDS.items() if c["arch"].rstrip("a") == arch.rstrip("a"))
            for cls, dp, pv, mt, qreg, lsum, warps, stages, ctas in rows:
                suffix = pv.split("_", 1)[1].lower() if "_" in pv else ""
                hit = [v for (dt, wr, *rest), v in funcs.items()  # rest[-1]: the LSE flag; counted without
                       if dt == "13__nv_bfloat16" and tuple(rest) == (dp, mt, int(pv.startswith("FP8")), qreg, lsum,
                                                                       warps, stages, 0)
                       and (wr == "" if not suffix else suffix in wr.lower())]
                if not hit:
                    continue
                c = analyse(hit[0])
                est = estimate(c, 16 * mt, dp, card)
                report["rows"].append({"arch": arch, "card": card_name, "class": cls, "dp": dp, "pv": pv, "mt": mt,
                                       "warps": warps, "stages": stages, "ctas": ctas, "counts": c, "estimate": est})
    print(f"{'arch':<8} {'row':<17} {'instr':>6} {'mma':>4} {'ex2':>4} {'smemB':>6} | "
          f"{'tensor':>7} {'exp':>6} {'issue':>6} {'smem':>6} clk/pass | bound  -> est. TOPS (bf16 in)")
    for r in report["rows"]:
        c, e = r["counts"], r["estimate"]
        label = f"{r['class']} D{r['dp']} {r['pv']}"
        print(f"{r['arch']:<8} {label:<17} {c['instructions']:>6} {c['tensor_instr']:>4} {c['ex2']:>4} "
              f"{c['smem_bytes']:>6} | {e['clk']['tensor']:>7} {e['clk']['exp']:>6} {e['clk']['issue']:>6} "
              f"{e['clk']['smem']:>6}          | {e['bound']:<6} -> {r['card']} ~{e['tops']}"
              + (f"  (FP16-acc P.V projection: ~{e['f16acc_projection']['tops']}, "
                 f"{e['f16acc_projection']['bound']}-bound)" if "f16acc_projection" in e else ""))
    print("ESTIMATE: perfect overlap, main loop only (long sequences); no GeForce card was available to measure.")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
