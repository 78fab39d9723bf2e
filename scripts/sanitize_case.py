"""Small kernel calls for compute-sanitizer (memcheck / racecheck): odd lengths, causal, GQA,
every padded head dim, every PV mode, all layouts, for the mma family and (where it runs) the
hopper family, LSE output included. Exits non-zero on a NaN output.
SANITIZE_FAMILIES=hopper (or mma) runs one family's cases only: racecheck over both takes minutes.
SANITIZE_CASE=i runs only case i (0-based, of the list below), so racecheck can be run (and
time-limited) case by case; `--count` prints how many cases there are."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from gpu_helpers import make_qkv, run_hopper, run_mma, three_consumer_query_heads  # noqa: E402
from sageattn3._ext import _C  # noqa: E402

arch = _C.device_info(0)["sm_arch"]
pvs = ["fp16"] + (["fp8"] if arch >= 89 else [])
cases = [  # b, hq, hkv, sq, sk, d, causal, layout
    (1, 2, 1, 77, 130, 128, False, "HND"),
    (2, 2, 2, 129, 65, 64, True, "NHD"),
    (1, 3, 3, 33, 200, 72, False, "NHD_FLAT"),
    (1, 2, 2, 70, 70, 256, True, "HND"),
    (1, 1, 1, 1, 1, 96, False, "HND"),
    # long enough for the unchecked whole-tile iterations (the first ones above are all edge)
    (1, 2, 2, 200, 700, 128, False, "NHD_FLAT"),
    (1, 2, 1, 300, 777, 64, True, "HND"),
    (1, 1, 1, 150, 600, 256, False, "NHD"),
]
# one that takes hopper's three-consumer D = 128 CTAs on this GPU
_h = three_consumer_query_heads()
cases.append((1, _h, _h // 2, 377, 300, 128, False, "HND"))
if "--count" in sys.argv:  # for scripts/sanitize.sh, which runs racecheck one case per process
    print(len(cases))
    sys.exit(0)
only = os.environ.get("SANITIZE_FAMILIES")
if os.environ.get("SANITIZE_CASE", "") != "":
    cases = [cases[int(os.environ["SANITIZE_CASE"])]]
bad = 0
n = 0
for pv in (pvs if only in (None, "", "mma") else []):
    for b, hq, hkv, sq, sk, d, causal, layout in cases:
        q, k, v = make_qkv(b, hq, hkv, sq, sk, d, layout=layout)
        out = run_mma(q, k, v, layout=layout, heads=hq if layout == "NHD_FLAT" else None, causal=causal, pv=pv)
        torch.cuda.synchronize()
        if torch.isnan(out).any():
            print("NaN output:", pv, (b, hq, hkv, sq, sk, d, causal, layout))
            bad += 1
        n += 1
if "hopper" in _C.device_info(0).get("families", []) and only in (None, "", "hopper"):
    from sageattn3 import _lse
    for b, hq, hkv, sq, sk, d, causal, layout in cases:
        if d > 128:
            continue
        q, k, v = make_qkv(b, hq, hkv, sq, sk, d, layout=layout)
        heads = hq if layout == "NHD_FLAT" else None
        out = run_hopper(q, k, v, layout=layout, heads=heads, causal=causal)
        o2, lse = _lse.attention_with_lse(q, k, v, layout=layout, heads=heads, is_causal=causal, kernel="hopper")
        torch.cuda.synchronize()
        n += 2
        if torch.isnan(out).any() or torch.isnan(o2).any() or torch.isnan(lse).any():
            print("NaN output: hopper", (b, hq, hkv, sq, sk, d, causal, layout))
            bad += 1
print(f"sanitize cases: {n} run, {bad} with NaN")
sys.exit(1 if bad else 0)
