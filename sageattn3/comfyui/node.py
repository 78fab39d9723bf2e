"""`Sage3AttentionOnlySwitch`: per-model sageattn3 attention for ComfyUI.

The node keeps the name and the inputs of the `Sage3AttentionOnlySwitch` node that existing
workflows use (`model`, `enable`, `print_backend`, same order and defaults), so they load
unchanged; our extra inputs are optional and come after them. Unlike that node it changes no
globals: it returns `model.clone()` carrying our attention override in
`model_options["transformer_options"]["optimized_attention_override"]` (ComfyUI's per-model
attention hook), so only that model is affected, the VAE and text encoders are not, two models
(Wan 2.2's high- and low-noise experts) can carry different settings, and a bypassed or
disabled node leaves the model exactly as it came.

`apply_switch` holds the logic; the V1 class below and the V3 class in `v3.py` (ComfyUI's
newer extension API) both call it.
"""
from __future__ import annotations

import logging
import sys

from .. import _dispatch, _policy
from .override import Sage3Override, Schedule

log = logging.getLogger("sageattn3.comfyui")

NODE_NAME = "Sage3AttentionOnlySwitch"
DISPLAY_NAME = "Attention: Sage 3 (sageattn3, per model)"
CATEGORY = "attention/Sage3"
WRAPPER_KEY = "sageattn3"  # key of our OUTER_SAMPLE wrapper on the model patcher

# `auto`, each kernel family of the policy, and `sdpa` (= ComfyUI's own attention): the
# dispatcher's kernel= choices (sageattn3/_policy.py).
KERNEL_CHOICES = _policy.KERNEL_CHOICES

# Defaults of the schedule: 0 = every step and block on sageattn3. They await measurement:
# `benchmarks/bench_comfyui_wan.py --small` measures output similarity per setting on a GPU;
# until its numbers are in, we don't guess a value.
DEFAULT_SCHEDULE = Schedule(first_steps=0, last_steps=0, first_blocks=0, last_blocks=0)
MAX_SCHEDULE = 10000
# kernel="nvfp4" (and "auto" where it starts with nvfp4, sm_120): first/last sampling steps on the
# 8-bit family (override.EIGHT_BIT_KERNEL), as
# SageAttention3 recommends for Wan 2.2 (NVFP4 on every step flickers). README has the measured
# effect on a random-weight WanModel's output.
DEFAULT_EIGHT_BIT_STEPS = (1, 1)

_AWAIT = " Default 0 (all on sageattn3): the recommended value awaits quality measurement."

DESCRIPTION = (
    "Runs this model's attention on sageattn3's quantized kernels (INT8 QK, FP8/FP16 PV). Only "
    "this model is affected; nothing global changes. Calls the kernels can't serve (masks, "
    "unsupported head dims/dtypes/devices, short sequences) use ComfyUI's own attention, and "
    "if the kernels can't run on this machine the workflow still runs on ComfyUI's attention.")

TOOLTIPS = {
    "model": "The diffusion model whose attention sageattn3 should run.",
    "enable": "Off: the model passes through untouched (same as bypassing the node).",
    "print_backend": ("Log one line per sampling run: how many attention calls sageattn3 "
                      "served with which kernel, and how many went to ComfyUI's attention and why."),
    "kernel": ("auto: the fastest sageattn3 kernel for this GPU. A family name forces it (calls "
               "it can't serve use ComfyUI's attention). sdpa: every call on ComfyUI's own "
               "attention, for A/B comparisons."),
    "full_precision_first_steps": ("How many first sampling steps of this model's run keep "
                                   "ComfyUI's own attention." + _AWAIT),
    "full_precision_last_steps": ("How many last sampling steps of this model's run keep "
                                  "ComfyUI's own attention." + _AWAIT),
    "full_precision_first_blocks": ("How many first transformer blocks keep ComfyUI's own "
                                    "attention (needs a ComfyUI that reports block_index)." + _AWAIT),
    "full_precision_last_blocks": ("How many last transformer blocks keep ComfyUI's own "
                                   "attention (needs a ComfyUI that reports total_blocks)." + _AWAIT),
    "nvfp4_8bit_first_steps": ("With kernel nvfp4 (or auto on an RTX 50xx, where auto uses nvfp4): how "
                               "many first sampling steps run on the 8-bit kernel instead (NVFP4 on the "
                               "first and last steps causes artifacts). Other kernels ignore it."),
    "nvfp4_8bit_last_steps": ("With kernel nvfp4 (or auto on an RTX 50xx): how many last sampling steps "
                              "run on the 8-bit kernel instead. Other kernels ignore it."),
}

EIGHT_BIT_INPUTS = ("nvfp4_8bit_first_steps", "nvfp4_8bit_last_steps")

SCHEDULE_INPUTS = ("full_precision_first_steps", "full_precision_last_steps",
                   "full_precision_first_blocks", "full_precision_last_blocks")

_said_once: set = set()


def _say_once(key: str, level: int, msg: str, *args) -> None:
    if key not in _said_once:
        _said_once.add(key)
        log.log(level, msg, *args)


def _comfy_has_override_hook():
    """True/False when ComfyUI's attention module is loaded, None when we can't tell."""
    mod = sys.modules.get("comfy.ldm.modules.attention")
    if mod is None:
        return None
    return hasattr(mod, "wrap_attn")


def _why_no_kernels(model):
    """Why no sageattn3 kernel can run for this model's device, or None (never raises)."""
    if _dispatch._STATIC_REASON is not None:
        return _dispatch._STATIC_REASON
    try:
        device = getattr(model, "load_device", None)
        if device is None or getattr(device, "type", None) != "cuda":
            return None  # CPU/MPS models: every call says so in the run's log line
        index = device.index if device.index is not None else _dispatch.torch.cuda.current_device()
        return _dispatch.why_no_kernels(index)
    except Exception:  # an odd device object or driver state: the per-call path will tell
        return None


def _label(model, node_id) -> str:
    inner = getattr(model, "model", None)
    name = type(inner).__name__ if inner is not None else type(model).__name__
    return f"{name}, node {node_id}" if node_id not in (None, "") else name


def apply_switch(model, enable: bool = True, print_backend: bool = True, kernel: str = "auto",
                 full_precision_first_steps: int = DEFAULT_SCHEDULE.first_steps,
                 full_precision_last_steps: int = DEFAULT_SCHEDULE.last_steps,
                 full_precision_first_blocks: int = DEFAULT_SCHEDULE.first_blocks,
                 full_precision_last_blocks: int = DEFAULT_SCHEDULE.last_blocks,
                 nvfp4_8bit_first_steps: int = DEFAULT_EIGHT_BIT_STEPS[0],
                 nvfp4_8bit_last_steps: int = DEFAULT_EIGHT_BIT_STEPS[1],
                 node_id=None):
    """The node's work: `model` untouched if not `enable`, else a clone with our override."""
    if not enable:
        return model
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
    schedule = Schedule(int(full_precision_first_steps), int(full_precision_last_steps),
                        int(full_precision_first_blocks), int(full_precision_last_blocks)).validate()

    if _comfy_has_override_hook() is False:
        _say_once("no-hook", logging.WARNING,
                  "sageattn3: this ComfyUI predates per-model attention overrides "
                  "(optimized_attention_override); update ComfyUI. The model runs unchanged.")
        return model
    if kernel != "sdpa":
        why = _why_no_kernels(model)
        if why is not None:
            _say_once("no-kernels:" + why, logging.WARNING,
                      "sageattn3: kernels can't run here (%s); attention stays on ComfyUI's own "
                      "functions. Run `python -m sageattn3 info` for details.", why)

    patched = model.clone()
    to = patched.model_options.setdefault("transformer_options", {})
    override = Sage3Override(kernel=kernel, schedule=schedule,
                             eight_bit_steps=(int(nvfp4_8bit_first_steps), int(nvfp4_8bit_last_steps)),
                             previous=to.get("optimized_attention_override"),
                             label=_label(model, node_id), print_backend=print_backend)
    to["optimized_attention_override"] = override
    add_wrapper = getattr(patched, "add_wrapper_with_key", None)
    if add_wrapper is not None:
        add_wrapper("outer_sample", WRAPPER_KEY, override.outer_sample)
    return patched


def input_types() -> dict:
    """The V1 INPUT_TYPES dict (also the reference for the V3 schema)."""
    opt_int = {"default": 0, "min": 0, "max": MAX_SCHEDULE, "step": 1}
    return {
        "required": {
            "model": ("MODEL", {"tooltip": TOOLTIPS["model"]}),
            "enable": ("BOOLEAN", {"default": True, "tooltip": TOOLTIPS["enable"]}),
            "print_backend": ("BOOLEAN", {"default": True, "tooltip": TOOLTIPS["print_backend"]}),
        },
        "optional": {
            "kernel": (list(KERNEL_CHOICES), {"default": "auto", "tooltip": TOOLTIPS["kernel"]}),
            **{name: ("INT", dict(opt_int, default=getattr(DEFAULT_SCHEDULE, name[len("full_precision_"):]),
                                  tooltip=TOOLTIPS[name]))
               for name in SCHEDULE_INPUTS},
            **{name: ("INT", dict(opt_int, default=DEFAULT_EIGHT_BIT_STEPS[i], tooltip=TOOLTIPS[name]))
               for i, name in enumerate(EIGHT_BIT_INPUTS)},
        },
        "hidden": {"unique_id": "UNIQUE_ID"},
    }


class Sage3AttentionOnlySwitch:
    """Per-model sageattn3 attention (ComfyUI V1 node API)."""

    DESCRIPTION = DESCRIPTION
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return input_types()

    def apply(self, model, enable=True, print_backend=True, kernel="auto",
              full_precision_first_steps=DEFAULT_SCHEDULE.first_steps,
              full_precision_last_steps=DEFAULT_SCHEDULE.last_steps,
              full_precision_first_blocks=DEFAULT_SCHEDULE.first_blocks,
              full_precision_last_blocks=DEFAULT_SCHEDULE.last_blocks,
              nvfp4_8bit_first_steps=DEFAULT_EIGHT_BIT_STEPS[0], nvfp4_8bit_last_steps=DEFAULT_EIGHT_BIT_STEPS[1],
              unique_id=None):
        return (apply_switch(model, enable, print_backend, kernel, full_precision_first_steps,
                             full_precision_last_steps, full_precision_first_blocks,
                             full_precision_last_blocks, nvfp4_8bit_first_steps, nvfp4_8bit_last_steps,
                             node_id=unique_id),)


NODE_CLASS_MAPPINGS = {NODE_NAME: Sage3AttentionOnlySwitch}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_NAME: DISPLAY_NAME}
