"""Consumer-limits mode on a real GPU (an H100/H200): every test switches the mode on itself
(sageattn3/_limits.py set_mode("sm120")) and back, so a plain `pytest -m gpu` runs the RTX 5090's
host path and its small-shared-memory configurations (cuda/mma/mma_configs.h) on the H200's
sm_90a binary. (The whole GPU matrix under the mode: SAGEATTN3_CONSUMER_LIMITS=sm120 pytest -m gpu.)

Checked: the facts the families see, each small configuration against the C reference in the
same mode and float64 (fresh random inputs, odd lengths, poisoned outputs), kernel="auto"
following the sm_120 policy (mma, FP8 P.V, after its self-test: no (mma, sm_120) pair is
verified), the refusals a 99 KB card has (D=256 with 16-bit P.V, hopper), CUDA graph capture.
Not checked (can't be, here): the sm_120a SASS itself, GeForce rates, FP8 mma.sync in hardware
(the H200 emulates it)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import sageattn3  # noqa: E402
from sageattn3 import _check, _dispatch, _limits, _policy, _selftest, _stats  # noqa: E402
from sageattn3._ext import _C  # noqa: E402

from gpu_helpers import (assert_graph_replays, make_qkv, ref64, reference_same_mode, rel_l1,  # noqa: E402
                         run_mma)

_HAS = (torch.cuda.is_available() and _C is not None and _C.HAS_CUDA
        and "mma" in _C.device_info(torch.cuda.current_device()).get("families", []))
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _HAS, reason="the mma family does not run on this GPU/build")]

F64_BOUND = {"fp16": 0.012, "fp8": 0.045, "fp8_f16acc": 0.045}  # as tests/test_gpu_mma.py
REF_BOUND = {"fp16": 5e-4, "fp8": 5e-3, "fp8_f16acc": 5e-3}


@pytest.fixture
def sm120():
    prev = _limits.set_mode("sm120")
    sageattn3.reset_stats()
    yield
    _limits.set_mode(prev)
    _selftest.reset()
    sageattn3.reset_stats()


def _dev():
    return torch.cuda.current_device()


def test_facts_under_the_mode(sm120):
    f = _C.device_info(_dev())
    assert f["consumer_limits"] == "sm120" and f["sm_arch"] == 120
    assert f["smem_optin"] == 101376 and f["smem_per_sm"] == 102400
    assert f["hw_arch"] == 10 * torch.cuda.get_device_capability()[0] + torch.cuda.get_device_capability()[1]
    assert f["hw_smem_optin"] > 101376  # the H200's own 227 KB
    # launches ask for a carveout of the SM's shared memory that rounds up to 100 KB
    assert f["smem_carveout"] == 100 * 102400 // f["hw_smem_per_sm"]
    q = torch.zeros(1, 1, 64, 128, dtype=torch.bfloat16, device="cuda")
    p = _C.problem(q, q, q)
    assert p.sm_arch == 120
    assert p.config("mma", "fp8").startswith("small-smem DP=128 FP8") and "2 K/V stages" in p.config("mma", "fp8")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("pv", ["fp16", "fp8", "fp8_f16acc"])
@pytest.mark.parametrize("sq,sk,d,causal,hq,hkv", [
    (77, 77, 64, False, 2, 2),
    (300, 1000, 64, True, 4, 2),
    (129, 1000, 128, True, 4, 2),
    (1000, 77, 128, False, 2, 1),    # Sk tail
    (333, 455, 96, False, 2, 2),     # DP=128, zero-filled columns
    (200, 455, 192, False, 2, 2),    # DP=256: FP8 only on 99 KB
    (150, 150, 256, True, 2, 2),
])
def test_small_configurations_match_the_reference(sm120, dtype, pv, sq, sk, d, causal, hq, hkv):
    q, k, v = make_qkv(1, hq, hkv, sq, sk, d, dtype=dtype)
    if d > 128 and pv != "fp8":
        with pytest.raises(_C.UnsupportedError, match="^smem_limit: " if pv == "fp16" else "^pv_mode: "):
            _dispatch.run_family("mma", q, k, v, pv=pv)
        return
    assert _C.problem(q, k, v).config("mma", pv).startswith("small-smem")
    out = run_mma(q, k, v, causal=causal, pv=pv)
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) output elements"
    ref = reference_same_mode(q, k, v, causal=causal, pv=pv)
    err = rel_l1(out.float().cpu(), ref.to(q.dtype).double())
    assert err <= REF_BOUND[pv], f"rel-L1 vs same-mode CPU reference {err:.2e} > {REF_BOUND[pv]}"
    e64 = rel_l1(out, ref64(q, k, v, causal=causal))
    assert e64 <= F64_BOUND[pv], f"rel-L1 vs float64 {e64:.5f} > {F64_BOUND[pv]}"


def test_auto_follows_the_sm120_policy_after_the_self_test(sm120):
    """kernel="auto" on sm_120 walks nvfp4 (where built), then mma with FP8 P.V: the first family
    this build has serves, after its self-test ran ((family, 120) is in no VERIFIED pair)."""
    q, k, v = make_qkv(1, 2, 2, 2048, 2048, 128)
    built = _C.device_info(_dev()).get("families", [])
    first = next(e[0] for e in _policy.plan(120, "auto", "auto") if e != "sdpa" and e[0] in built)
    out = sageattn3.sageattn(q, k, v)
    torch.cuda.synchronize()
    st = _selftest._status[(_dev(), first)]
    assert st.state == "passed", st.detail
    assert _stats.stats()["served"] == {first: 1}
    bound = _check.bound("nvfp4", 128, None) + 0.003 if first == "nvfp4" else F64_BOUND["fp8"]
    assert rel_l1(out, ref64(q, k, v)) <= bound


def test_the_refusals_a_99kb_card_has(sm120):
    q, k, v = make_qkv(1, 2, 2, 1024, 1024, 256)
    out = sageattn3.sageattn(q, k, v, kernel="mma", pv="fp16")
    assert _stats.stats()["fallback"] == {"smem_limit": 1}
    assert torch.allclose(out, _dispatch.sdpa(q, k, v))
    q, k, v = make_qkv(1, 2, 2, 1024, 1024, 128)
    sageattn3.sageattn(q, k, v, kernel="hopper")
    assert _stats.stats()["fallback"].get("arch") == 1  # hopper's supports(): sm_90 only (or not compiled)


def test_graph_capture_under_the_mode(sm120):
    q, k, v = make_qkv(1, 2, 2, 64, 64, 128)
    sageattn3.sageattn(q, k, v, kernel="mma")  # eager first: the self-test can't run inside a capture
    assert_graph_replays("mma")
