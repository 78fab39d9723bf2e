"""The node's default schedule with kernel="nvfp4": the first and last sampling steps run on the
8-bit family (override.EIGHT_BIT_KERNEL), the others on nvfp4; other kernels ignore it; the
full-precision rule (ComfyUI's own attention) wins where both apply. CPU only: the kernel is
a recording stand-in (tests/test_comfyui_override.py's FakeKernel)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sageattn3.comfyui import node as node_mod  # noqa: E402
from sageattn3.comfyui.override import EIGHT_BIT_KERNEL, R_FIRST_STEPS, Sage3Override, Schedule  # noqa: E402

from test_comfyui_override import kernel, qkv, run_model_call  # noqa: E402,F401  (fixture)


def _kernels_per_step(ov, kernel, steps=5, n_attn=3):  # noqa: F811
    q, k, v = qkv()
    ss = torch.linspace(1.0, 0.0, steps + 1)
    to = {"optimized_attention_override": ov}
    per_step = []
    for i in range(steps):
        before = len(kernel.calls)
        run_model_call(to, ss[i], ss, n_attn, q, k, v)
        per_step.append(sorted({c["kernel"] for c in kernel.calls[before:]}))
    return per_step


def test_node_default_keeps_first_and_last_step_on_8bit(kernel):  # noqa: F811
    class FakePatcher:
        def __init__(self):
            self.model_options = {"transformer_options": {}}

        def clone(self):
            c = FakePatcher()
            c.model_options = {"transformer_options": dict(self.model_options["transformer_options"])}
            return c

    m = node_mod.apply_switch(FakePatcher(), kernel="nvfp4", print_backend=False)
    ov = m.model_options["transformer_options"]["optimized_attention_override"]
    assert ov.eight_bit_steps == node_mod.DEFAULT_EIGHT_BIT_STEPS == (1, 1)
    assert _kernels_per_step(ov, kernel) == [[EIGHT_BIT_KERNEL], ["nvfp4"], ["nvfp4"], ["nvfp4"], [EIGHT_BIT_KERNEL]]
    assert ov.served == 15 and not ov.fallback


@pytest.mark.parametrize("first,last,want", [
    (0, 0, ["nvfp4"] * 5),
    (2, 0, ["mma", "mma", "nvfp4", "nvfp4", "nvfp4"]),
    (0, 2, ["nvfp4", "nvfp4", "nvfp4", "mma", "mma"]),
    (9, 9, ["mma"] * 5),
])
def test_counts(kernel, first, last, want):  # noqa: F811
    ov = Sage3Override(kernel="nvfp4", eight_bit_steps=(first, last))
    assert [ks[0] for ks in _kernels_per_step(ov, kernel)] == want


@pytest.mark.parametrize("kern", ["auto", "mma", "hopper"])
def test_other_kernels_ignore_it(kernel, kern):  # noqa: F811
    """Forced 8-bit families, and auto where auto doesn't start with nvfp4 (here: CPU tensors)."""
    ov = Sage3Override(kernel=kern, eight_bit_steps=(1, 1))
    assert _kernels_per_step(ov, kernel) == [[kern]] * 5
    assert ov.sigma_reads == 0  # and pay nothing for it


@pytest.mark.parametrize("arch,want", [(120, ["mma", "auto", "auto", "auto", "mma"]), (90, ["auto"] * 5),
                                       (89, ["auto"] * 5)])
def test_auto_gets_the_8bit_steps_where_it_means_nvfp4(kernel, monkeypatch, arch, want):  # noqa: F811
    """auto on sm_120 starts with nvfp4: its first/last steps go to the 8-bit kernel; elsewhere auto
    is left alone and no sigma is ever read."""
    from sageattn3.comfyui import override as override_mod
    monkeypatch.setattr(override_mod, "_arch_of", lambda dev: arch)
    ov = Sage3Override(kernel="auto", eight_bit_steps=(1, 1))
    assert [ks[0] for ks in _kernels_per_step(ov, kernel)] == want
    if arch != 120:
        assert ov.sigma_reads == 0


def test_full_precision_rule_wins(kernel):  # noqa: F811
    ov = Sage3Override(kernel="nvfp4", schedule=Schedule(first_steps=1), eight_bit_steps=(2, 1))
    per_step = _kernels_per_step(ov, kernel)
    assert per_step == [[], ["mma"], ["nvfp4"], ["nvfp4"], ["mma"]]
    assert ov.fallback == {R_FIRST_STEPS: 3}


def test_without_sigmas_serves_nvfp4_and_notes(kernel):  # noqa: F811
    q, k, v = qkv()
    ov = Sage3Override(kernel="nvfp4", eight_bit_steps=(1, 1))
    from test_comfyui_override import call
    call({"optimized_attention_override": ov}, q, k, v, 4)
    assert [c["kernel"] for c in kernel.calls] == ["nvfp4"] and ov.notes


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_validation(bad):
    with pytest.raises(ValueError, match="eight_bit"):
        Sage3Override(kernel="nvfp4", eight_bit_steps=(bad, 0))


def test_node_inputs_come_after_the_old_ones():
    opt = node_mod.Sage3AttentionOnlySwitch.INPUT_TYPES()["optional"]
    assert list(opt)[-2:] == list(node_mod.EIGHT_BIT_INPUTS)
    for name, default in zip(node_mod.EIGHT_BIT_INPUTS, node_mod.DEFAULT_EIGHT_BIT_STEPS):
        kind, spec = opt[name]
        assert kind == "INT" and spec["default"] == default and "nvfp4" in spec["tooltip"]
