"""The README's test command passes where torch is not installed.

torch is optional for `import sageattn3` (the CPU reference and the CLI's info/check work
without it), so the suite must skip what needs torch instead of failing. A subprocess runs
the suite with a stand-in `torch` package first on PYTHONPATH whose import raises
ModuleNotFoundError, as in a venv without torch; PYTHONPATH carries it into every subprocess
the tests start (the CLI tests run `python -m sageattn3`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sageattn3

TESTS = Path(__file__).resolve().parent
INNER = "SAGEATTN3_TEST_NO_TORCH_INNER"


def blocked_torch_env(tmp_path: Path) -> dict:
    """os.environ with `import torch` failing (ModuleNotFoundError) and sageattn3 importable from
    where this process imported it."""
    block = tmp_path / "block"
    (block / "torch").mkdir(parents=True)
    (block / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch' (blocked by test_no_torch)\", name='torch')\n")
    pkg_parent = str(Path(sageattn3.__file__).resolve().parent.parent)
    path = [str(block), pkg_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), **{INNER: "1"})


@pytest.mark.skipif(os.environ.get(INNER) == "1", reason="already inside the no-torch run")
def test_readme_test_command_passes_without_torch(tmp_path):
    env = blocked_torch_env(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, "the torch block must work"
    # The fuzz test is deselected: its torch-free part (_C) runs in the outer suite already.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS),
           "--deselect", str(TESTS / "test_fuzz.py"), "-x"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    tail = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, tail
    assert " passed" in r.stdout and " failed" not in r.stdout, tail
