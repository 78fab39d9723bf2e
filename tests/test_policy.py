"""The policy as data (sageattn3/_policy.py) and the dispatcher that walks it, CPU only.

The GPU branch of `_dispatch._serve` is driven here with a stand-in Problem (what `_C.problem`
returns for CUDA tensors): which plan it asks for, what it allocates, what it launches, what
it counts. The C side of select/launch is covered by tests/test_validation.py (supports on
what-if devices) and tests/test_gpu_mma.py (real launches).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import sageattn3  # noqa: E402
from sageattn3 import _dispatch, _info, _policy, _selftest, _stats  # noqa: E402
from sageattn3._ext import _C  # noqa: E402
from sageattn3.comfyui import node as node_mod  # noqa: E402


def test_plans():
    assert _policy.plan(90, "auto", "auto") == (("hopper", "fp8"), "sdpa")
    # GeForce: fp16-accumulated FP8 P.V, else (D > 128 on 99 KB: no such configuration) the fp32 form;
    # sm_120 asks nvfp4 first (after its self-test), the 8-bit mma kernel behind it
    assert _policy.plan(89, "auto", "auto") == (("mma", "fp8_f16acc"), ("mma", "fp8"))
    assert _policy.plan(120, "auto", "auto") == (("nvfp4", "fp16"), ("mma", "fp8_f16acc"), ("mma", "fp8"))
    assert _policy.plan(120, "mma", "fp8_f16acc") == (("mma", "fp8_f16acc"),)
    assert _policy.plan(120, "mma", "fp8") == (("mma", "fp8"),)  # the fp32-accumulate form stays selectable
    assert _policy.plan(86, "auto", "auto") == (("mma", "fp16"),)
    assert _policy.plan(120, "auto", "fp16") == (("nvfp4", "fp16"), ("mma", "fp16"))
    assert _policy.plan(90, "nvfp4", "auto") == (("nvfp4", "fp16"),)  # forcible on Hopper (emulated MMA)
    assert all(f != "nvfp4" for f in _policy.plan(90, "auto", "auto"))  # never chosen there by auto
    assert _policy.plan(90, "mma", "auto") == (("mma", "fp16"),)
    assert _policy.min_scores("auto") == _policy.MIN_SCORES_PER_HEAD and _policy.min_scores("mma") == 0
    assert _policy.min_scores("auto", 90) == 4096 * 4096 and _policy.min_scores("hopper", 90) == 0
    # causal calls compute half the scores: on sm_90 auto serves them from 8192^2
    assert _policy.min_scores("auto", 90, causal=True) == 8192 * 8192
    assert _policy.min_scores("hopper", 90, causal=True) == 0
    assert _policy.min_scores("auto", 120, causal=True) == _policy.min_scores("auto", 120)


def test_choices_are_generated_from_the_policy():
    assert _policy.KERNEL_CHOICES == ("auto",) + _policy.FAMILIES + ("sdpa",)
    assert _dispatch.KERNELS == _policy.KERNEL_CHOICES
    assert node_mod.KERNEL_CHOICES == _policy.KERNEL_CHOICES
    for f in _policy.FAMILIES:
        assert f.isidentifier()
    built = [f["name"] for f in _C.families()]
    assert set(built) <= set(_policy.FAMILIES), "a compiled family the policy doesn't know"


@pytest.mark.parametrize("arch", [80, 86, 89, 90, 120])
def test_info_route_table_says_what_the_dispatcher_does(arch):
    fams = {90: ["hopper", "mma", "nvfp4"], 120: ["mma", "nvfp4"]}.get(arch, ["mma"])
    dev = {"name": "fake", "sm_arch": arch, "families": fams}
    build = {"cuda": True, "cuda_archs": ["sm_90a"]}
    main = _info._routes(dev, build, True)[0]
    first = _policy.plan(arch, "auto", "auto")[0]
    if first == "sdpa":
        assert main["path"] == "SDPA"
    else:
        assert main["path"] == f"{first[0]} kernel (pv={first[1]})"


class StubProblem:
    """What _C.problem returns for CUDA tensors, as far as _serve looks at it."""

    def __init__(self, q, arch=89, answer=("mma", 4096), launch_error=None, causal=False, seq_k=4096):
        self.device, self.sm_arch, self.answer, self.launch_error = 0, arch, answer, launch_error
        self.is_causal, self.seq_k = causal, seq_k
        self.selected, self.launched = [], []
        self.q = q

    def select(self, plan, min_scores):
        self.selected.append((plan, min_scores))
        return self.answer

    def launch(self, out, ws_ptr, ws_bytes, stream):
        if self.launch_error:
            raise _C.UnsupportedError(self.launch_error)
        self.launched.append((tuple(out.shape), ws_bytes, stream))


@pytest.fixture
def gpu_like(monkeypatch):
    monkeypatch.setattr(_dispatch, "_STATIC", None)
    monkeypatch.setenv("SAGEATTN3_SELF_TEST", "0")  # the self-test's own paths: tests/test_selftest.py
    _selftest.reset()
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda dev: 1234, raising=False)
    sageattn3.reset_stats()
    yield
    _selftest.reset()


def test_serve_asks_the_policy_and_launches(gpu_like):
    q = torch.randn(1, 2, 64, 64, dtype=torch.float16)
    p = StubProblem(q)
    out, key, detail = _dispatch._serve(p, q, q, q, "auto", "auto")
    assert key is None and out.shape == q.shape
    assert p.selected == [((("mma", "fp8_f16acc"), ("mma", "fp8")), _policy.MIN_SCORES_PER_HEAD)]
    assert p.launched == [((1, 2, 64, 64), 4096, 1234)]
    assert _stats.stats()["served"] == {"mma": 1}


def test_serve_gives_causal_calls_their_own_length_threshold(gpu_like):
    q = torch.randn(1, 2, 64, 64, dtype=torch.float16)
    for causal, want in ((False, 4096 * 4096), (True, 8192 * 8192)):
        p = StubProblem(q, arch=90, answer=("hopper", 4096), causal=causal)
        assert _dispatch._serve(p, q, q, q, "auto", "auto")[1] is None
        assert p.selected == [((("hopper", "fp8"), "sdpa"), want)]
        p = StubProblem(q, arch=90, answer=("hopper", 4096), causal=causal)
        _dispatch._serve(p, q, q, q, "hopper", "auto")
        assert p.selected[0][1] == 0  # a forced family serves any length


def test_serve_sends_short_key_calls_to_sdpa_on_sm90(gpu_like):
    """Cross-attention on a short context (Sk < MIN_KEYS_BY_ARCH) goes to SDPA under auto, after
    select (whose own refusal, e.g. short_seq, stays the reason where it has one); a forced family,
    and archs without a measured rule, serve it."""
    assert _policy.min_keys("auto", 90) == 1536 and _policy.min_keys("hopper", 90) == 0
    assert _policy.min_keys("auto", 89) == 0 and _policy.min_keys("auto", 120) == 0
    q = torch.randn(1, 2, 64, 64, dtype=torch.float16)
    p = StubProblem(q, arch=90, answer=("hopper", 4096), seq_k=512)
    out, key, detail = _dispatch._serve(p, q, q, q, "auto", "auto")
    assert out is None and key == "short_keys" and "512 < 1536" in detail
    assert p.launched == [] and len(p.selected) == 1
    for seq_k in (1535, 1536):
        p = StubProblem(q, arch=90, answer=("hopper", 4096), seq_k=seq_k)
        assert (_dispatch._serve(p, q, q, q, "auto", "auto")[1] is None) == (seq_k == 1536)
    p = StubProblem(q, arch=90, answer=(None, "short_seq", "Sq*Sk small"), seq_k=512)
    assert _dispatch._serve(p, q, q, q, "auto", "auto")[1] == "short_seq"
    p = StubProblem(q, arch=90, answer=("hopper", 4096), seq_k=512)
    assert _dispatch._serve(p, q, q, q, "hopper", "auto")[1] is None and len(p.launched) == 1
    p = StubProblem(q, arch=89, answer=("mma", 4096), seq_k=77)
    assert _dispatch._serve(p, q, q, q, "auto", "auto")[1] is None


def test_serve_reports_the_family_refusal(gpu_like):
    q = torch.randn(1, 2, 64, 64, dtype=torch.float16)
    p = StubProblem(q, arch=90, answer=(None, "sdpa_faster", "details"))
    assert _dispatch._serve(p, q, q, q, "auto", "auto") == (None, "sdpa_faster", "details")
    assert p.selected == [((("hopper", "fp8"), "sdpa"), 4096 * 4096)]
    p = StubProblem(q, arch=90, answer=(None, "smem_limit", "needs 114688 bytes"))
    assert _dispatch._serve(p, q, q, q, "mma", "fp16")[1] == "smem_limit"
    assert p.selected == [((("mma", "fp16"),), 0)]
    p = StubProblem(q, launch_error="launch_failed: family mma, ...: no kernel image")
    assert _dispatch._serve(p, q, q, q, "mma", "fp16")[1] == "launch_failed"
    assert _stats.stats()["served"] == {}


def test_serve_grad_and_requested(gpu_like):
    q = torch.randn(1, 2, 64, 64, dtype=torch.float16, requires_grad=True)
    p = StubProblem(q)
    assert _dispatch._serve(p, q, q, q, "auto", "auto")[1] == "requires_grad"
    with torch.no_grad():
        assert _dispatch._serve(p, q, q, q, "auto", "auto")[1] is None
    assert _dispatch._serve(p, q, q, q, "sdpa", "auto")[1] == "requested"
    assert len(p.launched) == 1


def test_why_no_kernels(monkeypatch):
    monkeypatch.setattr(_dispatch, "_STATIC_REASON", None)
    facts = {"name": "Tesla T4", "sm_arch": 75, "families": []}
    monkeypatch.setattr(_dispatch, "device_facts", lambda i: facts)
    assert _dispatch.why_no_kernels(0) == "no compiled kernel for sm_75 (Tesla T4)"
    facts = {"name": "H100", "sm_arch": 90, "families": ["mma"]}
    assert _dispatch.why_no_kernels(0) == "no compiled kernel for sm_90 (H100)"  # auto uses hopper there
    facts = {"name": "H100", "sm_arch": 90, "families": ["hopper", "mma"]}
    assert _dispatch.why_no_kernels(0) is None
    facts = {"name": "RTX 4090", "sm_arch": 89, "families": ["mma"]}
    assert _dispatch.why_no_kernels(0) is None


def test_emulated_pairs_are_never_chosen_by_auto():
    for (fam, arch) in _policy.EMULATED:
        assert fam in _policy.FAMILIES
        assert all(e == "sdpa" or e[0] != fam for e in _policy.plan(arch, "auto", "auto"))
        assert (fam, arch) not in _policy.VERIFIED
