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
