"""Attention benchmark against torch SDPA: `python -m sageattn3 bench` or
`python benchmarks/bench_attention.py`.

Method (ANCHORS.md, "How to measure"), per shape, in one process on the same inputs:
  1. SDPA with torch's default backend choice, called the way ComfyUI calls it for that layout
     (HND: direct; NHD: transposed views; NHD_FLAT (B,S,H*D): view + transpose, output
     transposed back and reshaped), first;
  2. sageattn3.sageattn(kernel="auto") (what users get: the dispatcher may route to SDPA);
  3. every kernel family of the policy forced (_policy.FAMILIES: hopper, mma): sageattn(kernel=
     <family>) when the dispatcher serves it with the kernel, otherwise the kernel called
     directly (same workspace/output allocation as the dispatcher), so each kernel's own speed
     is visible at every size; a family not compiled for this GPU shows "unavailable".
  4. every peer found installed (sageattn3/_peers.py: SageAttention2 `sageattn`, comfy-kitchen
     `int8_attention`; --no-peers skips them), on the same inputs in our layout, converting
     layout inside the timed call only as the peer needs it (so its copies count); a peer
     that is absent is skipped with a message, one that can't take a shape (comfy-kitchen:
     causal) shows why in that row; the JSON records each peer's version.
Each: 1 s of GPU rest (--rest; under sustained load the card lowers its clock, and a backend
timed right after another would inherit that one's load), warm-up (>= 0.3 s of calls, so the
card's power-driven clock has settled for that kernel), then the median of >= 20
CUDA-event-timed calls back to back (>= 11 for the 82,992-token shape; --runs overrides),
queued behind a short spin kernel so the events time the GPU's work even where launching a
call takes the host as long as running it (small shapes); the host's time per call is
reported beside it ("host us"). TOPS counts 4*B*Hq*Sq*Sk*D operations (half for causal). "x SDPA"
is TOPS(ours) / TOPS(SDPA) (> 1 = faster). Peak extra memory: torch.cuda.reset_peak_memory_stats
before one call, max_memory_allocated after it minus memory_allocated before it (so the output
itself counts: SDPA is ~1.0x), reported as a multiple of the output's size.
Accuracy: rel-L1 = sum|out-ref|/sum|ref| against float64, on inputs whose K carries a per-channel
offset of 5 sigma (as real DiT keys do). To stay fast at 80k tokens the float64 reference is
computed for 256 random query rows (all keys) of one random head (seeded); every backend is
compared on those same rows; "cos/SDPA" is the cosine of each backend's whole output vs SDPA's
on the same K-offset inputs. Timing uses plain N(0,1) bf16 inputs.
Writes a table to stdout, a progress line per shape to stderr, JSON (every number, card,
driver/CUDA/torch versions, git commit) and a PNG plot (if matplotlib is installed) to
benchmarks/results/<YYYY-MM-DD>_<card>.json/.png (or --out DIR; an existing file gets a _2, _3...
suffix). The git commit is read with `git rev-parse HEAD`; where the tree has no .git (a copied
working tree), set SAGEATTN3_GIT_COMMIT=<sha> to record it.
Without a CUDA device it prints what it would run and exits 0.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from . import _peers, _policy, _stats
from ._ext import _C

ACC_ROWS = 256
DEVICE = "cuda"  # tests swap in "cpu" together with a stand-in torch.cuda timer
K_OFFSET_SIGMA = 5.0


@dataclass
class Shape:
    name: str
    b: int
    h: int
    s: int
    d: int
    causal: bool = False
    sk: Optional[int] = None
    hkv: Optional[int] = None
    layout: Optional[str] = None  # None: NHD_FLAT for Wan shapes, HND otherwise (see default_layout)
    min_runs: int = 20
    desc: str = ""

    @property
    def seq_k(self) -> int:
        return self.sk or self.s

    @property
    def heads_kv(self) -> int:
        return self.hkv or self.h

    def flops(self) -> float:
        f = 4.0 * self.b * self.h * self.s * self.seq_k * self.d
        return f / 2 if self.causal else f

    def dims(self) -> str:
        hk = f"/{self.heads_kv}" if self.heads_kv != self.h else ""
        sk = f"x{self.seq_k}" if self.seq_k != self.s else ""
        return f"({self.b},{self.h}{hk},{self.s}{sk},{self.d})"


DEFAULT_SHAPES = [
    Shape("s1k", 1, 24, 1024, 128, desc="short sequence"),
    Shape("flux", 1, 24, 4608, 128, desc="Flux 1024px"),
    Shape("16k", 1, 40, 16384, 128),
    Shape("16k-causal", 1, 40, 16384, 128, causal=True),
    Shape("wan-832x480", 1, 40, 32760, 128, layout="NHD_FLAT", desc="Wan 81 frames 832x480"),
    Shape("wan-832x1216", 1, 40, 82992, 128, layout="NHD_FLAT", min_runs=11,  # 0.3 s calls; 5 spread 8% on an H100
          desc="Wan 81 frames 832x1216"),
    Shape("hd64", 1, 32, 16384, 64),
    Shape("batch", 4, 40, 4096, 128),
]


def default_layout(shape: Shape) -> str:
    if shape.layout:
        return shape.layout
    return "NHD_FLAT" if shape.name.startswith("wan") else "HND"


def parse_shape(text: str) -> Shape:
    """'B,H,S,D[,causal][,Sk=N][,Hkv=N]' -> Shape. Raises ValueError with a usage hint."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    usage = f"--shape {text!r}: expected B,H,S,D[,causal][,Sk=N][,Hkv=N] with positive integers"
    if len(parts) < 4:
        raise ValueError(usage)
    try:
        b, h, s, d = (int(x) for x in parts[:4])
    except ValueError:
        raise ValueError(usage) from None
    causal, sk, hkv = False, None, None
    for p in parts[4:]:
        key, _, val = p.partition("=")
        key = key.strip().lower()
        try:
            if p.lower() == "causal":
                causal = True
            elif key == "sk" and val:
                sk = int(val)
            elif key == "hkv" and val:
                hkv = int(val)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(usage) from None
    if min(b, h, s, d) <= 0 or (sk is not None and sk <= 0) or (hkv is not None and (hkv <= 0 or h % hkv)):
        raise ValueError(usage + " (and H a multiple of Hkv)")
    name = f"custom-{b}x{h}x{s}x{d}" + (f"-sk{sk}" if sk else "") + (f"-hkv{hkv}" if hkv else "") + \
        ("-causal" if causal else "")
    return Shape(name, b, h, s, d, causal=causal, sk=sk, hkv=hkv, min_runs=20 if s * (sk or s) < 4e9 else 5)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


# ----------------------------------------------------------------------------- environment

def _git_commit() -> Dict[str, Optional[str]]:
    root = Path(__file__).resolve().parent.parent
    out: Dict[str, Optional[str]] = {"commit": os.environ.get("SAGEATTN3_GIT_COMMIT"), "dirty": None}
    if out["commit"]:
        return out
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            out["commit"] = r.stdout.strip()
            st = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
            out["dirty"] = bool(st.stdout.strip()) if st.returncode == 0 else None
    except Exception:
        pass
    return out


def _driver_version() -> Optional[str]:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
                           capture_output=True, text=True, timeout=20)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip().splitlines()[0]
    except Exception:
        pass
    return None


def _consumer_limits():
    from . import _limits

    return _limits.mode()


def environment(torch) -> dict:
    from . import __version__

    dev = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(dev)
    env = {
        "date": _dt.date.today().isoformat(),
        "utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "card": props.name,
        "sm_arch": 10 * props.major + props.minor,
        "sm_count": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "driver": _driver_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
        "sageattn3": __version__,
        "build": _C.build_info() if _C is not None else None,
        # SAGEATTN3_CONSUMER_LIMITS (sageattn3/_limits.py): the kernels took a GeForce card's host path
        "consumer_limits": _consumer_limits(),
        "git": _git_commit(),
        "argv": sys.argv[1:],
    }
    try:
        env["cuda_driver_api"] = torch._C._cuda_getDriverVersion()
    except Exception:
        pass
    try:
        env["device_facts"] = _C.device_info(dev) if _C is not None and env["build"].get("cuda") else None
    except Exception as exc:
        env["device_facts"] = {"error": str(exc)}
    return env


# ----------------------------------------------------------------------------- measuring

class _Unavailable(Exception):
    """A backend this machine/build does not have (not an error of the run)."""


@dataclass
class Measure:
    ms: Optional[float] = None
    tops: Optional[float] = None
    runs: int = 0
    times_ms: List[float] = field(default_factory=list)
    host_us: Optional[float] = None  # host time per timed call (Python + launches + 2 event records)
    peak_extra_bytes: Optional[int] = None
    mem_x_out: Optional[float] = None
    rel_l1: Optional[float] = None
    cos_sdpa: Optional[float] = None  # cosine of the whole output vs SDPA's, same (K-offset) inputs
    route: str = ""
    error: Optional[str] = None


def _empty_cache(torch) -> None:
    try:  # after a kernel fault the context is gone and this raises too; keep reporting
        torch.cuda.empty_cache()
    except Exception:
        pass


def _failure(torch, exc: Exception) -> str:
    """The message recorded for a failed measurement; after an OOM the cache is freed so the
    next backend or shape still gets its memory."""
    if "out of memory" in str(exc).lower():
        _empty_cache(torch)
    return f"{type(exc).__name__}: {exc}"


def _hold_gpu(torch, seconds: float) -> None:
    """Queue a spin kernel that keeps the GPU busy for about `seconds` (clock64 cycles; 2e9 per
    second over-estimates every current clock, so the hold is never shorter than asked)."""
    sleep = getattr(torch.cuda, "_sleep", None)
    if DEVICE == "cuda" and sleep is not None:
        sleep(int(seconds * 2e9))


def time_steady(torch, fn, warmup: int, runs: int, warmup_s: float = 0.3, rest_s: float = 0.0):
    """(per-call GPU times in ms, host time per call in us) once fn runs in steady state.

    First the GPU idles for rest_s: the H100 lowers its clock under sustained load (one run
    saw the same cuDNN SDPA kernel slow from 4.6 to 5.4 ms within 20 calls when it was timed
    second in a row, while the first and a later re-timing held 4.6), so every backend starts
    from the same rested state instead of inheriting the load of the one timed before it.
    Warm-up: `warmup` calls and at least warmup_s seconds. The H100's clock follows its power
    draw with a lag of milliseconds, so a kernel timed right after another inherits that one's
    clock: timed in alternation with cuDNN SDPA, our kernel lost 10% and SDPA gained 10%, and
    with a short warm-up two identical SDPA routes differed by up to 9%. Then `runs` calls
    back to back, each between two CUDA events, queued behind a spin kernel that holds the GPU
    while the host queues them all: each event pair then times the GPU's work for that call,
    not the host's launch gap (at small shapes, e.g. 1k tokens, a call's Python and launch
    cost about as much as its kernel: 32-51 us vs 32-49 us per SDPA call at s1k on an H200
    machine, so such timings follow host jitter; one H100 run read `auto` at 0.44x SDPA there
    for a call that is SDPA plus ~4 us of routing). The host's time per call (enqueue only,
    the GPU still busy) is returned separately."""
    torch.cuda.synchronize()
    time.sleep(rest_s)
    t0 = time.perf_counter()
    n = 0
    host = []
    while n < warmup or time.perf_counter() - t0 < warmup_s:
        h = time.perf_counter()
        fn()
        host.append(time.perf_counter() - h)
        n += 1
        if n % 8 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    _hold_gpu(torch, min(0.2, 1e-3 + 3 * runs * statistics.median(host)))
    h0 = time.perf_counter()
    for s, e in ev:
        s.record()
        fn()
        e.record()
    host_us = (time.perf_counter() - h0) / runs * 1e6
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in ev], host_us


def peak_memory(torch, fn):
    """(output, peak bytes above what was allocated before the call)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    return out, torch.cuda.max_memory_allocated() - before


def _sdpa(torch, q, k, v, layout, heads, causal):
    from ._check import _direct_sdpa
    return _direct_sdpa(torch, q, k, v, layout, heads, is_causal=causal)


def _make(torch, gen, sh: Shape, layout: str, dtype):
    from ._check import make_inputs
    return make_inputs(torch, gen, sh.b, sh.h, sh.heads_kv, sh.s, sh.seq_k, sh.d, layout=layout, dtype=dtype,
                       device=DEVICE)


def bench_shape(torch, sh: Shape, *, layout: str, pv: str, dtype, seed: int, warmup: int,
                runs: Optional[int], accuracy: bool, rest_s: float = 1.0, peers=()) -> dict:
    from . import api
    from ._check import _kernel_call

    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    q, k, v = _make(torch, gen, sh, layout, dtype)
    heads = sh.h if layout == "NHD_FLAT" else None
    nruns = runs if runs is not None else sh.min_runs
    flops = sh.flops()
    row = {"name": sh.name, "desc": sh.desc, "b": sh.b, "h": sh.h, "hkv": sh.heads_kv, "sq": sh.s, "sk": sh.seq_k,
           "d": sh.d, "causal": sh.causal, "layout": layout, "dtype": str(dtype).replace("torch.", ""),
           "flops": flops}

    has_kernels = _C is not None and bool(_C.build_info().get("cuda"))
    facts = None
    if has_kernels:
        try:
            facts = _C.device_info(torch.cuda.current_device())
        except Exception:
            facts = None
    arch = int((facts or {}).get("sm_arch", 0))

    cur = {"q": q, "k": k, "v": v}  # the inputs every backend reads (the accuracy pass swaps K)

    def call_auto():
        return api.sageattn(cur["q"], cur["k"], cur["v"], tensor_layout=layout, is_causal=sh.causal, heads=heads,
                            pv=pv)

    def call_family_api(fam):
        return lambda: api.sageattn(cur["q"], cur["k"], cur["v"], tensor_layout=layout, is_causal=sh.causal,
                                    heads=heads, kernel=fam, pv=pv)

    def call_family_direct(fam):
        fam_pv = pv if pv != "auto" else _policy.default_pv(fam, arch)

        def call():
            out = torch.empty_like(cur["q"])
            _kernel_call(torch, fam, cur["q"], cur["k"], cur["v"], out, layout, heads, sh.causal, None, fam_pv)
            return out
        return call

    def call_sdpa():
        return _sdpa(torch, cur["q"], cur["k"], cur["v"], layout, heads, sh.causal)

    def route_of(fn) -> str:
        """Which path one call takes: the family that served it, or 'SDPA: <reason>'."""
        before = _stats.stats()
        fn()
        torch.cuda.synchronize()
        after = _stats.stats()
        for fam, n in after["served"].items():
            if n > before["served"].get(fam, 0):
                return fam
        for reason, n in after["fallback"].items():
            if n > before["fallback"].get(reason, 0):
                return "SDPA: " + reason
        return "?"

    def resolve_auto():
        routes["auto"] = route_of(call_auto)
        return call_auto

    def resolve_family(fam):
        if not has_kernels:
            raise _Unavailable("unavailable: " + (str(_C.build_info().get("why_no_cuda")) if _C else "no extension"))
        if facts is not None and fam not in facts.get("families", ()):
            raise _Unavailable(f"unavailable: no {fam} kernel for sm_{facts.get('sm_arch')} in this build")
        emulated = _policy.EMULATED.get((fam, int(facts.get("sm_arch") or 0))) if facts is not None else None
        if emulated:
            raise _Unavailable(f"unavailable: not timed, {emulated}")
        api_call = call_family_api(fam)
        r = route_of(api_call)
        if r == fam:
            routes[fam] = f"sageattn(kernel='{fam}')"
            return api_call
        direct = call_family_direct(fam)
        unsupported = getattr(_C, "UnsupportedError", ())
        try:
            direct()
            torch.cuda.synchronize()
        except unsupported as exc:
            raise _Unavailable(f"unavailable: kernel declined: {exc}") from None
        routes[fam] = f"direct run_family('{fam}') (dispatcher: {r})"
        return direct

    def resolve_peer(peer):
        """A peer (_peers.py) is one more backend: same inputs (read through `cur`), its own
        layout conversion inside the call, so its copies are timed and counted."""
        ok, why = peer.supports(sh, layout, sh.causal)
        if not ok:
            raise _Unavailable(f"unavailable: {peer.label} {why}")
        routes[peer.key] = f"{peer.label} {peer.version}"
        return lambda: peer.call(torch, cur["q"], cur["k"], cur["v"], layout, heads, sh.causal)

    # SDPA first (ANCHORS.md), then ours; each backend's path is resolved right before it runs.
    routes = {"sdpa": "SDPA (default backend)"}
    backends = []
    results: Dict[str, Measure] = {}
    out_bytes = q.numel() * q.element_size()
    plan = [("sdpa", lambda: call_sdpa), ("auto", resolve_auto)]
    plan += [(f, (lambda f=f: resolve_family(f))) for f in _policy.FAMILIES]
    plan += [(p.key, (lambda p=p: resolve_peer(p))) for p in peers]
    row["backends"] = [name for name, _ in plan]
    for name, resolve in plan:
        m = Measure()
        results[name] = m
        try:
            fn = resolve()
        except _Unavailable as exc:
            m.route = m.error = str(exc)
            continue
        except Exception as exc:
            m.route = m.error = f"error: {type(exc).__name__}: {exc}"
            continue
        m.route = routes.get(name, "")
        backends.append((name, fn))
        try:
            out, peak = peak_memory(torch, fn)
            if not (tuple(out.shape) == tuple(q.shape) and out.dtype == q.dtype):
                m.error = f"output {tuple(out.shape)} {out.dtype}, expected {tuple(q.shape)} {q.dtype}"
            del out
            m.peak_extra_bytes = int(peak)
            m.mem_x_out = peak / out_bytes
            w = warmup if warmup is not None else (1 if flops > 5e13 else 3)
            m.times_ms, m.host_us = time_steady(torch, fn, w, nruns, rest_s=rest_s)
            m.runs = nruns
            m.ms = statistics.median(m.times_ms)
            m.tops = flops / (m.ms * 1e-3) / 1e12
        except Exception as exc:
            m.error = _failure(torch, exc)
    # SDPA once more at the end: how far the same kernel drifts within this shape's measurement
    # is the noise floor for every ratio in the row (auto routed to SDPA cannot beat it).
    row["sdpa_noise"] = None
    if results["sdpa"].ms:
        try:
            again = statistics.median(time_steady(torch, call_sdpa, 1, nruns, rest_s=rest_s)[0])
            row["sdpa_again_ms"] = again
            row["sdpa_noise"] = abs(again - results["sdpa"].ms) / results["sdpa"].ms
        except Exception as exc:
            row["sdpa_again_error"] = _failure(torch, exc)

    if accuracy:
        try:
            row["accuracy"] = _accuracy(torch, sh, layout, dtype, seed, gen, cur, backends, results)
        except Exception as exc:  # keep the timings
            row["accuracy"] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            cur["k"] = k
    row["out_bytes"] = out_bytes
    for name, m in results.items():
        row[name] = asdict(m)
    s_ms = results["sdpa"].ms
    for name in row["backends"][1:]:
        m = results[name]
        row[f"x_sdpa_{name}"] = (s_ms / m.ms) if (s_ms and m.ms) else None
    del q, k, v
    return row


# ----------------------------------------------------------------------------- output

def _cosine(torch, a, b, layout: str, heads: int) -> float:
    """Cosine similarity of two whole outputs, accumulated in float64 one head at a time (so a
    float copy of an 80k-token output is never made)."""
    from ._check import to_hnd
    ah, bh = to_hnd(a, layout, heads), to_hnd(b, layout, heads)
    dot = na = nb = 0.0
    for h in range(ah.shape[1]):
        x, y = ah[:, h].double(), bh[:, h].double()
        dot += float((x * y).sum())
        na += float((x * x).sum())
        nb += float((y * y).sum())
    return dot / math.sqrt(na * nb) if na > 0 and nb > 0 else float("nan")


def _accuracy(torch, sh: Shape, layout: str, dtype, seed: int, gen, cur: dict, backends, results) -> dict:
    """rel-L1 vs float64 of every backend on the K-offset variant of the inputs, on ACC_ROWS
    random query rows (all keys) of one random head of batch 0; and the cosine of each whole
    output against SDPA's on the same inputs (SDPA runs first, its output is kept for this)."""
    from ._check import reference_f64_torch, rel_l1_torch, to_hnd

    q, k, v = cur["q"], cur["k"], cur["v"]
    off = (K_OFFSET_SIGMA * torch.randn(sh.heads_kv, sh.d, generator=gen, device=DEVICE)).to(dtype)
    k_off = k.clone()
    to_hnd(k_off, layout, sh.heads_kv).add_(off[None, :, None, :])
    cpu_gen = torch.Generator().manual_seed(seed)
    head = int(torch.randint(sh.h, (1,), generator=cpu_gen).item())
    nrows = min(ACC_ROWS, sh.s)
    rows = torch.randperm(sh.s, generator=cpu_gen)[:nrows].sort().values.to(DEVICE)
    qh, kh, vh = to_hnd(q, layout, sh.h), to_hnd(k_off, layout, sh.heads_kv), to_hnd(v, layout, sh.heads_kv)
    b0 = 0
    ref = reference_f64_torch(torch, qh[b0:b0 + 1], kh[b0:b0 + 1], vh[b0:b0 + 1], is_causal=sh.causal,
                              rows=rows, heads=[head])
    cur["k"] = k_off
    sdpa_out = None
    for name, fn in backends:
        m = results[name]
        try:
            out = fn()
            torch.cuda.synchronize()
            oh = to_hnd(out, layout, sh.h)[b0:b0 + 1, head:head + 1].index_select(2, rows)
            m.rel_l1 = rel_l1_torch(torch, oh, ref)
            if not math.isfinite(m.rel_l1):
                m.error = (m.error or "") + " non-finite output"
            if name == "sdpa":
                sdpa_out = out
            elif sdpa_out is not None:
                m.cos_sdpa = _cosine(torch, out, sdpa_out, layout, sh.h)
            del out
        except Exception as exc:
            m.error = (m.error or "") + f" accuracy run: {type(exc).__name__}: {exc}"
    if sdpa_out is not None:
        results["sdpa"].cos_sdpa = 1.0
    del sdpa_out
    cur["k"] = k
    return {"rows": nrows, "head": head, "batch": b0, "k_offset_sigma": K_OFFSET_SIGMA}


def _f(x, fmt="{:.1f}", none="-"):
    return none if x is None else fmt.format(x)


OURS = ("sdpa", "auto") + _policy.FAMILIES
TAGS = {"sdpa": "s", "auto": "a", **{f: f[0] for f in _policy.FAMILIES}, **{p.key: p.tag for p in _peers.PEERS}}


def _peer_keys(rows: List[dict]) -> List[str]:
    """The peers timed in any row, in the order they ran."""
    keys: List[str] = []
    for r in rows:
        keys += [k for k in r.get("backends", OURS) if k not in OURS and k not in keys]
    return keys


def format_table(rows: List[dict]) -> str:
    peers = _peer_keys(rows)
    names = list(OURS) + peers
    more = names[2:]  # the families forced, then the peers: ms, TOPS, xSDPA each
    tags = "/".join(TAGS.get(n, n) for n in names)
    w = 6 + 5 * len(peers)
    head = (f"{'shape':<14} {'layout':<8} {'(B,H,Sq,D)':<22} {'SDPA ms':>8} {'TOPS':>6} | {'auto ms':>8} {'TOPS':>6} "
            f"{'xSDPA':>6} {'route':<7} | "
            + "".join(f"{TAGS.get(p, p) + ' ms':>8} {'TOPS':>6} {'xSDPA':>6} | " for p in more)
            + f"{'mem xout ' + tags:<{10 + w + 6}} | {'rel-L1 ' + tags:<{16 + 7 * len(peers) + 6}} | "
            f"{'cos/SDPA ' + tags[2:]:<{20 + 8 * len(peers)}} | {'host us ' + tags:<{14 + 4 * len(peers)}} | noise")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['name']:<14} {r.get('layout', ''):<8} ERROR: {r['error']}")
            continue
        s, a = r["sdpa"], r["auto"]
        ms = [r.get(n) or {} for n in names]
        ar = a.get("route") or ""
        route = ar if ar in _policy.FAMILIES else ("sdpa" if ar.startswith("SDPA") else "?")
        dims = f"({r['b']},{r['h']}{'/' + str(r['hkv']) if r['hkv'] != r['h'] else ''},{r['sq']}" \
               f"{'x' + str(r['sk']) if r['sk'] != r['sq'] else ''},{r['d']}){' c' if r['causal'] else ''}"
        mem = "/".join(_f(x.get("mem_x_out"), "{:.2f}") for x in ms)
        acc = "/".join(_f(x.get("rel_l1"), "{:.4f}") for x in ms)
        cos = "/".join(_f(x.get("cos_sdpa"), "{:.5f}") for x in ms[1:])
        host = "/".join(_f(x.get("host_us"), "{:.0f}") for x in ms)
        more_cols = "".join(f"{_f((r.get(p) or {}).get('ms'), '{:.3f}'):>8} {_f((r.get(p) or {}).get('tops')):>6} "
                            f"{_f(r.get('x_sdpa_' + p), '{:.2f}'):>6} | " for p in more)
        lines.append(
            f"{r['name']:<14} {r['layout']:<8} {dims:<22} {_f(s.get('ms'), '{:.3f}'):>8} {_f(s.get('tops')):>6} | "
            f"{_f(a.get('ms'), '{:.3f}'):>8} {_f(a.get('tops')):>6} {_f(r.get('x_sdpa_auto'), '{:.2f}'):>6} "
            f"{route:<7} | {more_cols}{mem:<{10 + w + 6}} | "
            f"{acc:<{16 + 7 * len(peers) + 6}} | {cos:<{20 + 8 * len(peers)}} | {host:<{14 + 4 * len(peers)}} | "
            f"{_f(None if r.get('sdpa_noise') is None else 100 * r['sdpa_noise'], '{:.0f}%')}")
        for name in names:
            err = (r.get(name) or {}).get("error")
            if err:
                lines.append(f"{'':<14} {name}: {err}")
        if r.get("sdpa_again_error"):
            lines.append(f"{'':<14} sdpa re-timing (noise): {r['sdpa_again_error']}")
        if (r.get("accuracy") or {}).get("error"):
            lines.append(f"{'':<14} accuracy: {r['accuracy']['error']}")
    labels = {p.key: p.label for p in _peers.PEERS}
    legend = "; ".join(f"{TAGS.get(p, p)} = {labels.get(p, p)}" for p in peers)
    fams = " / ".join(f"{f} kernel forced" for f in _policy.FAMILIES)
    lines.append("xSDPA = TOPS(ours)/TOPS(SDPA); mem = peak extra memory / output size; rel-L1 vs float64 "
                 f"({ACC_ROWS} random query rows of one head, K offset {K_OFFSET_SIGMA:g} sigma); cos/SDPA = cosine "
                 f"of the whole output vs SDPA's on those inputs; {'/'.join(TAGS[n] for n in OURS)} = SDPA / "
                 f"sageattn auto / {fams}" + (f"; peers (same run, same inputs): {legend}" if peers else "")
                 + "; host = host time per timed call (the GPU times exclude it); noise = "
                 "SDPA timed again after the others, relative change")
    return "\n".join(lines)


def plot(rows: List[dict], env: dict, path: Path) -> Optional[str]:
    """Grouped TOPS bars per shape. Returns None, or why no plot was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return f"matplotlib not available ({type(exc).__name__}); no plot (pip install matplotlib)"
    rows = [r for r in rows if not r.get("error")]
    if not rows:
        return "nothing to plot"
    names = [r["name"] for r in rows]
    series = [("sdpa", "SDPA (default)"), ("auto", "sageattn3 auto")]
    series += [(f, f"{f} kernel forced") for f in _policy.FAMILIES]
    versions = {p.get("key"): p for p in env.get("peers") or []}
    series += [(k, f"{versions.get(k, {}).get('label', k)} {versions.get(k, {}).get('version') or ''} (peer)".strip())
               for k in _peer_keys(rows)]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(series) * len(rows)), 4.8))
    for i, (key, label) in enumerate(series):
        vals = [(r.get(key) or {}).get("tops") or 0.0 for r in rows]
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(rows))]
        bars = ax.bar(xs, vals, width, label=label)
        if key != "sdpa":
            for bar, r in zip(bars, rows):
                x = r.get(f"x_sdpa_{key}")
                if x:
                    ax.annotate(f"{x:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{n}\n{r['layout']}" for n, r in zip(names, rows)], fontsize=8)
    ax.set_ylabel("TOPS (4*B*H*Sq*Sk*D / time; causal halved)")
    git = ((env.get("git") or {}).get("commit") or "")[:10] or "no git commit"
    ax.set_title(f"sageattn3 {env.get('sageattn3')} vs SDPA{' and peers' if len(series) > 3 else ''} on {env.get('card')} (torch {env.get('torch')}, "
                 f"{env.get('date')}, {git})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def default_out_dir() -> Path:
    repo_bench = Path(__file__).resolve().parent.parent / "benchmarks"
    if repo_bench.is_dir():
        return repo_bench / "results"
    return Path.cwd() / "sageattn3-bench-results"


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(2, 1000):
        p = path.with_name(f"{path.stem}_{i}{path.suffix}")
        if not p.exists():
            return p
    return path


# ----------------------------------------------------------------------------- driver

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", action="append", default=[], metavar="B,H,S,D[,causal][,Sk=N][,Hkv=N]",
                   help="benchmark this shape (repeatable); replaces the default set unless --only names defaults")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only these default shapes (repeatable or comma-separated): "
                        + ", ".join(s.name for s in DEFAULT_SHAPES))
    p.add_argument("--layout", choices=("HND", "NHD", "NHD_FLAT"), default=None,
                   help="input layout for every shape (default: NHD_FLAT for the Wan shapes, as ComfyUI passes "
                        "(B,S,H*D); HND otherwise)")
    p.add_argument("--pv", choices=("auto", "fp16", "fp8", "fp8_f16acc"), default="auto", help="P.V precision for sageattn3")
    p.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    p.add_argument("--runs", type=int, default=None, help="timed calls per backend (default 20; 11 for 82,992 tokens)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per backend (default 3; 1 for huge shapes)")
    p.add_argument("--rest", type=float, default=1.0, metavar="SECONDS",
                   help="GPU idle time before each backend's warm-up, so each starts from the same clock state "
                        "(default 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-accuracy", action="store_true", help="skip the float64 comparison")
    p.add_argument("--out", metavar="DIR", default=None, help="results folder (default: benchmarks/results in a "
                   "source checkout, else ./sageattn3-bench-results)")
    p.add_argument("--json", metavar="PATH", default=None, help="write the JSON here instead")
    p.add_argument("--no-save", action="store_true", help="write no JSON/PNG")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-peers", action="store_true", help="don't time the other attention packages found "
                   "installed (sageattention, comfy_kitchen; see sageattn3/_peers.py)")


def select_shapes(args, error) -> List[Shape]:
    by_name = {s.name: s for s in DEFAULT_SHAPES}
    only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in only if n not in by_name]
    if unknown:
        error(f"unknown shape name(s) {unknown}; known: {', '.join(by_name)}")
    shapes: List[Shape] = [by_name[n] for n in only]
    for text in args.shape:
        try:
            shapes.append(parse_shape(text))
        except ValueError as exc:
            error(str(exc))
    if args.runs is not None and args.runs < 1:
        error("--runs must be >= 1")
    if not args.rest >= 0:
        error("--rest must be >= 0 seconds")
    return shapes or list(DEFAULT_SHAPES)


def _cuda_reason(torch) -> Optional[str]:
    if torch is None:
        return "torch is not importable"
    try:
        if not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False" + (
                ", CPU-only torch build)" if torch.version.cuda is None else ")")
    except Exception as exc:
        return f"torch.cuda failed: {exc}"
    return None


def _report_peers(found, stream) -> None:
    for p in found:
        if p.available:
            print(f"bench: peer {p.label} {p.version} ({p.module}, {p.where}): timed beside us", file=stream)
        else:
            print(f"bench: peer {p.label} skipped: {p.reason}", file=stream)


def run(args, shapes: List[Shape], stream=None) -> dict:
    """Benchmark `shapes`; returns {'env', 'rows', 'ok', 'json', 'png'}. Prints as it goes."""
    stream = stream or sys.stdout
    try:
        import torch
    except Exception:
        torch = None
    reason = _cuda_reason(torch)
    if reason is not None:
        print(f"bench: {reason}; nothing was timed. On a CUDA machine it would run:", file=stream)
        for sh in shapes:
            layout = args.layout or default_layout(sh)
            runs = args.runs if args.runs is not None else sh.min_runs
            print(f"  {sh.name:<14} {sh.dims():<24} {'causal' if sh.causal else '':<7} {layout:<9} "
                  f"{sh.flops() / 1e12:8.3g} TFLOP/call  SDPA, sageattn(auto), "
                  f"{', '.join(_policy.FAMILIES)} forced; median of {runs} runs",
                  file=stream)
        if not args.no_peers:
            _report_peers(_peers.discover(torch), stream)
        return {"env": None, "rows": [], "ok": True, "skipped": reason}

    env = environment(torch)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    print(f"bench: {env['card']} (sm_{env['sm_arch']}, {env['sm_count']} SMs), driver {env['driver']}, "
          f"torch {env['torch']} CUDA {env['torch_cuda']} cuDNN {env['cudnn']}, sageattn3 {env['sageattn3']} "
          f"(kernels: {'yes, ' + ','.join(env['build'].get('cuda_archs') or []) if env['build'] and env['build'].get('cuda') else 'no'}), "
          f"commit {(env['git'] or {}).get('commit')}"
          + (f"; CONSUMER LIMITS {env['consumer_limits']} (a GeForce card's host path on this GPU's binary)"
             if env.get("consumer_limits") else ""), file=sys.stderr, flush=True)
    found = [] if args.no_peers else _peers.discover(torch, env["sm_arch"])
    env["peers"] = [p.facts() for p in found]
    peers = [p for p in found if p.available]
    _report_peers(found, stream)
    rows = []
    t_all = time.perf_counter()
    for i, sh in enumerate(shapes):
        layout = args.layout or default_layout(sh)
        t0 = time.perf_counter()
        try:
            row = bench_shape(torch, sh, layout=layout, pv=args.pv, dtype=dtype, seed=args.seed + i,
                              warmup=args.warmup, runs=args.runs, accuracy=not args.no_accuracy,
                              rest_s=args.rest, peers=peers)
        except Exception as exc:
            row = {"name": sh.name, "layout": layout, "error": f"{type(exc).__name__}: {exc}"}
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        _empty_cache(torch)
        if row.get("error"):
            msg = f"ERROR {row['error']}"
        else:
            s, a = row["sdpa"], row["auto"]
            msg = (f"SDPA {_f(s['ms'], '{:.3f}')} ms {_f(s['tops'])} TOPS | auto {_f(a['ms'], '{:.3f}')} ms "
                   f"{_f(row['x_sdpa_auto'], '{:.2f}')}x [{a['route'] or a.get('error')}]"
                   + "".join(f" | {f} {_f((row.get(f) or {}).get('ms'), '{:.3f}')} ms "
                             f"{_f(row.get('x_sdpa_' + f), '{:.2f}')}x" for f in _policy.FAMILIES)
                   + "".join(f" | {p.tag} {_f(row.get('x_sdpa_' + p.key), '{:.2f}')}x" for p in peers))
        print(f"[{i + 1}/{len(shapes)}] {sh.name} {sh.dims()} {layout}: {msg} ({row['seconds']:.1f} s)",
              file=sys.stderr, flush=True)
    print(format_table(rows), file=stream, flush=True)
    ok = not any(_row_errors(r) for r in rows)
    result = {"env": env, "rows": rows, "ok": ok, "seconds": time.perf_counter() - t_all,
              "method": __doc__.split("\n\n")[1] if __doc__ else ""}
    if not args.no_save:
        if args.json:
            jpath = Path(args.json)
        else:
            out_dir = Path(args.out) if args.out else default_out_dir()
            jpath = _unique(out_dir / f"{env['date']}_{slug(env['card'])}.json")
        jpath.parent.mkdir(parents=True, exist_ok=True)
        jpath.write_text(json.dumps(result, indent=1, default=str) + "\n")
        result["json"] = str(jpath)
        print(f"bench: wrote {jpath}", file=stream)
        if not args.no_plot:
            ppath = jpath.with_suffix(".png")
            why = plot(rows, env, ppath)
            if why:
                print(f"bench: {why}", file=stream)
            else:
                result["png"] = str(ppath)
                print(f"bench: wrote {ppath}", file=stream)
    print(f"bench: {len(rows)} shapes in {time.perf_counter() - t_all:.0f} s", file=stream, flush=True)
    return result


def _row_errors(row: dict) -> List[str]:
    """Errors of one row; a backend that is merely unavailable (no kernels) is not an error. A
    peer's failure is shown in the table but is not ours to fail the run for."""
    if row.get("error"):
        return [row["error"]]
    errs = []
    for k in OURS:
        m = row.get(k) or {}
        if m.get("error") and not str(m.get("route", "")).startswith("unavailable"):
            errs.append(f"{k}: {m['error']}")
    return errs


def summary(result: dict) -> str:
    """One line for `python -m sageattn3` (no subcommand)."""
    if result.get("skipped"):
        return f"bench: skipped ({result['skipped']})"
    rows = [r for r in result["rows"] if not r.get("error")]
    parts = []
    for key in ["auto", *_policy.FAMILIES] + _peer_keys(rows):
        xs = [r[f"x_sdpa_{key}"] for r in rows if r.get(f"x_sdpa_{key}")]
        if xs:
            gm = math.exp(sum(math.log(x) for x in xs) / len(xs))
            parts.append(f"{key}: geomean {gm:.2f}x SDPA (min {min(xs):.2f}, max {max(xs):.2f}) over {len(xs)} shapes")
        else:
            parts.append(f"{key}: no timings")
    return f"bench on {result['env']['card']}: " + "; ".join(parts)


def main(argv: Optional[List[str]] = None, prog: str = "bench_attention.py") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    add_arguments(p)
    args = p.parse_args(argv)
    return main_from_args(args, p.error)


def main_from_args(args, error) -> int:
    shapes = select_shapes(args, error)
    result = run(args, shapes)
    return 0 if result["ok"] else 1
