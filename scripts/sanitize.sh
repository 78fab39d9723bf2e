#!/usr/bin/env bash
# compute-sanitizer over scripts/sanitize_case.py (small shapes): memcheck over every case in one
# process; racecheck one case per process, each under its own time limit, so a slow case cannot
# hide the others' results (all cases in one racecheck process did not finish in 250 s on the
# H200; cases 0-7 one per process took seconds: cuda/hopper/NOTES.md v17). torch's caching
# allocator is off so out-of-bounds accesses hit unallocated memory.
# Env: OUT (logs), RACE_CASE_TIMEOUT (seconds per racecheck case, default 240: the many-head
# three-consumer case launches thousands of CTAs), SANITIZE_RACECHECK=0 (memcheck only),
# SANITIZE_FAMILIES (hopper or mma: one family's calls only). Exit 1 on any error, hazard or timeout.
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp}
status=0
summary() { grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|sanitize cases' "$1" | tr '\n' ' '; }

compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 python scripts/sanitize_case.py \
  > "$LOG/sanitize_memcheck.log" 2>&1
rc=$?
echo "memcheck: exit $rc; $(summary "$LOG/sanitize_memcheck.log")"
[ $rc -ne 0 ] && status=1

[ "${SANITIZE_RACECHECK:-1}" = 0 ] && { echo "racecheck: skipped (SANITIZE_RACECHECK=0)"; exit $status; }
n=$(python scripts/sanitize_case.py --count 2>/dev/null) || { echo "racecheck: could not list the cases"; exit 1; }
bad=""
for i in $(seq 0 $((n - 1))); do
  f="$LOG/sanitize_racecheck_$i.log"
  SANITIZE_CASE=$i timeout "${RACE_CASE_TIMEOUT:-240}" compute-sanitizer --tool racecheck --error-exitcode 9 \
    --print-limit 20 python scripts/sanitize_case.py > "$f" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    bad="$bad $i(exit $rc)"
    echo "racecheck case $i: exit $rc; $(summary "$f")"
  fi
done
if [ -n "$bad" ]; then echo "racecheck: $n cases, one per process; failed:$bad"; else echo "racecheck: $n cases, one per process; all clean"; fi
[ -n "$bad" ] && status=1
exit $status
