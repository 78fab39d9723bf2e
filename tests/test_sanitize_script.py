"""scripts/sanitize.sh's control flow with stand-ins for compute-sanitizer and python on PATH (no
GPU needed): memcheck once, racecheck one process per case with SANITIZE_CASE set, and a
non-zero exit when any run reports an error or runs out of time."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and timeout")

# Stand-in compute-sanitizer: logs each call (tool, SANITIZE_CASE), fails the case in FAIL_CASE
# with exit 9, sleeps past the limit in SLOW_CASE.
FAKE_SANITIZER = """#!/usr/bin/env bash
echo "$2 case=${SANITIZE_CASE:-all}" >> "$CALLS"
[ "${SANITIZE_CASE:-x}" = "${SLOW_CASE:-none}" ] && sleep 5
if [ "${SANITIZE_CASE:-x}" = "${FAIL_CASE:-none}" ]; then echo "RACECHECK SUMMARY: 3 hazards displayed"; exit 9; fi
echo "sanitize cases: 1 run, 0 with NaN"; echo "========= ERROR SUMMARY: 0 errors"
"""
FAKE_PYTHON = """#!/usr/bin/env bash
[ "$2" = "--count" ] && { echo 3; exit 0; }
exit 0
"""


def _run(tmp_path, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("compute-sanitizer", FAKE_SANITIZER), ("python", FAKE_PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    e = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", OUT=str(tmp_path), CALLS=str(calls),
             **env)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "sanitize.sh")], capture_output=True, text=True, env=e,
                       timeout=60)
    return r, calls.read_text().split("\n")[:-1]


def test_racecheck_runs_each_case_in_its_own_process(tmp_path):
    r, calls = _run(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert calls == ["memcheck case=all", "racecheck case=0", "racecheck case=1", "racecheck case=2"]
    assert "racecheck: 3 cases, one per process; all clean" in r.stdout


def test_a_hazard_or_a_timeout_fails_the_run(tmp_path):
    r, _ = _run(tmp_path, FAIL_CASE="1")
    assert r.returncode == 1 and "racecheck case 1: exit 9" in r.stdout and "3 hazards" in r.stdout
    assert "failed: 1(exit 9)" in r.stdout
    r, calls = _run(tmp_path, SLOW_CASE="2", RACE_CASE_TIMEOUT="1")
    assert r.returncode == 1 and "racecheck case 2: exit 124" in r.stdout, r.stdout


def test_memcheck_only(tmp_path):
    r, calls = _run(tmp_path, SANITIZE_RACECHECK="0")
    assert r.returncode == 0 and calls == ["memcheck case=all"] and "racecheck: skipped" in r.stdout
