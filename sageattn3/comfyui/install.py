"""`python -m sageattn3 comfyui-install PATH_TO_COMFYUI [--uninstall]`.

Writes (or removes) a small custom-node folder, `custom_nodes/ComfyUI-sageattn3/`, whose only
file is an `__init__.py` that imports the node from the installed `sageattn3` package. The
node's code therefore lives in one place and is upgraded with `pip install -U sageattn3`.
Idempotent: running it again changes nothing (or refreshes a loader written by an older
version); `--uninstall` removes only a folder this command wrote. Needs neither torch nor
ComfyUI to run.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import List, Optional

FOLDER_NAME = "ComfyUI-sageattn3"  # a hyphen: never importable as a module, can't shadow sageattn3
MARKER = "# sageattn3-comfyui-loader"

LOADER = f'''{MARKER} v1 (written by `python -m sageattn3 comfyui-install`)
#
# This folder only tells ComfyUI where the Sage3AttentionOnlySwitch node lives: in the
# installed `sageattn3` Python package (sageattn3/comfyui/). Upgrading the package with pip
# upgrades the node; nothing here needs editing. Remove it with
#     python -m sageattn3 comfyui-install --uninstall PATH_TO_COMFYUI
# or by deleting this folder.
try:
    from sageattn3.comfyui import (NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS,
                                   comfy_entrypoint)
except ImportError as exc:
    import sys
    raise ImportError(
        "sageattn3 could not be imported by the Python that runs ComfyUI "
        f"({{sys.executable}}): install it there with `{{sys.executable}} -m pip install sageattn3` "
        f"({{exc}})") from exc

if comfy_entrypoint is not None:
    # This ComfyUI has the newer extension API. It reads comfy_entrypoint only from modules
    # without NODE_CLASS_MAPPINGS, so register through the entry point alone.
    del NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    del comfy_entrypoint
'''


def _custom_nodes_dir(path: Path) -> Optional[Path]:
    """ComfyUI's custom_nodes folder from the ComfyUI folder (or that folder itself)."""
    path = path.expanduser()
    if path.name == "custom_nodes" and path.is_dir():
        return path
    if (path / "custom_nodes").is_dir():
        return path / "custom_nodes"
    if (path / "comfy").is_dir() and (path / "main.py").is_file():
        return path / "custom_nodes"  # a ComfyUI checkout whose custom_nodes/ was removed
    return None


def _others_defining_node(custom_nodes: Path) -> List[str]:
    """Other custom-node folders that register a node of the same name (the last loaded wins)."""
    found = []
    for entry in sorted(custom_nodes.iterdir()):
        if entry.name == FOLDER_NAME or entry.name.endswith(".disabled") or not entry.is_dir():
            continue
        for py in list(entry.glob("*.py")) + list(entry.glob("*/*.py")):
            try:
                if "Sage3AttentionOnlySwitch" in py.read_text(encoding="utf-8", errors="ignore"):
                    found.append(entry.name)
                    break
            except OSError:
                continue
    return found


def _comfy_has_override_hook(custom_nodes: Path) -> Optional[bool]:
    attention = custom_nodes.parent / "comfy" / "ldm" / "modules" / "attention.py"
    try:
        return "optimized_attention_override" in attention.read_text(encoding="utf-8", errors="ignore")
    except OSError:
        return None


def _install(custom_nodes: Path, out) -> int:
    target = custom_nodes / FOLDER_NAME
    init = target / "__init__.py"
    if target.exists():
        current = init.read_text(encoding="utf-8") if init.is_file() else None
        if current is None or not current.startswith(MARKER):
            print(f"error: {target} exists and was not written by this command; not touching it",
                  file=sys.stderr)
            return 1
        if current == LOADER:
            print(f"already installed: {target}", file=out)
        else:
            init.write_text(LOADER, encoding="utf-8")
            print(f"updated: {init}", file=out)
    else:
        custom_nodes.mkdir(exist_ok=True)
        target.mkdir()
        init.write_text(LOADER, encoding="utf-8")
        print(f"installed: {init}", file=out)

    for other in _others_defining_node(custom_nodes):
        print(f"warning: custom_nodes/{other} also registers Sage3AttentionOnlySwitch; ComfyUI "
              f"keeps whichever loads last. Disable it (rename it to {other}.disabled) so the "
              "node in your workflows is this one.", file=out)
    if _comfy_has_override_hook(custom_nodes) is False:
        print("warning: this ComfyUI predates per-model attention overrides "
              "(optimized_attention_override); update ComfyUI, or the node leaves models unchanged.",
              file=out)
    print("ComfyUI must run with a Python that has sageattn3 installed (this command ran with "
          f"{sys.executable}). Restart ComfyUI to load the node.", file=out)
    return 0


def _uninstall(custom_nodes: Path, out) -> int:
    target = custom_nodes / FOLDER_NAME
    init = target / "__init__.py"
    if not target.exists():
        print(f"not installed: {target} does not exist", file=out)
        return 0
    text = init.read_text(encoding="utf-8") if init.is_file() else ""
    if not text.startswith(MARKER):
        print(f"error: {target} was not written by this command; not removing it", file=sys.stderr)
        return 1
    extra = sorted(p.name for p in target.iterdir() if p.name not in ("__init__.py", "__pycache__"))
    if extra:
        print(f"error: {target} holds files this command did not write ({', '.join(extra)}); "
              "remove it by hand", file=sys.stderr)
        return 1
    shutil.rmtree(target)
    print(f"removed: {target}", file=out)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sageattn3 comfyui-install",
        description="Add the Sage3AttentionOnlySwitch node to a ComfyUI installation (a tiny "
                    f"custom_nodes/{FOLDER_NAME}/ folder importing it from this package), or "
                    "remove it.")
    parser.add_argument("path", help="the ComfyUI folder (holding main.py and custom_nodes/), "
                                     "or its custom_nodes/ folder")
    parser.add_argument("--uninstall", action="store_true", help="remove the folder instead")
    args = parser.parse_args(argv)

    custom_nodes = _custom_nodes_dir(Path(args.path))
    if custom_nodes is None:
        print(f"error: {args.path} is not a ComfyUI folder (no custom_nodes/ folder, no "
              "main.py + comfy/)", file=sys.stderr)
        return 2
    out = sys.stdout
    try:
        return _uninstall(custom_nodes, out) if args.uninstall else _install(custom_nodes, out)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # python -m sageattn3.comfyui.install PATH
    sys.exit(main(sys.argv[1:]))
