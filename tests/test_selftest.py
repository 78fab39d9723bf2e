"""Self-test before trust (sageattn3/_selftest.py), CPU only: everything through stand-ins.

The dispatcher's GPU branch (`_dispatch._serve`) is driven with a stand-in Problem (as in
tests/test_policy.py), the device query, the capture query and the device run are replaced,
and the self-test's own judging runs for real on CPU tensors with a stand-in kernel (the C
reference in the same mode, tests/test_cli.py). The H200 runs of the same paths:
tests/test_gpu_selftest.py.
"""
from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

import sageattn3  # noqa: E402
from sageattn3 import _check, _dispatch, _info, _policy, _selftest, _stats  # noqa: E402
from sageattn3._ext import _C  # noqa: E402

from test_cli import _standin_kernel  # noqa: E402

pytestmark = pytest.mark.skipif(_C is None, reason="no C extension")


class FakeProblem:
    """What _C.problem returns for CUDA tensors, as far as _serve looks at it: select() answers
    with the first family of the plan (up to "sdpa") that this fake device `serves`."""

    def __init__(self, device=0, arch=120, serves=("mma", "hopper"), nbytes=4096):
        self.device, self.sm_arch, self.serves, self.nbytes = device, arch, serves, nbytes
        self.is_causal, self.seq_k = False, 4096
        self.selected, self.launched = [], []

    def select(self, plan, min_scores, lse=None):
        self.selected.append((plan, lse))
        for e in plan:
            if e == "sdpa":
                break
            if e[0] in self.serves:
                return e[0], self.nbytes
        return None, "sdpa_faster", "fake: nothing asked serves"

    def launch(self, out, ws_ptr, ws_bytes, stream):
        self.launched.append(ws_bytes)


class Device:
    """The replaced device side: capture flag, card name, and what each self-test run returns."""

    def __init__(self):
        self.capturing = False
        self.runs = []            # (dev, family, arch, corrupt) per self-test run
        self.verdict = {}         # (dev, family) -> Status to return; default: a real CPU run

    def run(self, dev, family, arch, corrupt):
        self.runs.append((dev, family, arch, corrupt))
        st = self.verdict.get((dev, family))
        if st is not None:
            return st
        return _selftest.run_self_test(torch, family, arch, "cpu", kernel_fn=_standin_kernel(torch), corrupt=corrupt,
                                       seed=3)


@pytest.fixture
def device(monkeypatch):
    d = Device()
    monkeypatch.setattr(_dispatch, "_STATIC", None)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda dev: 1234, raising=False)
    monkeypatch.setattr(_selftest, "_capturing", lambda dev: d.capturing)
    monkeypatch.setattr(_selftest, "_device_name", lambda dev: (f"Fake RTX 5090 #{dev}", 120))
    monkeypatch.setattr(_selftest, "_run_on_device", d.run)
    monkeypatch.delenv("SAGEATTN3_SELF_TEST", raising=False)
    _selftest.reset()
    sageattn3.reset_stats()
    yield d
    _selftest.reset()
    sageattn3.reset_stats()


def _failed(detail="case 'odd 77x77, HND' mma pv=fp8, rel-L1 vs float64 0.4100 (bound 0.0480)"):
    return _selftest.Status("failed", detail)


Q = torch.randn(1, 2, 65, 64, dtype=torch.float16)


def serve(prob, kernel="auto", pv="auto", lse=None):
    return _dispatch._serve(prob, Q, Q, Q, kernel, pv, lse=lse)


def run_call(monkeypatch, prob, kernel="auto"):
    """The whole decision (`_dispatch.run`: a family or the SDPA fallback) with `prob` as the
    validated call."""
    monkeypatch.setattr(_dispatch, "problem", lambda *a, **k: prob)
    return _dispatch.run(Q, Q, Q, layout="HND", heads=None, is_causal=False, sm_scale=None, kernel=kernel, pv="auto")


# ----------------------------------------------------------------------------- the self-test itself

def test_real_judging_passes_a_correct_kernel_in_every_pv_mode():
    st = _selftest.run_self_test(torch, "mma", 120, "cpu", kernel_fn=_standin_kernel(torch), seed=11)
    assert st.state == "passed", st.detail
    cases = {r.case for r in st.results}
    assert len(cases) == len(_selftest._cases()) >= 4
    assert {r.mode for r in st.results} == {"mma pv=fp16", "mma pv=fp8", "mma pv=fp8_f16acc"}
    assert all(r.status == "PASS" and r.vs_ref is not None for r in st.results)
    kinds = _selftest._cases()
    assert any(c.causal for c in kinds) and any(c.hq != c.hkv for c in kinds)
    assert any(c.layout == "NHD_FLAT" for c in kinds) and any(c.sq % 2 for c in kinds)


def test_fp8_is_not_asked_below_sm89_and_still_passes():
    st = _selftest.run_self_test(torch, "mma", 86, "cpu", kernel_fn=_standin_kernel(torch), seed=2)
    assert st.state == "passed"
    assert {r.status for r in st.results if r.mode in ("mma pv=fp8", "mma pv=fp8_f16acc")} == {"SKIP"}


@pytest.mark.parametrize("bug,expect", [("scale", "above bound"), ("tail", "non-finite")])
def test_real_judging_fails_a_wrong_kernel(bug, expect):
    st = _selftest.run_self_test(torch, "mma", 120, "cpu", kernel_fn=_standin_kernel(torch, bug), seed=4)
    assert st.state == "failed" and expect in st.detail
    assert st.detail.startswith("case '") and "bound" in st.detail


def test_corrupt_fails_a_correct_kernel():  # SAGEATTN3_SELF_TEST=force-fail
    st = _selftest.run_self_test(torch, "mma", 120, "cpu", kernel_fn=_standin_kernel(torch), corrupt=True, seed=5)
    assert st.state == "failed" and "above bound" in st.detail


def test_exceptions_fail():
    def boom(*a):
        raise RuntimeError("illegal memory access")

    st = _selftest.run_self_test(torch, "mma", 120, "cpu", kernel_fn=boom, seed=1)
    assert st.state == "failed" and "RuntimeError: illegal memory access" in st.detail


def test_an_exception_outside_the_cases_fails(monkeypatch):
    def broken(*a, **k):
        raise MemoryError("out of memory")

    monkeypatch.setattr(_check, "_check_family", broken)
    st = _selftest.run_self_test(torch, "mma", 120, "cpu", kernel_fn=_standin_kernel(torch))
    assert st.state == "failed" and "raised MemoryError: out of memory" in st.detail


def test_a_kernel_that_declines_every_case_is_not_trusted():
    def decline(*a):
        raise _C.UnsupportedError("smem_limit: needs 114688 bytes")

    st = _selftest.run_self_test(torch, "mma", 120, "cpu", kernel_fn=decline, seed=1)
    assert st.state == "failed" and "no self-test case ran" in st.detail


# ----------------------------------------------------------------------------- dispatcher paths

def test_pass_runs_once_then_costs_a_set_lookup(device, monkeypatch):
    prob = FakeProblem(arch=120)
    for _ in range(50):
        out, key, _ = serve(prob)
        assert key is None and out is not None
    assert device.runs == [(0, "mma", 120, False)]
    assert _selftest._status[(0, "mma")].state == "passed"
    assert (0, "mma") in _dispatch._trusted
    assert len(prob.launched) == 50 and _stats.stats()["served"] == {"mma": 50}

    def must_not_run(*a):
        raise AssertionError("admit() asked after the pass")

    monkeypatch.setattr(_selftest, "admit", must_not_run)
    assert serve(prob)[1] is None


def test_fail_disables_the_family_and_sdpa_serves(device, monkeypatch, caplog):
    device.verdict[(0, "mma")] = _failed()
    prob = FakeProblem(arch=120)
    with caplog.at_level(logging.INFO, logger="sageattn3"):
        outs = [run_call(monkeypatch, prob) for _ in range(5)]
    ref = _dispatch.sdpa(Q, Q, Q, layout="HND")
    assert all(torch.equal(o, ref) for o in outs)
    assert prob.launched == [] and len(device.runs) == 1
    assert _stats.stats() == {"served": {}, "fallback": {"self_test_failed": 5}}
    lines = [r for r in caplog.records if r.name == "sageattn3"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING, [r.getMessage() for r in lines]
    msg = lines[0].getMessage()
    for part in ("mma", "cuda:0", "Fake RTX 5090", "sm_120", "odd 77x77", "0.4100", "bound 0.0480",
                 "python -m sageattn3 check", "open an issue", "self_test_failed"):
        assert part in msg, (part, msg)
    assert "self_test_failed" in _stats.details()


def test_fail_then_the_next_family_in_the_plan_serves(device, monkeypatch):
    monkeypatch.setitem(_policy.AUTO_ORDER, 120, ("hopper", "mma", "sdpa"))
    monkeypatch.setattr(_policy, "_plans", {})
    device.verdict[(0, "hopper")] = _failed()
    prob = FakeProblem(arch=120)
    lse = object()
    out, key, _ = serve(prob, lse=lse)
    assert key is None and out is not None
    assert [r[1] for r in device.runs] == ["hopper", "mma"]
    # asked again without hopper, with the same lse
    assert prob.selected[-1] == ((("mma", "fp8_f16acc"), ("mma", "fp8")), lse)
    assert _stats.stats()["served"] == {"mma": 1}
    serve(prob)
    assert len(device.runs) == 2 and _stats.stats()["served"] == {"mma": 2}


def test_a_failure_is_per_device(device, monkeypatch):
    device.verdict[(1, "mma")] = _failed()
    p0, p1 = FakeProblem(device=0), FakeProblem(device=1)
    for _ in range(3):
        assert serve(p0)[1] is None
        assert serve(p1)[1] == "self_test_failed"
    assert sorted(r[:2] for r in device.runs) == [(0, "mma"), (1, "mma")]
    assert len(p0.launched) == 3 and p1.launched == []


def test_exception_in_a_run_disables(device, monkeypatch):
    def boom(*a):
        raise RuntimeError("an illegal memory access was encountered")

    monkeypatch.setattr(_selftest, "_run_on_device",
                        lambda dev, fam, arch, corrupt: _selftest.run_self_test(torch, fam, arch, "cpu", kernel_fn=boom))
    out, key, detail = serve(FakeProblem())
    assert out is None and key == "self_test_failed" and "illegal memory access" in detail


def test_skip_env_trusts_and_says_so_once_at_info(device, monkeypatch, caplog):
    monkeypatch.setenv("SAGEATTN3_SELF_TEST", "0")
    prob = FakeProblem()
    with caplog.at_level(logging.INFO, logger="sageattn3"):
        for _ in range(3):
            assert serve(prob)[1] is None
        serve(FakeProblem(device=1))
    assert device.runs == []
    lines = [r for r in caplog.records if r.name == "sageattn3"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and "without a self-test" in lines[0].getMessage()
    assert _selftest._status[(0, "mma")].state == "skipped"


def test_verified_pairs_are_not_tested(device):
    device.capturing = True  # nothing to run, so a first use inside a capture is served too
    prob = FakeProblem(arch=90, serves=("hopper",))
    assert serve(prob, kernel="hopper")[1] is None
    assert serve(FakeProblem(arch=90), kernel="mma")[1] is None
    assert device.runs == []
    assert _selftest._status[(0, "hopper")].state == "verified"
    assert "H200" in _selftest._status[(0, "hopper")].detail


def test_force_runs_on_verified_pairs(device, monkeypatch):
    monkeypatch.setenv("SAGEATTN3_SELF_TEST", "force")
    assert serve(FakeProblem(arch=90), kernel="mma")[1] is None
    assert device.runs == [(0, "mma", 90, False)]
    assert _selftest._status[(0, "mma")].state == "passed"


def test_force_fail_runs_the_failure_path_end_to_end(device, monkeypatch, caplog):
    monkeypatch.setenv("SAGEATTN3_SELF_TEST", "force-fail")
    prob = FakeProblem(arch=90)
    with caplog.at_level(logging.WARNING, logger="sageattn3"):
        out = run_call(monkeypatch, prob, kernel="mma")
    assert device.runs == [(0, "mma", 90, True)]  # the real CPU judging, outputs corrupted
    assert torch.equal(out, _dispatch.sdpa(Q, Q, Q, layout="HND"))
    assert _stats.stats()["fallback"] == {"self_test_failed": 1}
    (rec,) = [r for r in caplog.records if r.name == "sageattn3"]
    assert "above bound" in rec.getMessage() and "force-fail" in rec.getMessage()


def test_unknown_env_value_warns_once_and_tests(device, monkeypatch, caplog):
    monkeypatch.setenv("SAGEATTN3_SELF_TEST", "maybe")
    with caplog.at_level(logging.WARNING, logger="sageattn3"):
        assert serve(FakeProblem())[1] is None
        serve(FakeProblem(device=1))
    assert len(device.runs) == 2
    assert sum("'maybe'" in r.getMessage() for r in caplog.records) == 1


def test_capture_refuses_to_trust_then_the_next_eager_call_tests(device, monkeypatch, caplog):
    device.capturing = True
    prob = FakeProblem()
    with caplog.at_level(logging.INFO, logger="sageattn3"):
        for _ in range(3):
            out = run_call(monkeypatch, prob)
            assert torch.equal(out, _dispatch.sdpa(Q, Q, Q, layout="HND"))
    assert device.runs == [] and prob.launched == [] and (0, "mma") not in _selftest._status
    assert _stats.stats()["fallback"] == {"self_test_pending": 3}
    lines = [r for r in caplog.records if r.name == "sageattn3"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "eager call" in lines[0].getMessage() and "capturing" in lines[0].getMessage()
    device.capturing = False
    assert serve(prob)[1] is None
    assert len(device.runs) == 1 and len(prob.launched) == 1


def test_capture_does_not_matter_once_trusted(device):
    prob = FakeProblem()
    assert serve(prob)[1] is None
    device.capturing = True
    assert serve(prob)[1] is None and len(prob.launched) == 2


def test_cpu_tensors_never_reach_the_self_test(monkeypatch):
    def must_not_run(*a):
        raise AssertionError("self-test on a CPU call")

    monkeypatch.setattr(_selftest, "admit", must_not_run)
    out = sageattn3.sageattn(Q, Q, Q, kernel="mma")
    assert out.shape == Q.shape


def test_the_fake_implementation_never_tests(monkeypatch):
    pytest.importorskip("torch._subclasses.fake_tensor")
    from torch._subclasses.fake_tensor import FakeTensorMode

    from sageattn3 import _op  # noqa: F401 - registers the op

    def must_not_run(*a, **k):
        raise AssertionError("the dispatcher ran under fake tensors")

    monkeypatch.setattr(_dispatch, "_serve", must_not_run)
    monkeypatch.setattr(_selftest, "admit", must_not_run)
    with FakeTensorMode():
        q = torch.empty(1, 2, 65, 64, dtype=torch.float16)
        out = torch.ops.sageattn3.attention(q, q, q, "HND", 0, False, None, "auto", "auto")
        out2, lse = torch.ops.sageattn3.attention_lse(q, q, q, "HND", 0, False, None, "auto", "auto")
    assert tuple(out.shape) == tuple(q.shape) and tuple(lse.shape) == (1, 2, 65)


# ----------------------------------------------------------------------------- reports

def test_check_reports_the_self_test_per_family(device, monkeypatch):
    facts = {"name": "Fake", "sm_arch": 90, "families": ["hopper", "mma"]}
    device.verdict[(0, "hopper")] = _failed("case 'x' hopper pv=fp8, rel-L1 vs float64 2.0 (bound 0.048)")
    monkeypatch.setenv("SAGEATTN3_SELF_TEST", "force")
    rep = _check.Report(seed=1)
    _check.check_self_test(torch, rep.results.append, rep, dev=0, facts=facts)
    rows = {r.case.split()[0]: r for r in rep.results}
    assert rows["hopper"].status == "FAIL" and rows["hopper"].mode == "failed" and "2.0" in rows["hopper"].note
    assert rows["mma"].status == "PASS" and rows["mma"].mode == "passed"
    js = rep.to_json()
    assert js["self_test"]["hopper"]["state"] == "failed" and js["self_test"]["mma"]["state"] == "passed"
    assert not rep.ok
    assert "failed" in _check.format_row(rows["hopper"]) and "passed" in _check.format_row(rows["mma"])
    # decided once: a second check (or the dispatcher) does not run it again
    _check.check_self_test(torch, rep.results.append, _check.Report(seed=1), dev=0, facts=facts)
    assert len(device.runs) == 2


def test_check_reports_verified_and_skipped(device, monkeypatch):
    facts = {"name": "Fake", "sm_arch": 90, "families": ["hopper", "mma"]}
    rep = _check.Report(seed=1)
    _check.check_self_test(torch, rep.results.append, rep, dev=0, facts=facts)
    assert [r.mode for r in rep.results] == ["verified", "verified"] and rep.ok and device.runs == []
    _selftest.reset()
    monkeypatch.setenv("SAGEATTN3_SELF_TEST", "0")
    rep = _check.Report(seed=1)
    _check.check_self_test(torch, rep.results.append, rep, dev=1, facts={"sm_arch": 120, "families": ["mma"]})
    assert [(r.mode, r.status) for r in rep.results] == [("skipped", "SKIP")]


def test_info_shows_the_self_test_per_device(device, monkeypatch):
    dev = {"index": 0, "name": "Fake RTX 5090", "sm_arch": 120, "families": ["mma"]}
    assert _info._self_test_report(0, dev) == {"mma": "not run yet: runs before the first call in this process"}
    serve(FakeProblem())
    assert _info._self_test_report(0, dev)["mma"].startswith("passed: ")
    h200 = {"index": 1, "name": "H200", "sm_arch": 90, "families": ["hopper", "mma"]}
    rep = _info._self_test_report(1, h200)
    assert rep["hopper"].startswith("verified on hardware: H200") and rep["mma"].startswith("verified on hardware")
    monkeypatch.setenv("SAGEATTN3_SELF_TEST", "0")
    assert _info._self_test_report(1, h200)["hopper"] == "skipped (SAGEATTN3_SELF_TEST=0)"
    assert _info._self_test_report(2, {"sm_arch": 120, "families": [], "error": "x"}) == {}
    text = _info.format_info({"devices": [dict(h200, self_test=rep)], "build": {}})
    assert "self-test of hopper: verified on hardware" in text
    assert "self_test" not in str(_info.info().get("cpu_routes", ""))  # CPU machine: no devices, no rows


def test_the_verified_list():
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    assert set(_policy.VERIFIED) == {("mma", 90), ("hopper", 90)}
    for (fam, arch), where in _policy.VERIFIED.items():
        assert fam in _policy.FAMILIES and isinstance(arch, int)
        paths = [w.strip("(),") for w in where.split() if w.startswith("(benchmarks/") or w.startswith("benchmarks/")]
        assert paths, where
        for p in paths:
            assert list(repo.glob(p)), f"{p} (named in VERIFIED) is not in the repo"
