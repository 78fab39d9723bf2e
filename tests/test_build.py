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
        every = [(name, archs + ns["family_ptx"](archs, "100")) for name, archs in ns["families"]()]
        facts = {"all-families": {"cuda_version": "13.0.88", "cuda_archs": "sm_80;sm_90a", "cuda_ptx": "compute_100",
                                  "nvcc_host": "g++ 12.2.0 (/usr/bin/g++)"},
                 "cpu-only": {"why_no_cuda": "SAGEATTN3_CUDA=0 was set at build time"}}
        for kind, built in (("all-families", every), ("cpu-only", [])):
            d = tmp_path_factory.mktemp(kind)
            ns["write_build_config"](d, built)
            ns["write_build_info"](d, facts[kind])
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
    defines = []
    if config == "all-families":  # as setup.py builds with CUDA: sa3_nocuda.c left out
        sources = [s for s in sources if s.name != "sa3_nocuda.c"]
        defines = ["-DSA3_HAVE_CUDA=1"]
    if name == "mingw-w64":
        sources = [s for s in sources if not _needs_python(s)]
        assert sources, "every csrc/ file needs Python.h?"
        sys_inc = []
    else:
        sys_inc = ["-isystem", sysconfig.get_paths()["include"], "-isystem", numpy.get_include()]
    cmd = [cc, "-std=c11", "-pedantic-errors", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
           "-Wno-missing-field-initializers", "-fsyntax-only", "-Icsrc", "-Icuda/common",
           f"-I{generated_headers[config]}", *defines, *sys_inc,
           *[str(s.relative_to(REPO)) for s in sources]]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr[-6000:]}"


# ----------------------------------------------------------------------------- setup.py helpers

@pytest.fixture
def setup_ns(monkeypatch):
    if not (REPO / "setup.py").exists():
        pytest.skip("needs the source tree")
    return setup_namespace(monkeypatch)


def test_ptx_choice(setup_ns, monkeypatch):
    choose = setup_ns["choose_ptx"]
    monkeypatch.delenv("SAGEATTN3_CUDA_ARCHS", raising=False)
    monkeypatch.delenv("SAGEATTN3_CUDA_PTX", raising=False)
    assert choose(None) == "100"  # the default arch list gets PTX for newer GPUs
    monkeypatch.setenv("SAGEATTN3_CUDA_ARCHS", "90a")
    assert choose(None) is None  # an explicit arch list gets PTX only when asked
    for text, want in (("100", "100"), ("compute_120", "120"), ("none", None), ("", None)):
        monkeypatch.setenv("SAGEATTN3_CUDA_PTX", text)
        assert choose(None) == want, text
    monkeypatch.setenv("SAGEATTN3_CUDA_PTX", "90a")
    with pytest.raises(RuntimeError, match="portable target"):
        choose(None)
    # PTX goes to families with a portable target only (wgmma-only families can't run elsewhere)
    assert setup_ns["family_ptx"](["80", "86", "89", "90a", "120a"], "100") == ["compute_100"]
    assert setup_ns["family_ptx"](["90a"], "100") == []
    assert setup_ns["family_ptx"](["80"], None) == []
    assert [setup_ns["target_code"](a) for a in ("80", "90a", "compute_100")] == [800, 901, 1002]


def test_build_info_header_escapes_strings(setup_ns, tmp_path):
    setup_ns["write_build_info"](tmp_path, {"cuda_version": "13.0.88", "cuda_archs": "sm_80;sm_90a",
                                            "cuda_ptx": "compute_100", "nvcc_host": r'msvc 19.38 (C:\VS "x")',
                                            "why_no_cuda": None})
    text = (tmp_path / "sa3_build_info.h").read_text()
    assert '#define SA3_BUILD_CUDA_PTX "compute_100"' in text
    assert r'#define SA3_BUILD_NVCC_HOST "msvc 19.38 (C:\\VS \"x\")"' in text
    assert '#define SA3_BUILD_WHY_NO_CUDA ""' in text


def test_family_runs_on_reads_ptx_targets(tmp_path):
    """sa3_family_runs_on (cuda/common/sa3_family.h): cubin sm_80 runs on 8.x, sm_90a on 9.0
    only, compute_100 PTX on every GPU from 10.0 up."""
    cc = shutil.which("gcc") or shutil.which("clang")
    if cc is None or not (REPO / "cuda" / "common" / "sa3_family.h").is_file():
        pytest.skip("needs a C compiler and the source tree")
    (tmp_path / "t.c").write_text(textwrap.dedent("""
        #include <stdio.h>
        #include "sa3_family.h"
        int main(void) {
            static const int t1[] = {800, 1002}, t2[] = {901};
            sa3_family a = {0}, b = {0};
            static const int archs[] = {75, 80, 86, 89, 90, 100, 103, 110, 120, 121};
            size_t i;
            a.targets = t1; a.n_targets = 2; b.targets = t2; b.n_targets = 1;
            for (i = 0; i < sizeof archs / sizeof archs[0]; i++)
                printf("%d:%d%d ", archs[i], sa3_family_runs_on(&a, archs[i]), sa3_family_runs_on(&b, archs[i]));
            return 0;
        }
    """))
    exe = tmp_path / "t"
    r = subprocess.run([cc, "-std=c11", "-I", str(REPO / "cuda" / "common"), str(tmp_path / "t.c"), "-o", str(exe)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60).stdout.split()
    assert out == ["75:00", "80:10", "86:10", "89:10", "90:01", "100:10", "103:10", "110:10", "120:10", "121:10"]


# MSVC: parsed on any OS from what cl.exe / vcvarsall print; the real thing runs in the Windows
# wheel workflow only.
def test_msvc_versions_and_c11_checks(setup_ns):
    parse_cl, parse_sdk, check = setup_ns["parse_cl_version"], setup_ns["parse_winsdk_version"], setup_ns["check_msvc_c11"]
    banner = "Microsoft (R) C/C++ Optimizing Compiler Version 19.38.33134 for x64\nCopyright (C) Microsoft"
    assert parse_cl(banner) == (19, 38, 33134) and parse_cl("no banner") is None
    assert parse_sdk({"WINDOWSSDKVERSION": "10.0.22621.0\\"}) == (10, 0, 22621, 0)
    assert parse_sdk({"INCLUDE": r"C:\VS\include;C:\Program Files (x86)\Windows Kits\10\include\10.0.19041.0\ucrt;"}) \
        == (10, 0, 19041, 0)
    assert parse_sdk({}) is None
    check((19, 38, 33134), (10, 0, 22621, 0))  # VS 2022 + Windows 11 SDK: fine
    with pytest.raises(RuntimeError, match=r"cl.exe 19.16.27045 is older than 19.28: /std:c11 needs Visual Studio 2019 16.8"):
        check((19, 16, 27045), (10, 0, 22621, 0))
    with pytest.raises(RuntimeError, match=r"Windows SDK 10.0.19041.0 is older than 10.0.20348"):
        check((19, 29, 30133), (10, 0, 19041, 0))
    with pytest.raises(RuntimeError, match="could not read cl.exe's version"):
        check(None, (10, 0, 22621, 0))


def test_msvc_found_through_setuptools_helper(setup_ns, monkeypatch, tmp_path):
    """Without a Developer Prompt, msvc_env asks setuptools' MSVC helper (vcvarsall's
    environment) and msvc_for_nvcc finds cl.exe on that PATH, checks it, returns -ccbin."""
    import types
    bindir = tmp_path / "VC" / "bin"
    bindir.mkdir(parents=True)
    cl = bindir / "cl.exe"
    cl.write_text("#!/bin/sh\necho 'Microsoft (R) C/C++ Optimizing Compiler Version 19.29.30133 for x64' >&2\n")
    cl.chmod(0o755)
    seen = []

    def fake_get_vc_env(plat_spec):
        seen.append(plat_spec)
        return {"path": str(bindir), "include": r"C:\Windows Kits\10\include\10.0.22621.0\ucrt", "lib": "L",
                "windowssdkversion": "10.0.22621.0\\"}
    fake = types.ModuleType("fake_msvc")
    fake._get_vc_env = fake_get_vc_env
    monkeypatch.setitem(sys.modules, "setuptools._distutils.compilers.C.msvc", fake)
    monkeypatch.delenv("INCLUDE", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    ccbin, env, version = setup_ns["msvc_for_nvcc"]()
    assert seen == ["x64"] and ccbin == str(bindir) and version == (19, 29, 30133)
    assert env["INCLUDE"].endswith("ucrt") and env["WINDOWSSDKVERSION"].startswith("10.0.22621")


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


def test_cpu_only_build_says_so_once_at_import(cpu_only_build):
    """Visible with Python's default warning filters, once per process, with how to get kernels."""
    r = _run(cpu_only_build, """
        import sageattn3
        import sageattn3.api, sageattn3._info
        from sageattn3 import _ext
        sageattn3.info()
        _ext.build_info()
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    assert r.stderr.count("NoKernelsWarning") == 1, r.stderr
    assert "SAGEATTN3_CUDA=0 was set at build time" in r.stderr and "To get kernels" in r.stderr, r.stderr
    assert "--no-deps" in r.stderr and "python -m sageattn3 info" in r.stderr, r.stderr


def test_kernel_build_does_not_warn_at_import():
    from sageattn3 import _ext
    if not _ext.has_kernels():
        pytest.skip("this build has no kernels (test_cpu_only_build_says_so_once_at_import covers it)")
    pkg_parent = Path(_ext.__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", "import sageattn3"], cwd=pkg_parent, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "NoKernelsWarning" not in r.stderr, r.stderr


def test_rebuild_advice_never_touches_other_packages():
    """`pip install --force-reinstall .` without --no-deps upgraded numpy 1.26 -> 2.4 in a test venv."""
    import re
    from sageattn3 import _ext, _info
    texts = [_info.HOW_TO_GET_KERNELS, _ext._checkout_message(), _ext.LOAD_ERROR or ""]
    commands = re.findall(r"pip install[^`\"\n;)]*", " ".join(texts))
    assert commands, "the advice names a pip command"
    for cmd in commands:
        if "-e ." in cmd or "--force-reinstall" in cmd or cmd.rstrip().endswith("."):
            assert "--no-deps" in cmd, cmd
    assert "--no-deps" in _info.HOW_TO_GET_KERNELS and "stay as they are" in _info.HOW_TO_GET_KERNELS


def test_cuda_objects_make_the_library_stale(setup_ns, tmp_path):
    """A rebuild after editing only a .cu file relinks: the fresh objects count as dependencies."""
    import time
    from setuptools import Extension
    try:
        from setuptools.modified import newer_group
    except ImportError:  # setuptools < 69
        from distutils.dep_util import newer_group
    src, lib, obj = tmp_path / "a.c", tmp_path / "_C.so", tmp_path / "k.o"
    src.write_text("")
    lib.write_text("")
    time.sleep(0.05)
    obj.write_text("")  # nvcc just wrote it: newer than the library, the C source is not
    ext = Extension("sageattn3._C", sources=[str(src)])
    setup_ns["attach_cuda_objects"](ext, [str(obj)])
    assert ext.extra_objects == [str(obj)]
    assert newer_group(ext.sources + ext.depends, str(lib), "newer")
