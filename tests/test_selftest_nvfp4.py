"""The nvfp4 family behind the self-test, CPU only (stand-ins as in tests/test_selftest.py):
on sm_120 kernel="auto" (and so sageattn3_blackwell) asks nvfp4 first, which serves only after
its self-test passed; a failed self-test disables it with one warning and the 8-bit mma family
serves; on sm_90 auto never asks nvfp4, kernel="nvfp4" forces it (emulated MMA there) and its
forced failure falls back to SDPA. The H200 runs: tests/test_gpu_nvfp4.py."""
from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

from sageattn3 import _check, _dispatch, _selftest, _stats  # noqa: E402
from sageattn3._ext import _C  # noqa: E402

from test_selftest import Q, FakeProblem, _failed, device, run_call, serve  # noqa: E402,F401  (fixture)

pytestmark = pytest.mark.skipif(_C is None, reason="no C extension")


def _nvfp4_standin(corrupt_scale=None):
    """The C reference in the nvfp4 family's numerics (what a correct kernel computes)."""
    ref = _check.FAMILY_NUMERICS["nvfp4"]["ref"]

    def kernel(q, k, v, out, layout, heads, causal, scale, pv):
        hq = heads if layout == "NHD_FLAT" else (q.shape[1] if layout == "HND" else q.shape[2])
        d = q.shape[-1] // hq if layout == "NHD_FLAT" else q.shape[-1]
        hkv = k.shape[-1] // d if layout == "NHD_FLAT" else (k.shape[1] if layout == "HND" else k.shape[2])
        qh, kh, vh = _check.to_hnd(q, layout, hq), _check.to_hnd(k, layout, hkv), _check.to_hnd(v, layout, hkv)
        o = _C.reference_attention(*(x.float().numpy() for x in (qh, kh, vh)), mode="nvfp4", is_causal=causal,
                                   sm_scale=scale, **ref)
        o = torch.from_numpy(o)
        if corrupt_scale is not None:
            o = o * corrupt_scale
        _check.to_hnd(out, layout, hq).copy_(o)
    return kernel


def test_real_judging_passes_the_nvfp4_numerics():
    st = _selftest.run_self_test(torch, "nvfp4", 120, "cpu", kernel_fn=_nvfp4_standin(), seed=5)
    assert st.state == "passed", st.detail
    assert {r.mode for r in st.results} == {"nvfp4 nvfp4"}
    assert all(r.status == "PASS" and r.vs_ref is not None for r in st.results)


@pytest.mark.parametrize("corrupt,scale", [(True, None), (False, 1.1)])
def test_real_judging_fails_a_wrong_or_corrupted_nvfp4_kernel(corrupt, scale):
    st = _selftest.run_self_test(torch, "nvfp4", 120, "cpu", kernel_fn=_nvfp4_standin(scale), corrupt=corrupt, seed=6)
    assert st.state == "failed"


def test_sm120_auto_serves_nvfp4_after_its_self_test_passed(device, monkeypatch):
    monkeypatch.setattr(_selftest, "_run_on_device",
                        lambda dev, fam, arch, corrupt: _selftest.run_self_test(
                            torch, fam, arch, "cpu", kernel_fn=_nvfp4_standin(), corrupt=corrupt, seed=7))
    prob = FakeProblem(arch=120, serves=("nvfp4", "mma"))
    for _ in range(3):
        out, key, _ = serve(prob)
        assert key is None
    assert prob.selected[0][0][0] == ("nvfp4", "fp16")
    assert _selftest._status[(0, "nvfp4")].state == "passed"
    assert _stats.stats()["served"] == {"nvfp4": 3}


def test_sm120_failed_self_test_disables_nvfp4_and_mma_serves(device, monkeypatch, caplog):
    device.verdict[(0, "nvfp4")] = _failed("case 'odd 77x77, HND' nvfp4 nvfp4, rel-L1 vs float64 0.9 (bound 0.239)")
    prob = FakeProblem(arch=120, serves=("nvfp4", "mma"))
    with caplog.at_level(logging.WARNING, logger="sageattn3"):
        for _ in range(4):
            out, key, _ = serve(prob)
            assert key is None
    assert [r[1] for r in device.runs] == ["nvfp4", "mma"]  # each tested once
    assert _stats.stats()["served"] == {"mma": 4}
    assert prob.selected[-1][0] == (("mma", "fp8_f16acc"), ("mma", "fp8"))  # nvfp4 no longer asked
    warn = [r.getMessage() for r in caplog.records if r.name == "sageattn3" and r.levelno == logging.WARNING]
    assert len(warn) == 1 and "nvfp4" in warn[0] and "failed its self-test" in warn[0]


def test_sm90_auto_never_asks_nvfp4(device):
    prob = FakeProblem(arch=90, serves=("hopper", "mma", "nvfp4"))
    serve(prob)
    assert all(e == "sdpa" or e[0] != "nvfp4" for plan, _ in prob.selected for e in plan)


def test_sm90_forced_nvfp4_force_fail_falls_back_to_sdpa(device, monkeypatch, caplog):
    """SAGEATTN3_SELF_TEST=force-fail on the H200 with kernel="nvfp4": the emulated kernel's
    self-test runs with its outputs corrupted, nvfp4 is disabled, SDPA serves."""
    monkeypatch.setenv("SAGEATTN3_SELF_TEST", "force-fail")
    monkeypatch.setattr(_selftest, "_run_on_device",
                        lambda dev, fam, arch, corrupt: _selftest.run_self_test(
                            torch, fam, arch, "cpu", kernel_fn=_nvfp4_standin(), corrupt=corrupt, seed=8))
    prob = FakeProblem(arch=90, serves=("nvfp4",))
    with caplog.at_level(logging.WARNING, logger="sageattn3"):
        out = run_call(monkeypatch, prob, kernel="nvfp4")
    assert torch.equal(out, _dispatch.sdpa(Q, Q, Q, layout="HND"))
    assert prob.launched == []
    assert _stats.stats()["fallback"] == {"self_test_failed": 1}
    (rec,) = [r for r in caplog.records if r.name == "sageattn3"]
    assert "nvfp4" in rec.getMessage() and "force-fail" in rec.getMessage()
