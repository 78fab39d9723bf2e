"""The nvfp4 attention kernel compiled for sm_120a uses the block-scaled FP4 tensor-core
instruction (not the emulation), the expected number of times per kernel, without spills.

CPU only: compiles one TU (cuda/nvfp4/nvfp4_attn.cu) to a cubin with the build's nvcc (a few
seconds) and reads its SASS with cuobjdump. Skips cleanly without nvcc, without sm_120 support
in it, or without cuobjdump."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OMMA = "OMMA.SF.16864.F32.E2M1.E2M1.UE4M3.4X"


def _nvcc():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and (Path(root) / "bin" / "nvcc").exists():
            return str(Path(root) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _cuobjdump(nvcc):
    cands = [str(Path(nvcc).resolve().parent / "cuobjdump"), shutil.which("cuobjdump") or ""]
    cands += glob.glob(os.path.join(sys.prefix, "lib", "python*", "site-packages", "nvidia", "*", "bin", "cuobjdump"))
    return next((c for c in cands if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def sm120_build(tmp_path_factory):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("no nvcc")
    codes = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True).stdout.split()
    if "sm_120" not in codes:
        pytest.skip("this nvcc has no sm_120")
    tool = _cuobjdump(nvcc)
    if tool is None:
        pytest.skip("no cuobjdump")
    out = tmp_path_factory.mktemp("sass") / "nvfp4_attn.cubin"
    res = subprocess.run([nvcc, "-cubin", "-O3", "-std=c++17", "--expt-relaxed-constexpr", "-Icuda/common",
                          "-Xptxas=-warn-spills", "-gencode=arch=compute_120a,code=sm_120a",
                          "cuda/nvfp4/nvfp4_attn.cu", "-o", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    sass = subprocess.run([tool, "-sass", str(out)], capture_output=True, text=True, check=True).stdout
    return sass, res.stdout + res.stderr


def _functions(sass):
    """{mangled kernel name: its SASS text}."""
    parts = re.split(r"\n\s*Function : (\S+)", sass)
    return dict(zip(parts[1::2], parts[2::2]))


def test_attention_uses_the_block_scaled_fp4_mma(sm120_build):
    sass, _ = sm120_build
    funcs = _functions(sass)
    attn = {n: body for n, body in funcs.items() if "nvfp4_attn_kernel" in n}
    assert len(attn) == 4, sorted(funcs)  # head dims 64/128 x fp16/bf16
    for name, body in attn.items():
        dp = 128 if "ILi128E" in name else 64
        # per 64-key tile: QK^T 8 key tiles x dp/64 chunks, P.V dp/8 channel tiles (fully unrolled)
        want = 8 * (dp // 64) + dp // 8
        assert body.count(OMMA) == want, (name, body.count(OMMA), want)
        assert "IDP4A" not in body, f"{name}: the emulation's dp4a is in the sm_120a build"


def test_no_spills(sm120_build):
    _, log = sm120_build
    assert "spill" not in log.lower(), log
