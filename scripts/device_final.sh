#!/usr/bin/env bash
# Validation on the lent GPU machine, in two parts so each fits one 10-minute call:
#   bash scripts/device_final.sh install   clean-copy `pip install .` (default arch list), info, check,
#                                          GPU tests, compute-sanitizer memcheck
#   bash scripts/device_final.sh bench     attention benchmark + host overhead
#   bash scripts/device_final.sh comfy14b  ComfyUI WanModel 14B step, SDPA vs kernel=mma
#   bash scripts/device_final.sh sanitize  compute-sanitizer memcheck + racecheck (one case per process)
# Everything runs from /tmp against the installed package (not the source tree). Logs: $OUT.
# Pass SAGEATTN3_GIT_COMMIT=<sha of the checkout> in the command: the results JSONs record it, and the
# copied tree's .git (if any) may be stale (one recorded an older commit than the one that ran).
set -o pipefail
export PYTHONUNBUFFERED=1
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/sa3_out}
mkdir -p "$OUT"
export COMFYUI_PATH=$REPO/.comfyui
ensure_installed() {
  if (cd /tmp && python -c "import sageattn3._C as c, sys; sys.exit(0 if c.HAS_CUDA else 1)") 2>/dev/null; then return; fi
  rm -rf /tmp/clean && cp -r "$REPO" /tmp/clean && rm -rf /tmp/clean/build /tmp/clean/sageattn3/*.so /tmp/clean/.comfyui
  start=$(date +%s)
  (cd /tmp/clean && python -m pip install --no-build-isolation --no-deps . > "$OUT/pip_install.log" 2>&1) || { tail -30 "$OUT/pip_install.log"; exit 1; }
  echo "pip install . (archs: ${SAGEATTN3_CUDA_ARCHS:-default}): $(( $(date +%s) - start )) s"
  grep -E "kernels for|spill" "$OUT/pip_install.log" | sort | uniq -c | head -5
}
case ${1:-install} in
  install)
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    ensure_installed
    cd /tmp
    python -m sageattn3 info > "$OUT/info.txt" 2>&1; echo "info: exit $?"
    python -m sageattn3 check > "$OUT/check.txt" 2>&1; echo "check: exit $? :: $(tail -1 "$OUT/check.txt")"
    timeout 330 python -m pytest -m gpu -q -p no:cacheprovider -rs "$REPO/tests" > "$OUT/gpu_tests.txt" 2>&1
    echo "gpu tests: exit $? :: $(tail -1 "$OUT/gpu_tests.txt")"
    grep -E "^(FAILED|ERROR)" "$OUT/gpu_tests.txt" | head -10
    OUT=$OUT SANITIZE_RACECHECK=0 timeout 150 bash "$REPO/scripts/sanitize.sh" ;;  # racecheck: the sanitize stage
  bench)    # attention benchmark + host overhead
    ensure_installed
    cd /tmp
    timeout 240 python -m sageattn3 bench --out "$OUT" > "$OUT/bench.txt" 2>&1; echo "bench: exit $?"
    timeout 60 python "$REPO/benchmarks/bench_host_overhead.py" --out-dir "$OUT" > "$OUT/host_overhead.txt" 2>&1; tail -12 "$OUT/host_overhead.txt"
    tail -16 "$OUT/bench.txt" ;;
  comfy14b) # ComfyUI WanModel 14B, one step, SDPA vs the node with kernel=mma
    ensure_installed
    cd /tmp
    timeout 280 python "$REPO/benchmarks/bench_comfyui_wan.py" --kernel mma --warmup 1 --iters 1 --out "$OUT/comfyui_wan_14b.json" > "$OUT/comfyui_14b.txt" 2>&1
    echo "comfyui 14B: exit $?"; tail -8 "$OUT/comfyui_14b.txt" ;;
  sanitize)
    ensure_installed
    OUT=$OUT timeout 560 bash "$REPO/scripts/sanitize.sh" ;;
  retest)   # GPU tests of the CLI and ComfyUI files plus the public-API test
    ensure_installed
    cd /tmp
    timeout 200 python -m pytest -m gpu -q -p no:cacheprovider -rs "$REPO/tests/test_cli.py" "$REPO/tests/test_comfyui_real.py" \
      "$REPO/tests/test_gpu_mma.py" -k "cli or comfyui or public or graph or compile" > "$OUT/gpu_retest.txt" 2>&1
    echo "gpu retest: exit $? :: $(tail -1 "$OUT/gpu_retest.txt")"; grep -E "^(FAILED|ERROR)" "$OUT/gpu_retest.txt" | head
    python -m sageattn3 check > "$OUT/check.txt" 2>&1; echo "check: exit $? :: $(tail -1 "$OUT/check.txt")" ;;
  comfy-small)
    ensure_installed
    cd /tmp
    timeout 200 python "$REPO/benchmarks/bench_comfyui_wan.py" --small --out "$OUT/comfyui_wan_small.json" > "$OUT/comfyui_small.txt" 2>&1
    echo "comfyui small: exit $?"; tail -12 "$OUT/comfyui_small.txt" ;;
  pack)     # the tool returns at most 8 files: logs go into one archive, results stay loose
    cd "$OUT" && tar czf logs.tgz --remove-files ./*.txt ./*.log 2>/dev/null; ls "$OUT" ;;
esac
