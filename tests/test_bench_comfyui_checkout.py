"""benchmarks/bench_comfyui_wan.py run from a source checkout with nothing installed: the node it
imports lazily (sageattn3.comfyui) must resolve to the checkout's package."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_PROBE = r"""
import importlib.util, sys
repo = sys.argv[1]
sys.modules["sageattn3"] = None  # as if not installed: `import sageattn3` raises ImportError
sys.path[:] = [p for p in sys.path if p not in ("", repo)]
spec = importlib.util.spec_from_file_location("bench_comfyui_wan", repo + "/benchmarks/bench_comfyui_wan.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(repo in sys.path)
"""


def test_script_puts_the_checkout_on_the_path_when_sageattn3_is_not_importable(tmp_path):
    r = subprocess.run([sys.executable, "-c", _PROBE, str(REPO)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


def _load_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_comfyui_wan", REPO / "benchmarks" / "bench_comfyui_wan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_out_takes_a_file_or_a_directory(tmp_path):
    """--out DIR (as `python -m sageattn3 bench --out DIR` takes it) gets the default file name
    inside: a directory given as the path used to fail only after the whole benchmark had run."""
    mod = _load_script()
    assert mod.out_path(str(tmp_path / "x.json"), "14b") == tmp_path / "x.json"
    inside = mod.out_path(str(tmp_path), "14b")
    assert inside.parent == tmp_path and inside.name.startswith("comfyui_wan_14b_") and inside.suffix == ".json"
    fresh = mod.out_path(str(tmp_path / "new") + "/", "small")
    assert fresh.parent == tmp_path / "new" and fresh.name.startswith("comfyui_wan_small_")
    assert mod.out_path(None, "14b").parent == REPO / "benchmarks" / "results"
