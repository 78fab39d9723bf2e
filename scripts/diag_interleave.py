"""Timing-order diagnostic (not a benchmark): SDPA and sageattn(kernel="mma") timed back to back
(each in its own steady state) and in alternation, at 16k and 32k tokens, with the SM clock and
power read by nvidia-smi. On the H100 alternation moved 10% of throughput from our kernel to
SDPA (the clock follows power draw with a lag), which is why bench times back to back.
Usage: python scripts/diag_interleave.py"""
import statistics
import subprocess
import threading
import time

import torch
import torch.nn.functional as F

from sageattn3 import sageattn
def ev(): return torch.cuda.Event(enable_timing=True)
def run(fns, rounds, interleave):
    for f in fns: f(); f()
    torch.cuda.synchronize()
    T=[[] for _ in fns]
    if interleave:
        evs=[[(ev(),ev()) for _ in fns] for _ in range(rounds)]
        for r in evs:
            for f,(a,b) in zip(fns,r): a.record(); f(); b.record()
        torch.cuda.synchronize()
        for r in evs:
            for i,(a,b) in enumerate(r): T[i].append(a.elapsed_time(b))
    else:
        for i,f in enumerate(fns):
            evs=[(ev(),ev()) for _ in range(rounds)]
            for a,b in evs: a.record(); f(); b.record()
            torch.cuda.synchronize()
            T[i]=[a.elapsed_time(b) for a,b in evs]
    return [statistics.median(t) for t in T]
clk=[]
def mon():
    while not stop:
        o=subprocess.run(["nvidia-smi","--query-gpu=clocks.sm,power.draw","--format=csv,noheader,nounits"],capture_output=True,text=True).stdout.strip()
        clk.append(o); time.sleep(0.2)
for s,h in ((16384,40),(32760,40)):
    q,k,v=(torch.randn(1,h,s,128,device="cuda",dtype=torch.bfloat16) for _ in range(3))
    sd=lambda: F.scaled_dot_product_attention(q,k,v)
    mm=lambda: sageattn(q,k,v,tensor_layout="HND",kernel="mma")
    ops=4*h*s*s*128
    for mode in ("b2b","inter","b2b","inter"):
        stop=False; clk=[]; th=threading.Thread(target=mon); th.start()
        t=run([sd,mm],20,mode=="inter")
        stop=True; th.join()
        print(s,mode,"sdpa %.0f mma %.0f TOPS ratio %.3f"%(ops/t[0]/1e9,ops/t[1]/1e9,t[0]/t[1]),"clk/pwr",clk[len(clk)//2] if clk else None,flush=True)
