"""A copy of this checkout and an in-place build of its extension, for the scripts that build
variants of the kernels beside the real tree (ab_builds.py, hopper_timeline.py)."""
from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_worktree(dest: Path) -> None:
    """The working tree as it is into `dest`: tracked and untracked files, not the ignored ones."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in names:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


def build_inplace(src: Path) -> Path:
    """`setup.py build_ext --inplace --force` in `src` for SAGEATTN3_CUDA_ARCHS (default 90a);
    returns the built extension."""
    env = dict(os.environ)
    env.setdefault("SAGEATTN3_CUDA_ARCHS", "90a")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--force"], cwd=src, env=env,
                   check=True)
    built = sorted((src / "sageattn3").glob("_C*" + importlib.machinery.EXTENSION_SUFFIXES[0]))
    if len(built) != 1:
        raise SystemExit(f"expected one extension in {src / 'sageattn3'}, found {built}")
    return built[0]
