#!/usr/bin/env bash
# ncu on the attention kernel (in-place sm_90a build): details page and per-SASS source page.
# Usage: bash scripts/device_profile.sh [shape] [pv]     (logs under $OUT)
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sa3_out}
mkdir -p "$OUT"
ncu --clock-control none -k regex:sa3_attn_mma -s 1 -c 1 --set full --import-source no \
    -o "$OUT/prof" -f python scripts/profile_mma.py "${1:-16k}" "${2:-fp16}" 2 > "$OUT/ncu_run.log" 2>&1 \
  || { tail -20 "$OUT/ncu_run.log"; exit 1; }
ncu -i "$OUT/prof.ncu-rep" --page details > "$OUT/ncu_details.txt" 2>&1
ncu -i "$OUT/prof.ncu-rep" --page source --print-source sass --csv > "$OUT/ncu_sass.csv" 2>&1
grep -E "Duration|Registers Per|Achieved Occupancy|Compute \(SM\) Throughput|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Executed Ipc A|Block Limit" "$OUT/ncu_details.txt"
wc -c "$OUT"/ncu_*
