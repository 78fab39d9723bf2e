#!/usr/bin/env bash
# compute-sanitizer memcheck + racecheck over scripts/sanitize_case.py (small shapes).
# torch's caching allocator is off so out-of-bounds accesses hit unallocated memory.
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
cd "$(dirname "$0")/.."
status=0
for tool in memcheck racecheck; do
  compute-sanitizer --tool $tool --error-exitcode 9 --print-limit 20 python scripts/sanitize_case.py > "${OUT:-/tmp}/sanitize_$tool.log" 2>&1
  rc=$?
  echo "$tool: exit $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|sanitize cases' "${OUT:-/tmp}/sanitize_$tool.log" | tr '\n' ' ')"
  [ $rc -ne 0 ] && status=1
done
exit $status
