"""The wheel a user installs: scripts/build_wheels.sh builds it for one arch (sm_80: the
quickest to compile) plus compute_100 PTX, auditwheel gives it its manylinux tag, and it is installed into a fresh
venv (no system site-packages, only the wheel + numpy + pytest) whose PATH holds no compiler.
From there it must import, report its kernels in info(), and pass the CPU test subset run
against the installed package, not the checkout.

Runs in CI (CI=true); locally SAGEATTN3_SKIP_WHEEL_TEST=1 skips it (~1 min on 2 cores).
Without nvcc the wheel is CPU-only and the test checks it says so.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARCH = "80"
PTX = "100"  # as in release wheels: PTX for GPUs newer than the cubins (+~8 s of nvcc)
# Tests that need neither torch nor a GPU nor the source tree (torch-only tests skip there).
CPU_SUBSET = ["test_reference.py", "test_cli.py", "test_comfyui_node.py"]

pytestmark = pytest.mark.skipif(
    os.environ.get("SAGEATTN3_SKIP_WHEEL_TEST") == "1" and os.environ.get("CI", "").lower() != "true",
    reason="SAGEATTN3_SKIP_WHEEL_TEST=1 (CI runs it anyway)")


def _need_source_tree():
    if not (REPO / "scripts" / "build_wheels.sh").is_file() or not (REPO / ".git").exists():
        pytest.skip("needs the source checkout (scripts/build_wheels.sh, git)")


def _build_env() -> dict:
    """The build needs numpy >= 2 and setuptools >= 77 here (--no-isolation: no downloads)."""
    import numpy
    import setuptools
    if int(numpy.__version__.split(".")[0]) < 2 or int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"building with this interpreter needs numpy >= 2 and setuptools >= 77 "
                    f"(have {numpy.__version__}, {setuptools.__version__})")
    return dict(os.environ, SAGEATTN3_NVCC_THREADS="2")


def _bare_env(venv: Path) -> dict:
    """An environment with nothing on PATH but the venv: no nvcc, gcc, cc, clang."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_HOME", "CUDA_PATH", "CC", "CXX", "PYTHONPATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV",
                        "PYTHONHOME", "PYTHONSTARTUP")}
    env["PATH"] = str(venv / "bin")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    _need_source_tree()
    env = _build_env()
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    t0 = time.perf_counter()
    r = subprocess.run(["bash", str(REPO / "scripts" / "build_wheels.sh"), "--python", sys.executable,
                        "--archs", ARCH, "--ptx", PTX, "--no-isolation", "--out", str(dist)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    build_s = time.perf_counter() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    wheels = glob.glob(str(dist / "sageattn3-*.whl"))
    assert len(wheels) == 1, (wheels, r.stderr[-3000:])
    whl = wheels[0]

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    import numpy
    pins = [f"numpy=={numpy.__version__}", f"pytest=={pytest.__version__}"]  # pip's cache serves these
    t1 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                        "--disable-pip-version-check", whl, *pins], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    print(f"\nwheel test: build {build_s:.0f} s, venv install {time.perf_counter() - t1:.0f} s: {os.path.basename(whl)}")
    return {"venv": venv, "wheel": whl, "tmp": tmp, "build_log": r.stderr}


def _py(inst, code, **kw):
    return subprocess.run([str(inst["venv"] / "bin" / "python"), "-c", code], cwd=inst["tmp"],
                          env=_bare_env(inst["venv"]), capture_output=True, text=True, timeout=300, **kw)


def test_wheel_has_an_honest_platform_tag(installed):
    name = os.path.basename(installed["wheel"])
    if "manylinux" not in name:
        pytest.skip(f"auditwheel was not available (no network?): {name} keeps its linux tag")
    # Debian 12's glibc 2.36 build: auditwheel must not claim an older glibc than the symbols need
    tag = name.rsplit("-", 1)[1]
    assert tag.startswith("manylinux_2_") and tag.endswith("_x86_64.whl"), name


def test_installed_wheel_imports_without_a_compiler(installed):
    r = _py(installed, """
import json, os, shutil, sys
for tool in ("nvcc", "gcc", "cc", "c++", "clang"):
    assert shutil.which(tool) is None, (tool, shutil.which(tool))
import sageattn3
from sageattn3._ext import _C
assert sageattn3.__file__.startswith(sys.prefix), sageattn3.__file__
print(json.dumps({"file": sageattn3.__file__, "info": sageattn3.info()}, default=str))
""")
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout.strip().splitlines()[-1])
    build = d["info"]["build"]
    assert "site-packages" in d["file"]
    if shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"):
        assert build["cuda"] is False and build["why_no_cuda"], build
        return
    assert build["cuda"] is True, build
    assert build["cuda_archs"] == [f"sm_{ARCH}"], build
    assert "mma" in build["kernels"], build  # the kernel families compiled in
    assert build["family_archs"]["mma"] == f"{ARCH} compute_{PTX}", build
    assert build["cuda_ptx"] == f"compute_{PTX}", build
    assert build["cuda_version"] and build["nvcc_host_compiler"], build


def test_cli_info_from_the_wheel(installed):
    r = subprocess.run([str(installed["venv"] / "bin" / "python"), "-m", "sageattn3", "info"], cwd=installed["tmp"],
                       env=_bare_env(installed["venv"]), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "build (sageattn3._C):" in r.stdout and "torch:" in r.stdout
    if shutil.which("nvcc"):
        assert f"sm_{ARCH}" in r.stdout and f"compute_{PTX}" in r.stdout, r.stdout


def test_cpu_subset_passes_from_the_installed_wheel(installed):
    """The CPU tests, copied away from the checkout, against the installed package (no torch
    in that venv: torch-only tests skip; the reference, CLI and node-definition tests run)."""
    tests = installed["tmp"] / "tests"
    tests.mkdir(exist_ok=True)
    for name in ["conftest.py", "bench_fakes.py", "np_reference.py", *CPU_SUBSET]:  # the subset and the helpers it imports
        shutil.copy(REPO / "tests" / name, tests / name)
    r = subprocess.run([str(installed["venv"] / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(installed["tmp"]), *[str(tests / n) for n in CPU_SUBSET]],
                       cwd=installed["tmp"], env=_bare_env(installed["venv"]), capture_output=True, text=True,
                       timeout=600)
    tail = r.stdout[-4000:] + r.stderr[-2000:]
    assert r.returncode == 0, tail
    assert " passed" in r.stdout and " failed" not in r.stdout, tail
    print("\n" + r.stdout.strip().splitlines()[-1])
