"""The same node through ComfyUI's newer extension API (`comfy_api.latest`: ComfyExtension,
io.ComfyNode, `comfy_entrypoint`). Importing this module outside a ComfyUI that has that API
raises ImportError; `sageattn3.comfyui` then exposes `comfy_entrypoint = None` and ComfyUI
uses the V1 mappings. Same node id, inputs, order and defaults as the V1 class, so saved
workflows load with either.
"""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io  # ImportError outside a recent ComfyUI

from .node import (CATEGORY, DEFAULT_EIGHT_BIT_STEPS, DESCRIPTION, DISPLAY_NAME, EIGHT_BIT_INPUTS, KERNEL_CHOICES,
                   MAX_SCHEDULE, NODE_NAME, SCHEDULE_INPUTS, TOOLTIPS, DEFAULT_SCHEDULE, apply_switch)


class Sage3AttentionOnlySwitch(io.ComfyNode):
    """Per-model sageattn3 attention (ComfyUI V3 node API)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_NAME,
            display_name=DISPLAY_NAME,
            category=CATEGORY,
            description=DESCRIPTION,
            inputs=[
                io.Model.Input("model", tooltip=TOOLTIPS["model"]),
                io.Boolean.Input("enable", default=True, tooltip=TOOLTIPS["enable"]),
                io.Boolean.Input("print_backend", default=True, tooltip=TOOLTIPS["print_backend"]),
                io.Combo.Input("kernel", options=list(KERNEL_CHOICES), default="auto",
                               optional=True, tooltip=TOOLTIPS["kernel"]),
                *[io.Int.Input(name, default=getattr(DEFAULT_SCHEDULE, name[len("full_precision_"):]),
                               min=0, max=MAX_SCHEDULE, step=1, optional=True,
                               tooltip=TOOLTIPS[name])
                  for name in SCHEDULE_INPUTS],
                *[io.Int.Input(name, default=DEFAULT_EIGHT_BIT_STEPS[i], min=0, max=MAX_SCHEDULE, step=1,
                               optional=True, tooltip=TOOLTIPS[name])
                  for i, name in enumerate(EIGHT_BIT_INPUTS)],
            ],
            outputs=[io.Model.Output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, enable=True, print_backend=True, kernel="auto",
                full_precision_first_steps=DEFAULT_SCHEDULE.first_steps,
                full_precision_last_steps=DEFAULT_SCHEDULE.last_steps,
                full_precision_first_blocks=DEFAULT_SCHEDULE.first_blocks,
                full_precision_last_blocks=DEFAULT_SCHEDULE.last_blocks,
                nvfp4_8bit_first_steps=DEFAULT_EIGHT_BIT_STEPS[0],
                nvfp4_8bit_last_steps=DEFAULT_EIGHT_BIT_STEPS[1]) -> io.NodeOutput:
        node_id = getattr(getattr(cls, "hidden", None), "unique_id", None)
        return io.NodeOutput(apply_switch(model, enable, print_backend, kernel,
                                          full_precision_first_steps, full_precision_last_steps,
                                          full_precision_first_blocks, full_precision_last_blocks,
                                          nvfp4_8bit_first_steps, nvfp4_8bit_last_steps, node_id=node_id))


class Sage3Extension(ComfyExtension):
    async def get_node_list(self) -> list:
        return [Sage3AttentionOnlySwitch]


async def comfy_entrypoint() -> Sage3Extension:
    return Sage3Extension()
