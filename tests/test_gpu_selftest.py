"""The first-call self-test (sageattn3/_selftest.py) on a real GPU, forced on sm_90 where both
families are verified (tests/test_selftest.py covers the same paths with stand-ins on CPU):

  SAGEATTN3_SELF_TEST=force       the self-test runs on the real kernels and passes;
  SAGEATTN3_SELF_TEST=force-fail  it runs, its comparison is corrupted: hopper is disabled for
                                  the process, SDPA serves the call, one WARNING, stats key;
  a CUDA graph captured before any eager call falls back inside the capture (self_test_pending)
  and the next eager call runs the self-test.
Each test starts and ends with a fresh self-test state, whatever SAGEATTN3_SELF_TEST says.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import sageattn3  # noqa: E402
from sageattn3 import _dispatch, _policy, _selftest, _stats  # noqa: E402
from sageattn3._ext import _C  # noqa: E402

from gpu_helpers import fresh, random_qkv  # noqa: E402,F401 (fresh: a fixture)

_FAMS = (_C.device_info(torch.cuda.current_device()).get("families", [])
         if torch.cuda.is_available() and _C is not None and _C.HAS_CUDA else [])
if _FAMS and _C.device_info(torch.cuda.current_device())["sm_arch"] != 90:  # consumer limits: hopper declines
    _FAMS = [f for f in _FAMS if f != "hopper"]
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _FAMS, reason="no kernel family runs on this GPU/build")]


def _dev():
    return torch.cuda.current_device()


@pytest.mark.parametrize("family", ["hopper", "mma"])
def test_force_runs_the_self_test_and_it_passes(fresh, family):
    if family not in _FAMS:
        pytest.skip(f"{family} does not run here")
    fresh.setenv("SAGEATTN3_SELF_TEST", "force")
    q, k, v = random_qkv()
    out = sageattn3.sageattn(q, k, v, tensor_layout="NHD_FLAT", heads=2, kernel=family)
    torch.cuda.synchronize()
    st = _selftest._status[(_dev(), family)]
    assert st.state == "passed", st.detail
    assert st.results and all(r.status in ("PASS", "SKIP") for r in st.results)
    assert _stats.stats()["served"] == {family: 1} and torch.isfinite(out).all()
    for _ in range(5):  # cached: no second run
        sageattn3.sageattn(q, k, v, tensor_layout="NHD_FLAT", heads=2, kernel=family)
    assert _stats.stats()["served"] == {family: 6} and (_dev(), family) in _dispatch._trusted


def test_force_fail_disables_hopper_and_sdpa_serves(fresh, caplog):
    if "hopper" not in _FAMS:
        pytest.skip("hopper does not run here")
    fresh.setenv("SAGEATTN3_SELF_TEST", "force-fail")
    q, k, v = random_qkv(s=8192, h=1)  # Sq*Sk = 8192^2: kernel="auto" picks hopper on sm_90
    with caplog.at_level(logging.WARNING, logger="sageattn3"):
        out = sageattn3.sageattn(q, k, v, tensor_layout="NHD_FLAT", heads=1)
        out2 = sageattn3.sageattn(q, k, v, tensor_layout="NHD_FLAT", heads=1)
    ref = _dispatch.sdpa(q, k, v, layout="NHD_FLAT", heads=1)
    assert torch.equal(out, ref) and torch.equal(out2, ref)
    assert _selftest._status[(_dev(), "hopper")].state == "failed"
    assert _stats.stats() == {"served": {}, "fallback": {"self_test_failed": 2}}
    (rec,) = [r for r in caplog.records if r.name == "sageattn3"]
    msg = rec.getMessage()
    assert "hopper" in msg and torch.cuda.get_device_name() in msg and "python -m sageattn3 check" in msg
    assert "above bound" in msg and "force-fail" in msg


def test_capture_before_any_eager_call_falls_back_then_eager_tests(fresh):
    if "hopper" not in _FAMS:
        pytest.skip("hopper does not run here")
    fresh.setenv("SAGEATTN3_SELF_TEST", "force")  # sm_90 is verified: force makes the test due
    q, k, v = random_qkv(h=2)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # SDPA's own warm-up, outside the capture
        _dispatch.sdpa(q, k, v, layout="NHD_FLAT", heads=2)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = sageattn3.sageattn(q, k, v, tensor_layout="NHD_FLAT", heads=2, kernel="hopper")
    graph.replay()
    torch.cuda.synchronize()
    assert torch.allclose(out, _dispatch.sdpa(q, k, v, layout="NHD_FLAT", heads=2), atol=2e-2, rtol=0)
    assert _stats.stats()["fallback"] == {"self_test_pending": 1}
    assert (_dev(), "hopper") not in _selftest._status
    sageattn3.sageattn(q, k, v, tensor_layout="NHD_FLAT", heads=2, kernel="hopper")
    assert _selftest._status[(_dev(), "hopper")].state == "passed"
    assert _stats.stats()["served"] == {"hopper": 1}


@pytest.mark.parametrize("env,want,rc", [(None, "verified", 0), ("force", "passed", 0), ("force-fail", "failed", 1)])
def test_check_reports_the_self_test(tmp_path, env, want, rc):
    out = tmp_path / "check.json"
    e = dict(os.environ)
    e.pop("SAGEATTN3_SELF_TEST", None)
    if env:
        e["SAGEATTN3_SELF_TEST"] = env
    r = subprocess.run([sys.executable, "-m", "sageattn3", "check", "--json", str(out)], capture_output=True,
                       text=True, env=e, timeout=300)
    rep = json.loads(out.read_text())
    # a family verified nowhere on this arch (nvfp4 on sm_90: emulated MMA) runs its self-test even by default
    arch = _C.device_info(_dev())["sm_arch"]
    wants = {f: want if env or (f, arch) in _policy.VERIFIED else "passed" for f in _FAMS}
    assert {f: s["state"] for f, s in rep["self_test"].items()} == wants, rep["self_test"]
    rows = [x for x in rep["results"] if x["section"] == "selftest" and x["status"] != "SKIP"]
    assert len(rows) == len(_FAMS) and sorted(x["mode"] for x in rows) == sorted(wants.values())
    if rc == 0:
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    else:
        assert r.returncode == 1 and "failed its self-test" in r.stderr
