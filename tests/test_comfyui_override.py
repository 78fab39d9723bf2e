"""The ComfyUI override and its schedule, against an SDPA attention function that follows
ComfyUI's attention contract (shared DESIGN.md section 4). No ComfyUI needed.

Two paths are exercised:
- fallback: the real `_dispatch.try_attention`, which on a machine without CUDA kernels
  (CI) answers (None, reason) for every call, so every call must reach ComfyUI's `func`;
- served: `try_attention` replaced by a stand-in "kernel" (SDPA in the caller's layout) that
  records what it was handed, to check layouts, heads, no copies and the schedule.
"""
from __future__ import annotations

import copy
import functools
import logging
import math

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from sageattn3 import _dispatch  # noqa: E402
from sageattn3.comfyui import node as node_mod  # noqa: E402
from sageattn3.comfyui.node import Sage3AttentionOnlySwitch, apply_switch  # noqa: E402
from sageattn3.comfyui.override import (Sage3Override, Schedule, step_index,  # noqa: E402
                                        R_MASK, R_FP32, R_KERNEL_SDPA, R_FIRST_STEPS,
                                        R_LAST_STEPS, R_FIRST_BLOCKS, R_LAST_BLOCKS,
                                        NOTE_NO_BLOCKS, NOTE_NO_STEPS)


# --------------------------------------------------------------------------- ComfyUI's contract
def wrap_attn(func):
    """ComfyUI's rule: with an override in transformer_options, call
    override(func, *args, **kwargs) with the raw function and `_inside_attn_wrapper` set."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if "_inside_attn_wrapper" in kwargs:
            return func(*args, **kwargs)
        kwargs["_inside_attn_wrapper"] = True
        to = kwargs.get("transformer_options")
        if to is not None and "optimized_attention_override" in to:
            return to["optimized_attention_override"](func, *args, **kwargs)
        return func(*args, **kwargs)
    return wrapper


FUNC_CALLS = []


@wrap_attn
def attention_sdpa(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                   skip_output_reshape=False, **kwargs):
    """ComfyUI-style attention on torch SDPA: (B,S,H*D) in unless skip_reshape ((B,H,S,D)),
    (B,S,H*D) out unless skip_output_reshape. Masks as ComfyUI broadcasts them; k/v may have
    fewer heads (GQA)."""
    FUNC_CALLS.append({"mask": mask is not None, "skip_reshape": skip_reshape,
                       "inside": kwargs.get("_inside_attn_wrapper", False)})
    if skip_reshape:
        b, _, _, d = q.shape
    else:
        b, _, hd = q.shape
        d = hd // heads
        q, k, v = (t.view(b, -1, t.shape[-1] // d, d).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                         enable_gqa=q.shape[1] != k.shape[1])
    if not skip_output_reshape:
        out = out.transpose(1, 2).reshape(b, -1, heads * d)
    return out


class FakeKernel:
    """Stands in for a sageattn3 kernel: records its arguments, computes SDPA in q's layout."""

    def __init__(self):
        self.calls = []

    def __call__(self, q, k, v, *, layout="HND", heads=None, is_causal=False, sm_scale=None,
                 kernel="auto", pv="auto"):
        self.calls.append({"q": q, "k": k, "v": v, "layout": layout, "heads": heads,
                           "kernel": kernel})
        out = _dispatch.sdpa(q, k, v, layout=layout, heads=heads, is_causal=is_causal,
                             sm_scale=sm_scale)
        return out.contiguous(), None


@pytest.fixture
def kernel(monkeypatch):
    fake = FakeKernel()
    monkeypatch.setattr(_dispatch, "try_attention", fake)
    return fake


@pytest.fixture(autouse=True)
def _clear():
    FUNC_CALLS.clear()
    yield
    FUNC_CALLS.clear()


def qkv(b=2, s=64, heads=4, d=32, hkv=None, skip_reshape=False, sk=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    hkv = hkv or heads
    sk = sk or s
    q = torch.randn(b, heads, s, d, generator=g)
    k = torch.randn(b, hkv, sk, d, generator=g)
    v = torch.randn(b, hkv, sk, d, generator=g)
    if skip_reshape:
        return q, k, v
    return tuple(t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1) for t in (q, k, v))


def call(to, q, k, v, heads, **kw):
    return attention_sdpa(q, k, v, heads=heads, transformer_options=to, **kw)


def reference(q, k, v, heads, **kw):
    return attention_sdpa(q, k, v, heads=heads, **kw)


FLAGS = [(False, False), (False, True), (True, False), (True, True)]


# --------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("skip_reshape,skip_output_reshape", FLAGS)
def test_served_layouts_match_comfyui(kernel, skip_reshape, skip_output_reshape):
    heads = 4
    q, k, v = qkv(heads=heads, skip_reshape=skip_reshape)
    ov = Sage3Override()
    to = {"optimized_attention_override": ov}
    out = call(to, q, k, v, heads, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    assert len(kernel.calls) == 1 and not FUNC_CALLS
    ref = reference(q, k, v, heads, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    c = kernel.calls[0]
    # handed over as they came: the same tensor objects, no copies, no repeated heads
    assert c["q"] is q and c["k"] is k and c["v"] is v
    if skip_reshape:
        assert c["layout"] == "HND" and c["heads"] is None
    else:
        assert c["layout"] == "NHD_FLAT" and c["heads"] == heads
    assert ov.served == 1 and ov.fallback == {}


@pytest.mark.parametrize("skip_reshape,skip_output_reshape", FLAGS)
def test_fallback_path_is_comfyui_func_unchanged(skip_reshape, skip_output_reshape):
    """Real dispatcher: on CPU tensors it can't serve, so ComfyUI's func gets the call."""
    heads = 4
    q, k, v = qkv(heads=heads, skip_reshape=skip_reshape)
    ov = Sage3Override()
    out = call({"optimized_attention_override": ov}, q, k, v, heads,
               skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    ref = reference(q, k, v, heads, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    assert torch.equal(out, ref)
    assert ov.served == 0 and sum(ov.fallback.values()) == 1
    (reason,) = ov.fallback
    assert reason  # the dispatcher's own words (no CUDA build / not a CUDA tensor / ...)
    assert FUNC_CALLS[0]["inside"]  # func called inside the wrapper: no recursion into us


@pytest.mark.parametrize("skip_reshape", [False, True])
def test_gqa_served_without_repeating_kv(kernel, skip_reshape):
    heads, hkv = 8, 2
    q, k, v = qkv(heads=heads, hkv=hkv, skip_reshape=skip_reshape, sk=48)
    ov = Sage3Override()
    out = call({"optimized_attention_override": ov}, q, k, v, heads, skip_reshape=skip_reshape)
    ref = reference(q, k, v, heads, skip_reshape=skip_reshape)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    c = kernel.calls[0]
    assert c["k"] is k and c["v"] is v  # K/V keep their 2 heads
    assert (c["k"].shape[1] if skip_reshape else c["k"].shape[-1] // 32) == hkv


def test_bf16_served_keeps_dtype(kernel):
    q, k, v = (t.to(torch.bfloat16) for t in qkv())
    out = call({"optimized_attention_override": Sage3Override()}, q, k, v, 4)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape


# --------------------------------------------------------------------------- calls handed back
@pytest.mark.parametrize("mask_shape", [(64, 64), (2, 64, 64), (2, 1, 64, 64)])
@pytest.mark.parametrize("positional", [False, True])
def test_mask_goes_to_func(kernel, mask_shape, positional):
    q, k, v = qkv()
    mask = torch.randn(*mask_shape)
    ov = Sage3Override()
    to = {"optimized_attention_override": ov}
    if positional:  # attention_pytorch(q, k, v, heads, mask, ...) as some ComfyUI code calls it
        out = attention_sdpa(q, k, v, 4, mask, transformer_options=to)
    else:
        out = call(to, q, k, v, 4, mask=mask)
    ref = reference(q, k, v, 4, mask=mask)
    assert torch.equal(out, ref)
    assert not kernel.calls and ov.fallback == {R_MASK: 1}
    assert FUNC_CALLS[0]["mask"]


def test_fp32_attention_request_goes_to_func(kernel):
    q, k, v = qkv()
    ov = Sage3Override()
    out = call({"optimized_attention_override": ov}, q, k, v, 4, attn_precision=torch.float32)
    assert torch.equal(out, reference(q, k, v, 4))
    assert not kernel.calls and ov.fallback == {R_FP32: 1}


def test_kernel_sdpa_sends_everything_to_func(kernel):
    q, k, v = qkv()
    ov = Sage3Override(kernel="sdpa")
    for _ in range(3):
        call({"optimized_attention_override": ov}, q, k, v, 4)
    assert not kernel.calls and ov.fallback == {R_KERNEL_SDPA: 3}


def test_unknown_argument_goes_to_func(kernel):
    q, k, v = qkv()
    ov = Sage3Override()
    out = call({"optimized_attention_override": ov}, q, k, v, 4, is_causal=False)
    assert torch.equal(out, reference(q, k, v, 4))
    assert not kernel.calls and ov.fallback == {"argument 'is_causal' not handled": 1}


def test_bad_flat_width_goes_to_func(kernel):
    q, k, v = qkv(heads=4, d=32)
    ov = Sage3Override()
    # 4 heads of 32 announced as 3 heads: 128 % 3 != 0, the kernel must not guess
    with pytest.raises(Exception):
        call({"optimized_attention_override": ov}, q, k, v, 3)
    assert not kernel.calls and sum(ov.fallback.values()) == 1


def test_dispatcher_reason_is_counted(monkeypatch):
    monkeypatch.setattr(_dispatch, "try_attention",
                        lambda *a, **kw: (None, "short sequence: SDPA is faster there"))
    q, k, v = qkv()
    ov = Sage3Override()
    for _ in range(4):
        call({"optimized_attention_override": ov}, q, k, v, 4)
    assert ov.fallback == {"short sequence: SDPA is faster there": 4}
    assert len(FUNC_CALLS) == 4


# --------------------------------------------------------------------------- step schedule
def test_step_index():
    ss = [1.0, 0.9, 0.7, 0.4, 0.2, 0.0]
    assert [step_index(ss, s) for s in ss[:-1]] == [0, 1, 2, 3, 4]
    assert step_index(ss, math.sqrt(0.9 * 0.7)) == 1   # DPM2 midpoint: the step it starts from
    assert step_index(ss, 0.1) == 4
    assert step_index(ss, 1.3) == 0                   # churn above the first sigma
    assert step_index([1.0, 0.0], 1.0) == 0
    assert step_index([0.5], 0.5) == 0
    assert step_index([14.6, 7.0, 2.0, 0.5, 0.03], 0.5 * (1 + 1e-7)) == 3  # float noise


def run_model_call(to_base, sigma, sample_sigmas, n_attn, q, k, v, heads=4, total_blocks=None):
    """One model evaluation: ComfyUI builds a fresh transformer_options with one sigmas tensor
    and calls attention once per block."""
    to = dict(to_base)
    to["sigmas"] = torch.full((q.shape[0],), float(sigma))
    to["sample_sigmas"] = sample_sigmas
    outs = []
    for i in range(n_attn):
        if total_blocks is not None:
            to["block_index"] = i
            to["total_blocks"] = total_blocks
        outs.append(call(to, q, k, v, heads))
    return outs


def test_step_schedule_first_and_last(kernel):
    q, k, v = qkv()
    ss = torch.tensor([1.0, 0.9, 0.7, 0.4, 0.2, 0.0])
    ov = Sage3Override(schedule=Schedule(first_steps=2, last_steps=1))
    to = {"optimized_attention_override": ov}
    per_step = []
    for i in range(5):
        before = len(kernel.calls)
        run_model_call(to, ss[i], ss, 10, q, k, v)
        per_step.append(len(kernel.calls) - before)
    assert per_step == [0, 0, 10, 10, 0]
    assert ov.fallback == {R_FIRST_STEPS: 20, R_LAST_STEPS: 10}
    # the step was derived once per model call, not once per attention call
    assert ov.sigma_reads == 5


def test_step_schedule_cond_uncond_chunks_share_one_read(kernel):
    q, k, v = qkv()
    ss = torch.tensor([1.0, 0.5, 0.0])
    ov = Sage3Override(schedule=Schedule(first_steps=1))
    sig = torch.full((2,), 1.0)
    for _chunk in range(2):  # cond and uncond run as two model calls with the same sigmas tensor
        to = {"optimized_attention_override": ov, "sigmas": sig, "sample_sigmas": ss}
        for _ in range(5):
            call(to, q, k, v, 4)
    assert ov.sigma_reads == 1 and ov.fallback == {R_FIRST_STEPS: 10}


def test_no_step_rule_reads_nothing(kernel):
    q, k, v = qkv()
    ss = torch.tensor([1.0, 0.5, 0.0])
    ov = Sage3Override()
    run_model_call({"optimized_attention_override": ov}, 1.0, ss, 4, q, k, v)
    assert ov.sigma_reads == 0 and ov.served == 4


def test_step_schedule_without_sigmas_serves_and_notes(kernel):
    q, k, v = qkv()
    ov = Sage3Override(schedule=Schedule(first_steps=3))
    call({"optimized_attention_override": ov}, q, k, v, 4)
    assert ov.served == 1 and NOTE_NO_STEPS in ov.notes


# --------------------------------------------------------------------------- block schedule
def test_block_schedule(kernel):
    q, k, v = qkv()
    ov = Sage3Override(schedule=Schedule(first_blocks=1, last_blocks=2))
    to = {"optimized_attention_override": ov}
    run_model_call(to, 1.0, torch.tensor([1.0, 0.0]), 6, q, k, v, total_blocks=6)
    assert ov.served == 3
    assert ov.fallback == {R_FIRST_BLOCKS: 1, R_LAST_BLOCKS: 2}
    assert ov.sigma_reads == 0


def test_block_schedule_without_block_info_serves_and_notes(kernel):
    q, k, v = qkv()
    ov = Sage3Override(schedule=Schedule(first_blocks=2))
    for _ in range(3):
        call({"optimized_attention_override": ov}, q, k, v, 4)
    assert ov.served == 3 and NOTE_NO_BLOCKS in ov.notes
    assert NOTE_NO_BLOCKS in ov.summary()


def test_schedule_validation():
    with pytest.raises(ValueError):
        Sage3Override(schedule=Schedule(first_steps=-1))
    with pytest.raises(ValueError):
        Sage3Override(kernel="nope")


# --------------------------------------------------------------------------- the node on a model
class FakeBaseModel:
    pass


class FakePatcher:
    """What the node relies on from ComfyUI's ModelPatcher: clone() deep-copies model_options
    and copies the wrapper lists; add_wrapper_with_key registers a wrapper."""

    def __init__(self, model_options=None):
        self.model = FakeBaseModel()
        self.model_options = model_options if model_options is not None else {"transformer_options": {}}
        self.wrappers = {}

    def clone(self):
        n = FakePatcher(copy.deepcopy(self.model_options))
        n.model = self.model
        n.wrappers = {t: {key: list(ws) for key, ws in d.items()} for t, d in self.wrappers.items()}
        return n

    def add_wrapper_with_key(self, wrapper_type, key, fn):
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(fn)

    def outer_sample(self, fn):
        """Run fn() inside this model's OUTER_SAMPLE wrappers, as ComfyUI's sampler does."""
        ws = [w for d in self.wrappers.get("outer_sample", {}).values() for w in d]

        def make(i):
            if i == len(ws):
                return lambda *a, **kw: fn()
            return lambda *a, **kw: ws[i](make(i + 1), *a, **kw)
        return make(0)()

    def attention(self, q, k, v, heads=4, **kw):
        return attention_sdpa(q, k, v, heads=heads,
                              transformer_options=self.model_options["transformer_options"], **kw)


def test_enable_false_returns_model_untouched():
    m = FakePatcher()
    before = copy.deepcopy(m.model_options)
    (out,) = Sage3AttentionOnlySwitch().apply(m, enable=False, print_backend=True)
    assert out is m
    assert m.model_options == before and m.wrappers == {}


def test_node_returns_clone_with_override_and_no_globals_changed(kernel):
    sdpa_before = F.scaled_dot_product_attention
    m = FakePatcher()
    (out,) = Sage3AttentionOnlySwitch().apply(m, True, True, unique_id="117")
    assert out is not m
    assert "optimized_attention_override" not in m.model_options["transformer_options"]
    ov = out.model_options["transformer_options"]["optimized_attention_override"]
    assert isinstance(ov, Sage3Override) and "node 117" in ov.label
    assert out.wrappers["outer_sample"][node_mod.WRAPPER_KEY] == [ov.outer_sample]
    q, k, v = qkv()
    out.attention(q, k, v)
    m.attention(q, k, v)
    assert len(kernel.calls) == 1  # the original model still runs ComfyUI's attention
    assert F.scaled_dot_product_attention is sdpa_before
    assert torch.nn.functional.scaled_dot_product_attention is sdpa_before


def test_clone_of_patched_model_shares_the_override():
    m = FakePatcher()
    patched = apply_switch(m)
    again = patched.clone()  # e.g. a LoRA node after ours
    to1 = patched.model_options["transformer_options"]
    to2 = again.model_options["transformer_options"]
    assert to2["optimized_attention_override"] is to1["optimized_attention_override"]


def test_two_models_carry_different_settings(kernel):
    base = FakePatcher()
    high = apply_switch(base, kernel="auto", full_precision_first_steps=1, node_id="1")
    low = apply_switch(base, kernel="sdpa", node_id="2")
    ov_high = high.model_options["transformer_options"]["optimized_attention_override"]
    ov_low = low.model_options["transformer_options"]["optimized_attention_override"]
    assert ov_high is not ov_low
    assert ov_high.schedule.first_steps == 1 and ov_low.kernel == "sdpa"
    q, k, v = qkv()
    high.attention(q, k, v)
    low.attention(q, k, v)
    assert ov_high.served == 1 and ov_low.served == 0 and ov_low.fallback == {R_KERNEL_SDPA: 1}


def test_previous_override_is_composed(kernel):
    seen = []

    def previous(func, *args, **kwargs):
        seen.append(kwargs.get("mask") is not None or (len(args) > 4 and args[4] is not None))
        return func(*args, **kwargs)

    m = FakePatcher({"transformer_options": {"optimized_attention_override": previous}})
    patched = apply_switch(m)
    ov = patched.model_options["transformer_options"]["optimized_attention_override"]
    assert ov.previous is previous
    q, k, v = qkv()
    out = patched.attention(q, k, v)                       # served by us
    masked = patched.attention(q, k, v, mask=torch.zeros(64, 64))  # handed to the previous one
    assert seen == [True] and len(kernel.calls) == 1
    assert torch.equal(masked, reference(q, k, v, 4, mask=torch.zeros(64, 64)))
    torch.testing.assert_close(out, reference(q, k, v, 4))


def test_previous_override_gets_everything_without_kernels():
    calls = []

    def previous(func, *args, **kwargs):
        calls.append(1)
        return func(*args, **kwargs)

    patched = apply_switch(FakePatcher({"transformer_options": {"optimized_attention_override": previous}}))
    q, k, v = qkv()
    out = patched.attention(q, k, v)
    assert calls == [1] and torch.equal(out, reference(q, k, v, 4))


def test_one_log_line_per_run(kernel, caplog):
    m = apply_switch(FakePatcher(), print_backend=True, full_precision_first_steps=1, node_id="7")
    q, k, v = qkv()
    ss = torch.tensor([1.0, 0.6, 0.3, 0.0])
    to = m.model_options["transformer_options"]

    def sampling_run():
        for i in range(3):
            run_model_call(to, ss[i], ss, 4, q, k, v)
            run_model_call(to, ss[i], ss, 4, q, k, v, heads=4)
        call(to, q, k, v, 4, mask=torch.zeros(64, 64))

    with caplog.at_level(logging.INFO, logger="sageattn3.comfyui"):
        m.outer_sample(sampling_run)
        m.outer_sample(sampling_run)
    lines = [r.getMessage() for r in caplog.records if r.name == "sageattn3.comfyui"]
    assert len(lines) == 2  # one per run, nothing per call
    line = lines[0]
    assert "node 7" in line and "25 attention calls" in line
    assert "16 on sageattn3" in line and "9 on ComfyUI attention" in line
    assert f"{R_FIRST_STEPS}: 8" in line and f"{R_MASK}: 1" in line
    assert lines[1] == line  # counters reset at each run start


def test_print_backend_false_is_silent(kernel, caplog):
    m = apply_switch(FakePatcher(), print_backend=False)
    q, k, v = qkv()
    with caplog.at_level(logging.INFO, logger="sageattn3.comfyui"):
        m.outer_sample(lambda: m.attention(q, k, v))
    assert not [r for r in caplog.records if r.name == "sageattn3.comfyui"]


def test_kernels_unavailable_said_once_and_never_raises(monkeypatch, caplog):
    monkeypatch.setattr(_dispatch, "_STATIC_REASON", "built without CUDA kernels: test")
    monkeypatch.setattr(node_mod, "_said_once", set())
    with caplog.at_level(logging.WARNING, logger="sageattn3.comfyui"):
        a = apply_switch(FakePatcher())
        b = apply_switch(FakePatcher())
    said = [r.getMessage() for r in caplog.records if "can't run here" in r.getMessage()]
    assert len(said) == 1 and "built without CUDA kernels: test" in said[0]
    q, k, v = qkv()
    assert torch.equal(a.attention(q, k, v), reference(q, k, v, 4))
    assert torch.equal(b.attention(q, k, v), reference(q, k, v, 4))


def test_under_torch_compile():
    """Traced by torch.compile (ComfyUI's TorchCompileModel): the call goes through sageattn3's
    custom op, output right, counted apart; the step rule still works (one graph break)."""
    if not hasattr(torch, "compile"):
        pytest.skip("no torch.compile")
    pytest.importorskip("sageattn3._op")
    q, k, v = qkv()
    ov = Sage3Override()
    to = {"optimized_attention_override": ov}
    out = torch.compile(lambda a, b, c: attention_sdpa(a, b, c, heads=4, transformer_options=to),
                        backend="aot_eager")(q, k, v)
    torch.testing.assert_close(out, reference(q, k, v, 4), rtol=1e-5, atol=1e-5)
    assert ov.compiled_calls == 1 and "torch.compile" in ov.summary()
    ov2 = Sage3Override(schedule=Schedule(first_steps=1))
    to2 = {"optimized_attention_override": ov2, "sigmas": torch.tensor([1.0]),
           "sample_sigmas": torch.tensor([1.0, 0.5, 0.0])}
    out = torch.compile(lambda a, b, c: attention_sdpa(a, b, c, heads=4, transformer_options=to2),
                        backend="aot_eager")(q, k, v)
    torch.testing.assert_close(out, reference(q, k, v, 4), rtol=1e-5, atol=1e-5)
    assert ov2.fallback == {R_FIRST_STEPS: 1}


def test_unsupported_gpu_said_once(monkeypatch, caplog):
    monkeypatch.setattr(_dispatch, "_STATIC_REASON", None)
    monkeypatch.setattr(_dispatch, "device_facts",
                        lambda i: {"families": [], "sm_arch": 75, "name": "Tesla T4"})
    monkeypatch.setattr(node_mod, "_said_once", set())
    m = FakePatcher()
    m.load_device = torch.device("cuda", 0)
    with caplog.at_level(logging.WARNING, logger="sageattn3.comfyui"):
        apply_switch(m)
        apply_switch(m)
        apply_switch(m, kernel="sdpa")
    said = [r.getMessage() for r in caplog.records if "can't run here" in r.getMessage()]
    assert len(said) == 1 and "sm_75 (Tesla T4)" in said[0]
