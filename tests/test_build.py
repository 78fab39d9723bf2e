"""The CPU-only build: SAGEATTN3_CUDA=0 (or no nvcc) still gives a working package that says
why it has no kernels and serves attention through SDPA. Built into a temporary folder so the
installed package under test is untouched."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cpu_only_build(tmp_path_factory):
    if not (REPO / "setup.py").exists():
        pytest.skip("needs the source tree")
    tmp = tmp_path_factory.mktemp("cpu_build")
    lib = tmp / "lib"
    env = dict(os.environ, SAGEATTN3_CUDA="0")
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib", str(lib), "--build-temp",
                        str(tmp / "obj")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "building WITHOUT CUDA kernels: SAGEATTN3_CUDA=0" in r.stderr, "the build must say why"
    pkg = lib / "sageattn3"
    for src in (REPO / "sageattn3").rglob("*.py"):  # the pure-Python part beside the fresh _C
        dst = pkg / src.relative_to(REPO / "sageattn3")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return lib


def _run(lib, code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=lib, capture_output=True,
                          text=True, timeout=300)


def test_cpu_only_build_reports_why(cpu_only_build):
    r = _run(cpu_only_build, """
        import sageattn3
        from sageattn3._ext import _C
        b = _C.build_info()
        assert b["cuda"] is False and b["cuda_archs"] == [], b
        assert "SAGEATTN3_CUDA=0" in b["why_no_cuda"], b
        assert _C.HAS_CUDA == 0
        text = str(sageattn3.info())
        assert "SAGEATTN3_CUDA=0" in text, text
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


def test_cpu_only_build_serves_sdpa_and_reference(cpu_only_build):
    pytest.importorskip("torch")
    r = _run(cpu_only_build, """
        import numpy as np, torch
        import sageattn3
        from sageattn3 import _dispatch
        from sageattn3._ext import _C
        q, k, v = (torch.randn(1, 2, 300, 64, dtype=torch.bfloat16) for _ in range(3))
        out = sageattn3.sageattn(q, k, v)
        assert torch.equal(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))
        reason = _dispatch._STATIC_REASON
        assert reason and "SAGEATTN3_CUDA=0" in reason, reason
        x = np.random.default_rng().standard_normal((1, 1, 9, 32)).astype(np.float32)
        assert np.isfinite(_C.reference_attention(x, x, x, mode="int8-fp8")).all()
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


# ----------------------------------------------------------------------------- portable C11

def _includes(path: Path) -> list:
    import re
    return re.findall(r'^\s*#\s*include\s+"([^"]+)"', path.read_text(), re.M)


def _needs_python(path: Path, seen=None) -> bool:
    """Whether a csrc/ file includes Python.h (directly or through our own headers)."""
    seen = set() if seen is None else seen
    if path in seen or not path.is_file():
        return False
    seen.add(path)
    if "<Python.h>" in path.read_text():
        return True
    return any(_needs_python((path.parent / inc).resolve(), seen) for inc in _includes(path))


# gcc and clang compile every csrc/ file against this Python's and numpy's headers (as system
# headers: their macros are not ours to fix). mingw-w64 compiles the files that need no Python
# headers: a Windows pyconfig.h is not on a Linux machine (the Windows wheel workflow builds the
# rest with MSVC). .ci/run installs clang and mingw-w64 when the mirror answers in time.
COMPILERS = {"gcc": "gcc", "clang": "clang", "mingw-w64": "x86_64-w64-mingw32-gcc"}


def setup_namespace(monkeypatch):
    """setup.py's functions, without running setup() (and without looking for nvcc)."""
    import runpy
    import setuptools
    monkeypatch.setattr(setuptools, "setup", lambda **kw: None)
    monkeypatch.setenv("SAGEATTN3_CUDA", "0")
    return runpy.run_path(str(REPO / "setup.py"), run_name="sageattn3_setup")


@pytest.fixture(scope="module")
def generated_headers(tmp_path_factory):
    """The headers setup.py generates, for a build with every family and for a CPU-only one."""
    mp = pytest.MonkeyPatch()
    try:
        ns = setup_namespace(mp)
        out = {}
        for kind, built in (("all-families", ns["families"]()), ("cpu-only", [])):
            d = tmp_path_factory.mktemp(kind)
            ns["write_build_config"](d, built)
            out[kind] = d
        return out
    finally:
        mp.undo()


@pytest.mark.parametrize("config", ["all-families", "cpu-only"])
@pytest.mark.parametrize("name", list(COMPILERS))
def test_csrc_is_pedantic_c11(name, config, generated_headers):
    if not (REPO / "csrc").is_dir():
        pytest.skip("needs the source tree")
    cc = shutil.which(COMPILERS[name])
    if cc is None:
        pytest.skip(f"{COMPILERS[name]} not installed (.ci/run installs it when apt answers in time)")
    import numpy
    import sysconfig
    sources = sorted((REPO / "csrc").glob("*.c"))
    if name == "mingw-w64":
        sources = [s for s in sources if not _needs_python(s)]
        assert sources, "every csrc/ file needs Python.h?"
        sys_inc = []
    else:
        sys_inc = ["-isystem", sysconfig.get_paths()["include"], "-isystem", numpy.get_include()]
    cmd = [cc, "-std=c11", "-pedantic-errors", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
           "-Wno-missing-field-initializers", "-fsyntax-only", "-Icsrc", "-Icuda/common",
           f"-I{generated_headers[config]}", *sys_inc,
           *[str(s.relative_to(REPO)) for s in sources]]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr[-6000:]}"
