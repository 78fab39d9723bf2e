"""The node's input schema (old workflows must load unchanged) and the install command.
No ComfyUI and no torch needed."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sageattn3 import _dispatch
from sageattn3.comfyui import (NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS,
                               Sage3AttentionOnlySwitch, comfy_entrypoint)
from sageattn3.comfyui import install
from sageattn3.comfyui.node import EIGHT_BIT_INPUTS, KERNEL_CHOICES, SCHEDULE_INPUTS

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- schema
def test_mappings():
    assert NODE_CLASS_MAPPINGS == {"Sage3AttentionOnlySwitch": Sage3AttentionOnlySwitch}
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == {"Sage3AttentionOnlySwitch"}
    if importlib.util.find_spec("comfy_api") is None:
        assert comfy_entrypoint is None  # no comfy_api outside ComfyUI: V1 only


def test_required_inputs_match_existing_workflows():
    it = Sage3AttentionOnlySwitch.INPUT_TYPES()
    req = it["required"]
    # exactly these, in this order: saved workflows store widgets_values [enable, print_backend]
    assert list(req) == ["model", "enable", "print_backend"]
    assert req["model"][0] == "MODEL"
    assert req["enable"][0] == "BOOLEAN" and req["enable"][1]["default"] is True
    assert req["print_backend"][0] == "BOOLEAN" and req["print_backend"][1]["default"] is True
    assert Sage3AttentionOnlySwitch.CATEGORY == "attention/Sage3"
    assert Sage3AttentionOnlySwitch.RETURN_TYPES == ("MODEL",)
    assert callable(getattr(Sage3AttentionOnlySwitch(), Sage3AttentionOnlySwitch.FUNCTION))


def test_optional_inputs():
    it = Sage3AttentionOnlySwitch.INPUT_TYPES()
    opt = it["optional"]
    assert list(opt) == ["kernel", *SCHEDULE_INPUTS, *EIGHT_BIT_INPUTS]
    choices, spec = opt["kernel"]
    assert choices[0] == "auto" and "sdpa" in choices and spec["default"] == "auto"
    assert set(_dispatch.KERNELS) <= set(choices) and list(choices) == list(KERNEL_CHOICES)
    for name in SCHEDULE_INPUTS:
        kind, spec = opt[name]
        assert kind == "INT" and spec["default"] == 0 and spec["min"] == 0
        assert "awaits quality measurement" in spec["tooltip"]
    assert it["hidden"] == {"unique_id": "UNIQUE_ID"}
    for spec in [*it["required"].values(), *opt.values()]:
        assert spec[1].get("tooltip")


def test_old_workflow_widget_values_map_to_same_inputs():
    """A saved UI workflow of the old node holds widgets_values [enable, print_backend]; the
    frontend fills widgets in input order, so ours must be the first two widgets."""
    it = Sage3AttentionOnlySwitch.INPUT_TYPES()
    widgets = [n for sect in ("required", "optional") for n, spec in it[sect].items()
               if isinstance(spec[0], list) or spec[0] in ("BOOLEAN", "INT", "FLOAT", "STRING")]
    assert widgets[:2] == ["enable", "print_backend"]


def test_apply_signature_accepts_old_call():
    # ComfyUI calls FUNCTION with keyword arguments; an old workflow passes only these three
    class M:
        pass
    m = M()
    assert Sage3AttentionOnlySwitch().apply(model=m, enable=False, print_backend=True) == (m,)


# --------------------------------------------------------------------------- install command
def comfy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "ComfyUI"
    (root / "custom_nodes").mkdir(parents=True)
    (root / "comfy" / "ldm" / "modules").mkdir(parents=True)
    (root / "main.py").write_text("")
    (root / "comfy" / "ldm" / "modules" / "attention.py").write_text(
        "# ... optimized_attention_override ...\n")
    return root


def test_install_idempotent_and_uninstall(tmp_path, capsys):
    root = comfy_tree(tmp_path)
    init = root / "custom_nodes" / install.FOLDER_NAME / "__init__.py"
    assert install.main([str(root)]) == 0
    assert init.read_text() == install.LOADER
    assert "installed:" in capsys.readouterr().out
    mtime = init.stat().st_mtime_ns
    assert install.main([str(root)]) == 0
    assert "already installed" in capsys.readouterr().out
    assert init.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in init.parent.iterdir()) == ["__init__.py"]
    assert install.main([str(root), "--uninstall"]) == 0
    assert not init.parent.exists()
    assert install.main([str(root), "--uninstall"]) == 0  # again: nothing to do
    assert "not installed" in capsys.readouterr().out


def test_install_accepts_custom_nodes_folder_and_refreshes_old_loader(tmp_path, capsys):
    root = comfy_tree(tmp_path)
    assert install.main([str(root / "custom_nodes")]) == 0
    init = root / "custom_nodes" / install.FOLDER_NAME / "__init__.py"
    init.write_text(install.MARKER + " v0\nold\n")
    assert install.main([str(root)]) == 0
    assert "updated:" in capsys.readouterr().out and init.read_text() == install.LOADER


def test_install_refuses_foreign_folder(tmp_path):
    root = comfy_tree(tmp_path)
    foreign = root / "custom_nodes" / install.FOLDER_NAME
    foreign.mkdir()
    (foreign / "__init__.py").write_text("# somebody else's\n")
    assert install.main([str(root)]) == 1
    assert install.main([str(root), "--uninstall"]) == 1
    assert (foreign / "__init__.py").read_text() == "# somebody else's\n"


def test_uninstall_keeps_files_it_did_not_write(tmp_path):
    root = comfy_tree(tmp_path)
    assert install.main([str(root)]) == 0
    extra = root / "custom_nodes" / install.FOLDER_NAME / "notes.txt"
    extra.write_text("mine")
    assert install.main([str(root), "--uninstall"]) == 1
    assert extra.exists()


def test_install_bad_path(tmp_path, capsys):
    assert install.main([str(tmp_path / "nowhere")]) == 2
    assert "not a ComfyUI folder" in capsys.readouterr().err


def test_install_warns_about_other_node_and_old_comfyui(tmp_path, capsys):
    root = comfy_tree(tmp_path)
    other = root / "custom_nodes" / "ComfyUI-SageAttention3" / "nodes"
    other.mkdir(parents=True)
    (other / "sage3_only.py").write_text("class Sage3AttentionOnlySwitch: pass\n")
    (root / "comfy" / "ldm" / "modules" / "attention.py").write_text("# old\n")
    assert install.main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "ComfyUI-SageAttention3 also registers Sage3AttentionOnlySwitch" in out
    assert "predates per-model attention overrides" in out


def test_loader_imports_the_node(tmp_path):
    """The written __init__.py, loaded the way ComfyUI loads a custom-node folder."""
    root = comfy_tree(tmp_path)
    assert install.main([str(root)]) == 0
    path = root / "custom_nodes" / install.FOLDER_NAME / "__init__.py"
    spec = importlib.util.spec_from_file_location("custom_nodes_sageattn3_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS["Sage3AttentionOnlySwitch"] is Sage3AttentionOnlySwitch
    assert "Sage3AttentionOnlySwitch" in module.NODE_DISPLAY_NAME_MAPPINGS
    assert not hasattr(module, "comfy_entrypoint")  # V1 only where comfy_api is absent


def _run(args, cwd):
    # The folder holding the sageattn3 under test: the checkout for an editable install,
    # site-packages otherwise (an unbuilt checkout on the path would fail to import).
    pkg_parent = Path(install.__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(pkg_parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_module_entry_point(tmp_path):
    root = comfy_tree(tmp_path)
    r = _run(["-m", "sageattn3.comfyui.install", str(root)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (root / "custom_nodes" / install.FOLDER_NAME / "__init__.py").is_file()


def test_cli_subcommand(tmp_path):
    if not (REPO / "sageattn3" / "__main__.py").is_file():
        pytest.skip("sageattn3/__main__.py not written yet")
    root = comfy_tree(tmp_path)
    r = _run(["-m", "sageattn3", "comfyui-install", str(root)], tmp_path)
    if r.returncode != 0 and "comfyui-install" in (r.stderr + r.stdout) and "invalid choice" in r.stderr:
        pytest.skip("the CLI does not dispatch comfyui-install yet")
    assert r.returncode == 0, r.stderr
    assert (root / "custom_nodes" / install.FOLDER_NAME / "__init__.py").is_file()
    r = _run(["-m", "sageattn3", "comfyui-install", "--uninstall", str(root)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (root / "custom_nodes" / install.FOLDER_NAME).exists()


def test_install_runs_without_torch(tmp_path):
    """The install command must work in a Python without torch (ComfyUI's own may be elsewhere)."""
    root = comfy_tree(tmp_path)
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch': raise ImportError('no torch here')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from sageattn3.comfyui.install import main\n"
            f"sys.exit(main([{str(root)!r}]))\n")
    r = _run(["-c", code], tmp_path)
    assert r.returncode == 0, r.stderr
