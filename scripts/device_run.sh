#!/usr/bin/env bash
# One call on the lent GPU machine: build in place, run the GPU tests, benchmark.
# Usage: bash scripts/device_run.sh [build|test|bench|sanitize|all]...   (logs under $OUT)
# Each stage prints a short summary last; full logs go to $OUT/<stage>.log.
set -o pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sa3_out}
mkdir -p "$OUT"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build test bench)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
for stage in "${stages[@]}"; do
  case $stage in
    build)
      start=$(date +%s)
      SAGEATTN3_CUDA_ARCHS=${SAGEATTN3_CUDA_ARCHS:-90a} python setup.py build_ext --inplace >"$OUT/build.log" 2>&1 \
        || { tail -40 "$OUT/build.log"; exit 1; }
      grep -E "spill|error" "$OUT/build.log" | sort | uniq -c | head -20
      echo "build: $(( $(date +%s) - start )) s" ;;
    test)
      python -m pytest -m gpu -q -x -p no:cacheprovider ${PYTEST_ARGS:-tests} 2>&1 | tee "$OUT/gpu_tests.log" | tail -25 ;;
    bench)
      python benchmarks/bench_attention.py ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | tail -30
      cp benchmarks/results/*.json "$OUT/" 2>/dev/null ;;
    sanitize)
      bash scripts/sanitize.sh 2>&1 | tee "$OUT/sanitize.log" | tail -15 ;;
    *) python -c "$stage" 2>&1 | tee -a "$OUT/extra.log" ;;
  esac
done
