"""ComfyUI integration of sageattn3: the `Sage3AttentionOnlySwitch` node.

ComfyUI finds the node through a tiny custom-node folder that
`python -m sageattn3 comfyui-install PATH_TO_COMFYUI` writes (see `install.py`); it imports
from here:
- `NODE_CLASS_MAPPINGS`, `NODE_DISPLAY_NAME_MAPPINGS`: the V1 node API, every ComfyUI.
- `comfy_entrypoint`: ComfyUI's newer extension API (`comfy_api.latest`) where the running
  ComfyUI has it, else None.

Importing this package needs neither torch nor ComfyUI (the install command runs without them).
"""
from __future__ import annotations

from .node import (NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, Sage3AttentionOnlySwitch,
                   apply_switch)
from .override import Sage3Override, Schedule


def _load_entrypoint():
    try:
        from .v3 import Sage3AttentionOnlySwitch as v3_node, comfy_entrypoint as entry
        v3_node.GET_SCHEMA()  # fail here, not inside ComfyUI's loader, on an API we don't match
    except Exception:  # no comfy_api here, or a version we don't match: the V1 node still works
        return None
    return entry


def __getattr__(name):
    # Resolved when asked for (the custom-node loader asks inside a running ComfyUI), not at
    # the first import of this package, which may happen before comfy_api is importable.
    if name == "comfy_entrypoint":
        return _load_entrypoint()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "comfy_entrypoint",
           "Sage3AttentionOnlySwitch", "Sage3Override", "Schedule", "apply_switch"]
