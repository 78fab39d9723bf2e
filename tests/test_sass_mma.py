"""The mma family's GeForce configurations in SASS: no stack frame (spills), registers and static
shared memory within what cuda/mma/mma_configs.h sized them for, on sm_89 and sm_120a.

No GeForce card is available to us, so what the compiler produced is the check: the attention and
quantization translation units are compiled here with -cubin for sm_89 and sm_120a (a few seconds
each; the CI build itself is sm_90a only), and ptxas -v is read per kernel (plus `cuobjdump
-res-usage` where one is found: the CI toolkit may have nvcc alone). Every SMALL row of
mma_configs.h (what sm_86/89/120 cards run: their 99 KB per block picks the class) must show no
stack frame and no spill traffic, static shared memory <= SA3_MMA_STATIC_SMEM (supports() adds that
much to each row's dynamic bytes) and registers x threads x CTAS within the 64K register file. The dynamic shared memory of every row is a static_assert in attn_mma.cu
(99 KB per block, CTAS blocks per 100 KB SM), so a row that outgrows it fails this compile.

Skips (never fails) where nvcc is missing or nvcc lacks an arch; fails loudly when a
spill appears. The LARGE rows (sm_80/sm_90 class) are compiled into the same cubins but never run
on these cards; their numbers are printed, not asserted.
"""
from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MMA = ROOT / "cuda" / "mma"
ARCHS = ("sm_89", "sm_120a")
_SCRIPT = ROOT / "scripts" / "sass_mma_counts.py"
if not _SCRIPT.exists() or not MMA.is_dir():
    pytest.skip("needs the source checkout (scripts/, cuda/mma/)", allow_module_level=True)
sys.path.insert(0, str(_SCRIPT.parent))
import sass_mma_counts as _counts  # noqa: E402  (one parser of mma_configs.h and the kernel names for both)

ROW, KERNEL = _counts.ROW, _counts.KERNEL


def config_rows():
    """(class, DP, pv, MT, QREG, LSUM, WARPS, STAGES, CTAS) of every mma_configs.h row."""
    rows = _counts.config_rows()
    assert rows, "no X(...) rows found in cuda/mma/mma_configs.h"
    return rows


def static_smem_allowance() -> int:
    m = re.search(r"#define\s+SA3_MMA_STATIC_SMEM\s+(\d+)", (MMA / "mma_configs.h").read_text())
    assert m, "SA3_MMA_STATIC_SMEM not found in cuda/mma/mma_configs.h"
    return int(m.group(1))


def test_every_head_dim_has_a_configuration_per_class():
    """Runs everywhere (no nvcc): LARGE serves every (padded head dim, P.V); SMALL serves every
    head dim with the policy's GeForce default (FP8 P.V) and 16-bit P.V up to DP=128 (the DP=256
    16-bit gap is documented in mma_configs.h and declined with smem_limit)."""
    have = {(c, dp, pv) for c, dp, pv, *_ in config_rows()}
    assert len(have) == len(config_rows()), "duplicate (class, DP, pv) rows"
    assert {pv for _c, _d, pv, *_ in config_rows()} >= {"F16", "FP8"}
    for dp in (64, 128, 256):
        assert {("LARGE", dp, "F16"), ("LARGE", dp, "FP8"), ("LARGE", dp, "FP8_F16ACC"), ("SMALL", dp, "FP8")} <= have
    # fp16-accumulated FP8 (the GeForce default) up to DP=128; DP=256 goes to the FP8 row (mma_configs.h)
    assert {("SMALL", 64, "F16"), ("SMALL", 128, "F16"), ("SMALL", 64, "FP8_F16ACC"),
            ("SMALL", 128, "FP8_F16ACC")} <= have


# ----------------------------------------------------------------------------- the toolchain
_cuobjdump = _counts.cuobjdump      # the toolkit's, PATH's, or PyPI's nvidia-cuda-cuobjdump


_ptxas_usage = _counts.ptxas_usage  # {mangled: {REG, STACK, SPILL, SHARED}} from ptxas -v


@pytest.fixture(scope="module")
def sass(tmp_path_factory):
    """{arch: {mangled: {REG, STACK, SPILL, SHARED[, CUOBJDUMP_SHARED]}}}: ptxas -v for every kernel
    (needs only nvcc), plus cuobjdump -res-usage's static shared memory where cuobjdump is found."""
    nvcc, archs, why = _counts.nvcc_for(ARCHS)
    if nvcc is None:
        pytest.skip(why)
    cuobjdump = _cuobjdump(Path(nvcc).parent)
    out = tmp_path_factory.mktemp("sass")
    jobs = [(a, src) for a in archs for src in ("attn_mma.cu", "quant_kv.cu")]

    def build(job):
        arch, src = job
        cubin = out / f"{Path(src).stem}_{arch}.cubin"
        cmd = [nvcc, "-cubin", "-O3", "-std=c++17", "--expt-relaxed-constexpr", f"-arch={arch}", "-Xptxas=-v",
               "-I", str(ROOT / "cuda" / "common"), "-I", str(MMA), str(MMA / src), "-o", str(cubin)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 0, f"nvcc failed for {src} on {arch}:\n{res.stderr[-4000:]}"
        return arch, cubin, res.stdout + res.stderr

    with ThreadPoolExecutor(max_workers=2) as pool:
        built = list(pool.map(build, jobs))
    result = {a: {} for a in archs}
    for arch, cubin, log in built:
        usage = _ptxas_usage(log)
        assert usage, f"no ptxas -v lines for {cubin.name}"
        if cuobjdump:
            text = subprocess.run([cuobjdump, "-res-usage", str(cubin)], capture_output=True, text=True,
                                  check=True).stdout
            name = None
            for line in text.splitlines():
                m = re.match(r"\s*Function (\S+):", line)
                if m:
                    name = m.group(1)
                elif name and "SHARED:" in line and name in usage:
                    usage[name]["CUOBJDUMP_SHARED"] = int(re.search(r"SHARED:(\d+)", line).group(1))
                    name = None
        result[arch].update(usage)
    return result


def _attention_kernels(kernels):
    """{(dtype, wrapper, DP, MT, FP8, QREG, LSUM, WARPS, STAGES, LSE): (name, usage)} of the attention
    kernels; wrapper "" for a plain configuration."""
    out = {}
    for name, use in kernels.items():
        m = KERNEL.search(name)
        if m:
            out[(m.group(1), m.group(2) or "") + tuple(int(x) for x in m.groups()[2:])] = (name, use)
    return out


def _row_kernels(kernels, dtype, pv, dims):
    """The kernels of a mma_configs.h row (with and without the LSE): F16 / FP8 are the plain
    configuration; any other pv token (FP8_F16ACC) a wrapped FP8 one whose wrapper's name holds the
    token's suffix (f16acc)."""
    fp8 = int(pv.startswith("FP8"))
    suffix = pv.split("_", 1)[1].lower() if "_" in pv else ""
    return [hit for (dt, wrapper, *rest), hit in sorted(kernels.items())
            if dt == dtype and tuple(rest[:-1]) == (dims[0], dims[1], fp8) + tuple(dims[2:])
            and (wrapper == "" if not suffix else suffix in wrapper.lower())]


@pytest.mark.parametrize("arch", ARCHS)
def test_geforce_configurations_do_not_spill(sass, arch):
    if arch not in sass:
        pytest.skip(f"nvcc lacks {arch}")
    kernels = _attention_kernels(sass[arch])
    allowance = static_smem_allowance()
    problems, table = [], []
    for cls, dp, pv, mt, qreg, lsum, warps, stages, ctas in config_rows():
        for dtype in ("6__half", "13__nv_bfloat16"):
            label = f"{cls} DP={dp} {pv} {'fp16' if 'half' in dtype else 'bf16'}"
            hits = _row_kernels(kernels, dtype, pv, (dp, mt, qreg, lsum, warps, stages))
            if len(hits) != 2:
                problems.append(f"{label}: {len(hits)} kernels in the {arch} cubin, want 2 (without and with the "
                                "LSE; or their names no longer parse)")
                continue
            for variant, (name, use) in zip(("", " +lse"), hits):
                lab = label + variant
                table.append(f"  {lab:<33} REG {use['REG']:>3} STACK {use['STACK']:>3} SPILL {use['SPILL']:>3}")
                if cls != "SMALL":
                    continue
                regs = (use["REG"] + 7) // 8 * 8  # allocated per thread in units of 8
                if use["STACK"] or use["SPILL"]:
                    problems.append(f"{lab}: {use['STACK']} B stack frame, {use['SPILL']} B spill traffic in {name}")
                static = use.get("CUOBJDUMP_SHARED", use["SHARED"] + (1024 if int(arch[3:].rstrip("af")) >= 90 else 0))
                if static > allowance:
                    problems.append(f"{lab}: {static} B static shared memory > SA3_MMA_STATIC_SMEM={allowance}")
                if regs * 32 * warps * ctas > 65536:
                    problems.append(f"{lab}: {use['REG']} registers x {32 * warps} threads x {ctas} CTAs > 64K")
    print(f"\n{arch} attention kernels (SMALL rows asserted):\n" + "\n".join(table))
    assert not problems, f"{arch}:\n" + "\n".join(problems)


@pytest.mark.parametrize("arch", ARCHS)
def test_quantization_kernels_do_not_spill(sass, arch):
    if arch not in sass:
        pytest.skip(f"nvcc lacks {arch}")
    quant = {n: u for n, u in sass[arch].items() if "sa3_attn_mma_kernel" not in n}
    assert quant, f"no quantization kernels in the {arch} cubin"
    bad = [f"{n}: STACK {u['STACK']} SPILL {u['SPILL']}" for n, u in quant.items() if u["STACK"] or u["SPILL"]]
    assert not bad, "\n".join(bad)
