"""The nvfp4 family's kernels in SASS: no stack frame (local memory) and no spills, on sm_120a (the
RTX 50xx target, which no card here runs) and sm_90a (the build the H200 tests run, MMA emulated).

The pre-pass and attention translation units are compiled here with -cubin and ptxas -v is read
per kernel, as tests/test_sass_mma.py does for the mma family. This is what caught the V fix's
first e2m1 decode (an 8-entry table indexed by the code) putting a 32-byte stack frame on every
quantization kernel (cuda/nvfp4/NOTES.md). Skips (never fails) where nvcc or an arch is missing.
"""
from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NVFP4 = ROOT / "cuda" / "nvfp4"
ARCHS = ("sm_120a", "sm_90a")
SOURCES = ("nvfp4_quant.cu", "nvfp4_attn.cu")
_SCRIPT = ROOT / "scripts" / "sass_mma_counts.py"
if not _SCRIPT.exists() or not NVFP4.is_dir():
    pytest.skip("needs the source checkout (scripts/, cuda/nvfp4/)", allow_module_level=True)
sys.path.insert(0, str(_SCRIPT.parent))
import sass_mma_counts as _counts  # noqa: E402  (the toolkit lookup and the ptxas -v parser)


@pytest.fixture(scope="module")
def usage(tmp_path_factory):
    """{arch: {mangled: {REG, STACK, SPILL, SHARED}}} of every kernel in SOURCES."""
    nvcc, archs, why = _counts.nvcc_for(ARCHS)
    if nvcc is None:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("sass_nvfp4")

    def build(job):
        arch, src = job
        cmd = [nvcc, "-cubin", "-O3", "-std=c++17", "--expt-relaxed-constexpr", f"-arch={arch}", "-Xptxas=-v",
               "-I", str(ROOT / "cuda" / "common"), "-I", str(NVFP4), str(NVFP4 / src),
               "-o", str(out / f"{Path(src).stem}_{arch}.cubin")]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 0, f"nvcc failed for {src} on {arch}:\n{res.stderr[-4000:]}"
        return arch, src, _counts.ptxas_usage(res.stdout + res.stderr)

    with ThreadPoolExecutor(max_workers=2) as pool:
        built = list(pool.map(build, [(a, s) for a in archs for s in SOURCES]))
    result = {a: {} for a in archs}
    for arch, src, kernels in built:
        assert kernels, f"no ptxas -v lines for {src} on {arch}"
        result[arch].update(kernels)
    return result


@pytest.mark.parametrize("arch", ARCHS)
def test_nvfp4_kernels_have_no_stack_and_no_spills(usage, arch):
    if arch not in usage:
        pytest.skip(f"this nvcc lacks {arch}")
    kernels = {n: u for n, u in usage[arch].items() if "nvfp4_" in n and "_kernel" in n and "mma_test" not in n}
    for kind in ("stats", "kmean", "kamax", "quant", "attn"):
        assert any(f"nvfp4_{kind}_kernel" in n for n in kernels), f"no nvfp4_{kind}_kernel compiled for {arch}"
    bad = [f"{n}: {u['STACK']} B stack frame, {u['SPILL']} B spill traffic" for n, u in sorted(kernels.items())
           if u["STACK"] or u["SPILL"]]
    assert not bad, "\n".join(bad)
