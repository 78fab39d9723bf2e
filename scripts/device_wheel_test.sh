#!/usr/bin/env bash
# On the GPU machine: install a wheel built elsewhere (scripts/build_wheels.sh) into a fresh
# venv and run the self-check and the GPU tests against the installed package, with no nvcc
# and no C compiler on PATH (a user's machine with only the NVIDIA driver).
#
#   bash scripts/device_wheel_test.sh dist/sageattn3-*-cp312-*.whl   (logs under $OUT)
#
# The venv sees the machine's torch (--system-site-packages: we never install torch); the
# checkout is not on sys.path (tests run from a copy in a temporary folder).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/sa3_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
tag=$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
whl=${1:-$(ls "$ROOT"/dist/sageattn3-*-"$tag"-"$tag"-*.whl 2>/dev/null | head -1)}
[ -f "$whl" ] || { echo "device_wheel_test: no wheel for $tag (give its path)" >&2; exit 2; }
WORK=$(mktemp -d)
# an image without ensurepip gets a pip-less venv filled by the interpreter's own pip (--python)
if "$PY" -m venv --system-site-packages "$WORK/venv" 2>/dev/null; then
  pip=("$WORK/venv/bin/python" -m pip)
else
  rm -rf "$WORK/venv"
  "$PY" -m venv --system-site-packages --without-pip "$WORK/venv"
  pip=("$PY" -m pip --python "$WORK/venv/bin/python")
fi
# --system-site-packages reaches the base interpreter only: where $PY is itself a venv (the GPU
# image's torch python is), its site-packages are added through a .pth file instead.
site=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PY" -c 'import site, sys; print("\n".join(p for p in site.getsitepackages() if "site-packages" in p))' \
  > "$site/zz_parent_site.pth"
"${pip[@]}" install -q --disable-pip-version-check --no-deps --force-reinstall "$whl"
"$WORK/venv/bin/python" -c 'import numpy' 2>/dev/null || "${pip[@]}" install -q numpy
"$WORK/venv/bin/python" -c 'import pytest' 2>/dev/null || "${pip[@]}" install -q pytest
# PATH: the venv and a folder with the few tools the tests and this script call (no nvcc, gcc,
# cc, clang)
mkdir -p "$WORK/tools"
for t in nvidia-smi sh bash env git tee sed tail head cat ls basename dirname mkdir rm cp; do
  p=$(command -v "$t" 2>/dev/null) && ln -sf "$p" "$WORK/tools/$t"
done
cp -r "$ROOT/tests" "$WORK/tests"
cp -r "$ROOT/benchmarks" "$WORK/benchmarks"  # scripts some tests drive (ComfyUI step), not the package
cd "$WORK"
export PATH="$WORK/venv/bin:$WORK/tools"
unset CUDA_HOME CUDA_PATH PYTHONPATH CC CXX
for t in nvcc gcc cc c++ clang; do
  if command -v "$t" >/dev/null; then echo "device_wheel_test: $t is on PATH" >&2; exit 1; fi
done
python -c 'import sageattn3, sys; assert sageattn3.__file__.startswith(sys.prefix), sageattn3.__file__; print("installed:", sageattn3.__file__)'
python -m sageattn3 info | tee "$OUT/wheel_info.txt" | sed -n '1,25p'
rc=0
if [ -e "$WORK/tools/nvidia-smi" ]; then  # a GPU machine: the wheel's kernels must run on its GPU
  python -c 'import torch; from sageattn3._ext import _C
assert torch.cuda.is_available(), "torch sees no GPU"
d = _C.device_info(0); b = _C.build_info()
print("device:", d["name"], "sm_%d" % d["sm_arch"], "families:", d["families"], "| wheel:", b["cuda_archs"], b["cuda_ptx"])
assert "mma" in d["families"], "no compiled kernel runs on this GPU"' || rc=1
fi
python -m sageattn3 check --json "$OUT/wheel_check.json" 2>&1 | tee "$OUT/wheel_check.log" | tail -5 || rc=1
python -m pytest -m gpu -q -p no:cacheprovider --rootdir "$WORK" tests 2>&1 | tee "$OUT/wheel_gpu_tests.log" | tail -15 \
  || rc=1
echo "device_wheel_test: $(basename "$whl"): $([ $rc -eq 0 ] && echo PASS || echo FAIL)"
exit $rc
