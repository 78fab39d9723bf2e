"""info(): what runs where on this machine, and why.

`info()` returns a plain dict (JSON-serializable) describing the package, the interpreter,
NumPy/torch, what the C extension was built with, every visible CUDA device and, per
device, which path serves which kind of call together with the reason. `format_info(d)`
renders it for humans (`python -m sageattn3 info`).

Nothing here is on the hot path and nothing here needs torch: without torch the report
says so, and device facts come from the extension itself when it has CUDA.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict, List, Optional

from . import _limits, _policy, _stats
from ._ext import LOAD_ERROR, _C, build_info

# The environment variables the build and the runtime look at (values only, never secrets).
ENV_VARS = ("SAGEATTN3_CUDA", "SAGEATTN3_CUDA_ARCHS", "SAGEATTN3_SELF_TEST", "SAGEATTN3_CONSUMER_LIMITS", "CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES")

# What the mma kernel family takes, for the human-readable route table. The C checker
# (csrc/) is the authority: a call outside this goes to SDPA with the checker's reason.
HEAD_DIM_RULE = "D % 8 == 0 and 32 <= D <= 256"

HOW_TO_GET_KERNELS = (
    "install the CUDA toolkit (nvcc), set CUDA_HOME to it (or put nvcc on PATH), unset SAGEATTN3_CUDA "
    "(or set it to 1), optionally choose targets with SAGEATTN3_CUDA_ARCHS (e.g. \"90a\" for H100, "
    "\"89\" for RTX 40xx, \"120a\" for RTX 50xx; default: 80;86;89;90a;120a, those this nvcc supports), "
    "then rebuild from the source folder: pip install --no-build-isolation --no-deps --force-reinstall . "
    "(--no-deps: your other packages, numpy and torch included, stay as they are; "
    "use -e . instead of . for an editable install)"
)


def _version() -> str:
    from . import __version__
    return __version__


def _torch_module():
    """torch if importable (never raises: a broken torch install counts as missing)."""
    try:
        import torch  # noqa: F401
        return torch, None
    except Exception as exc:  # ImportError, or OSError from a broken CUDA library
        return None, f"{type(exc).__name__}: {exc}"


def _torch_report(torch, err: Optional[str]) -> Dict[str, Any]:
    if torch is None:
        return {"version": None, "error": err,
                "note": "torch is optional for `import sageattn3`; attention calls need it"}
    rep: Dict[str, Any] = {"version": getattr(torch, "__version__", "?")}
    try:
        rep["cuda"] = torch.version.cuda
    except Exception:
        rep["cuda"] = None
    try:
        rep["cuda_available"] = bool(torch.cuda.is_available())
    except Exception as exc:
        rep["cuda_available"] = False
        rep["cuda_error"] = f"{type(exc).__name__}: {exc}"
    try:
        rep["cudnn"] = torch.backends.cudnn.version() if rep["cuda_available"] else None
    except Exception:
        rep["cudnn"] = None
    return rep


def _numpy_version() -> Optional[str]:
    try:
        import numpy
        return numpy.__version__
    except Exception:
        return None


def _build_report() -> Dict[str, Any]:
    b = dict(build_info())
    b["extension_loaded"] = _C is not None
    if LOAD_ERROR:
        b["load_error"] = LOAD_ERROR
    if not b.get("cuda"):
        b["how_to_get_kernels"] = HOW_TO_GET_KERNELS
    return b


def _compiled_arch_numbers(build: Dict[str, Any]) -> List[str]:
    return [str(a) for a in build.get("cuda_archs") or []]


def _device_from_torch(torch, index: int) -> Dict[str, Any]:
    p = torch.cuda.get_device_properties(index)
    return {"name": p.name, "sm_arch": 10 * p.major + p.minor, "sm_count": p.multi_processor_count,
            "total_memory_gib": round(p.total_memory / 2**30, 1), "source": "torch"}


def _device_from_ext(index: int) -> Dict[str, Any]:
    d = dict(_C.device_info(index))
    d["source"] = "sageattn3._C"
    return d


def _device_count(torch, build: Dict[str, Any]) -> tuple:
    """(count, note). torch decides when present; else the extension is probed."""
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return torch.cuda.device_count(), None
            return 0, "torch.cuda.is_available() is False (CPU-only torch, no driver, or no GPU)"
        except Exception as exc:
            return 0, f"torch.cuda failed: {type(exc).__name__}: {exc}"
    if _C is None or not build.get("cuda"):
        return 0, "no torch and no CUDA build: cannot enumerate devices"
    n = 0
    for i in range(64):
        try:
            _C.device_info(i)
        except Exception:
            break
        n += 1
    return n, ("found by sageattn3._C (torch not importable, so no attention calls can run)" if n else
               "sageattn3._C found no CUDA device")


def _routes(dev: Dict[str, Any], build: Dict[str, Any], torch_ok: bool) -> List[Dict[str, str]]:
    """Which path serves which case on this device, and why: generated from the policy tables
    (sageattn3/_policy.py) that the dispatcher walks, so the two cannot disagree."""
    sdpa = "SDPA"  # torch.nn.functional.scaled_dot_product_attention
    arch = dev.get("sm_arch")
    arch_n = arch if isinstance(arch, int) else 0
    min_scores = _policy.min_scores("auto", arch_n)
    min_causal = _policy.min_scores("auto", arch_n, causal=True)
    side = int(min_scores ** 0.5)
    min_keys = _policy.min_keys("auto", arch_n)
    keys_rule = f", Sk >= {min_keys:,}" if min_keys else ""

    def causal_rule(op: str) -> str:
        """The causal threshold where it differs, e.g. '; causal: Sq*Sk >= N (e.g. Sq=Sk >= n)'."""
        if min_causal == min_scores:
            return ""
        return f"; causal: Sq*Sk {op} {min_causal:,} (e.g. Sq=Sk {op} {int(min_causal ** 0.5)})"

    from . import _dispatch

    fams = list(_dispatch.families_here(dev)) if dev.get("families") else []
    routes: List[Dict[str, str]] = []

    def add(case: str, path: str, why: str) -> None:
        routes.append({"case": case, "path": path, "why": why})

    if not torch_ok:
        add("every call", "none", "torch is not importable: sageattn()/sageattn3_blackwell need torch")
        return routes
    if not build.get("cuda"):
        add("every call", sdpa, "this build has no CUDA kernels: " + str(build.get("why_no_cuda") or LOAD_ERROR)
            + ". To get kernels: " + HOW_TO_GET_KERNELS)
        return routes
    if dev.get("error"):
        add("every call", sdpa, f"sageattn3._C could not query this device ({dev['error']}), e.g. because the driver is "
            f"older than the CUDA {build.get('cuda_version')} runtime the kernels were built with")
        return routes
    if not any(f in fams for f in _policy.FAMILIES):
        archs = ", ".join(_compiled_arch_numbers(build)) or "none"
        add("every call", sdpa, f"no compiled kernel runs on sm_{arch} ({dev.get('name')}); compiled: {archs}. "
            f"Rebuild with SAGEATTN3_CUDA_ARCHS including {arch} (needs sm80 or newer).")
        return routes
    served = (f"bf16/fp16 CUDA tensors, HND (B,H,S,D) / NHD (B,S,H,D) / NHD_FLAT (B,S,H*D), what the family's "
              f"supports() takes (mma: {HEAD_DIM_RULE}; hopper: head dims up to 128, multiples of 8), GQA/MQA, causal or not, no mask, no grad")
    order = _policy.auto_order(arch)
    if order[0] == "sdpa":
        add(f"default call (kernel='auto'): {served}", sdpa,
            f"policy for sm_{arch}: SDPA is faster here than every kernel family built so far "
            "(sageattn3/_policy.py AUTO_ORDER, measurements in cuda/<family>/NOTES.md); kernel='<family>' forces one")
    else:
        ahead: List[str] = []
        for f in order:
            if f == "sdpa":
                add(f"default call that {', '.join(ahead)} can't serve", sdpa,
                    f"policy for sm_{arch}: SDPA is faster than the families after it")
                break
            pv = _policy.default_pv(f, arch)
            if f in fams:
                add(f"default call (kernel='auto'): {served}, Sq*Sk >= {min_scores:,} (e.g. Sq=Sk >= {side}){causal_rule('>=')}"
                    + keys_rule
                    + (f", not served by {', '.join(ahead)}" if ahead else ""),
                    f"{f} kernel (pv={pv})", f"policy for sm_{arch}: {' -> '.join(order)}; {_PV_WHY.get(pv, '')}")
            else:
                add(f"default call, family {f}", "skipped", f"{f} is not compiled for sm_{arch} in this build")
            ahead.append(f)
        add(f"Sq*Sk < {min_scores:,} (short sequences){causal_rule('<')}", sdpa,
            "launch and quantization overhead dominate there; SDPA is faster")
        if min_keys:
            add(f"Sk < {min_keys:,} (cross-attention on a short context, e.g. 512 text tokens)", sdpa,
                "each query tile then runs only a few key tiles, and its fixed cost outweighs them; SDPA is faster")
    for f in _policy.FAMILIES:
        if f not in fams:
            add(f"kernel='{f}'", sdpa, f"{f} is not compiled for sm_{arch} in this build")
            continue
        add(f"kernel='{f}' (forced, any length)", f"{f} kernel (pv={_policy.default_pv(f, arch)})",
            "calls it can't serve go to SDPA, with its reason")
        if f == "mma":
            if isinstance(arch, int) and arch >= 89:
                add("same, pv='fp8'", "mma kernel (pv=fp8)",
                    "FP8 e4m3 P.V: rel-L1 ~0.035 vs ~0.011 for pv=fp16 (N(0,1) inputs)")
                add("same, pv='fp8_f16acc'", "mma kernel (pv=fp8_f16acc)",
                    "FP8 e4m3 P.V accumulated in fp16 per KV tile (GeForce's double-rate form), then fp32")
            else:
                add("same, pv='fp8'", sdpa, f"FP8 P.V needs sm_89 or newer, this is sm_{arch}")
                add("same, pv='fp8_f16acc'", sdpa, f"FP8 P.V needs sm_89 or newer, this is sm_{arch}")
            add("same, pv='fp16'", "mma kernel (pv=fp16)", "most accurate quantized path")
    add("attn_mask given", sdpa, "kernels take no mask")
    add("float32/float64 tensors", sdpa, "kernels take float16/bfloat16")
    add("requires_grad with grad enabled", sdpa, "no backward kernel")
    add("CPU tensors", sdpa, "kernels are CUDA only")
    add("anything a family's supports() refuses (head dim, alignment, shared memory, ...)", sdpa,
        "a short reason key (e.g. head_dim, misaligned, smem_limit), logged once, counted in stats()")
    add("kernel='sdpa'", sdpa, "requested")
    add("inside torch.compile", "custom op sageattn3::attention", "same policy, opaque to the compiler")
    return routes


def _self_test_report(index: int, dev: Dict[str, Any]) -> Dict[str, str]:
    """{family: first-call self-test state} for the families that run on this device (nothing
    is run here: a family not used yet says when it will be)."""
    from . import _selftest

    arch = dev.get("sm_arch")
    if not isinstance(arch, int) or dev.get("error"):
        return {}
    from . import _dispatch

    return {f: _selftest.describe_state(index, f, arch) for f in _dispatch.families_here(dev)}


def kernel_configs(dev: Dict[str, Any]) -> Dict[str, str]:
    """{"mma D=128 pv=fp8": the configuration that family would run (or why not)} on this device,
    from the family's own describe() on the device facts the dispatcher uses."""
    if _C is None or dev.get("error") or not isinstance(dev.get("sm_arch"), int):
        return {}
    try:
        import torch
    except ImportError:
        return {}
    facts = (dev["sm_arch"], int(dev.get("sm_count") or 0), int(dev.get("smem_optin") or 0),
             int(dev.get("smem_per_sm") or 0), int(dev.get("hw_arch") or dev["sm_arch"]))
    out: Dict[str, str] = {}
    for fam in ("mma",):
        if fam not in (dev.get("families") or ()):
            continue
        for d in (64, 128, 256):
            x = torch.zeros((1, 1, 16, d), dtype=torch.float16)
            prob = _C.problem(x, x, x)
            for pv in ("fp16", "fp8"):
                key, why = prob.supports(fam, pv, facts=facts)
                out[f"{fam} D={d} pv={pv}"] = prob.config(fam, pv, facts=facts) if key is None else f"{key}: {why}"
    return out


_PV_WHY = {
    "fp8": "INT8 QK^T + FP8 e4m3 P.V with fp32 accumulate (the faster path on this arch)",
    "fp8_f16acc": "INT8 QK^T + FP8 e4m3 P.V accumulated in fp16 per KV tile, then fp32 (GeForce's double-rate "
                  "FP8 mma; not measured on a GeForce card)",
    "fp16": "INT8 QK^T + 16-bit P.V (the policy's choice on this arch: FP8 P.V needs sm89+, or measured slower)",
}


def info() -> dict:
    """Environment report: versions, build, devices, per-device routing, call counters."""
    torch, torch_err = _torch_module()
    build = _build_report()
    d: Dict[str, Any] = {
        "sageattn3": _version(),
        "package_dir": os.path.dirname(os.path.abspath(__file__)),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "platform": platform.platform()},
        "numpy": _numpy_version(),
        "torch": _torch_report(torch, torch_err),
        "build": build,
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }
    count, note = _device_count(torch, build)
    devices: List[Dict[str, Any]] = []
    for i in range(count):
        dev: Dict[str, Any] = {"index": i}
        try:
            if build.get("cuda") and _C is not None:
                dev.update(_device_from_ext(i))
            elif torch is not None:
                dev.update(_device_from_torch(torch, i))
                dev["families"] = []
        except Exception as exc:
            dev["error"] = f"{type(exc).__name__}: {exc}"
            if torch is not None:
                try:
                    dev.update(_device_from_torch(torch, i))
                except Exception:
                    pass
            dev["families"] = []
        dev["routes"] = _routes(dev, build, torch is not None)
        try:
            dev["kernel_configs"] = kernel_configs(dev)
        except Exception as exc:  # noqa: BLE001 - a report, never a reason to fail info()
            dev["kernel_configs"] = {"error": f"{type(exc).__name__}: {exc}"}
        dev["self_test"] = _self_test_report(i, dev)
        devices.append(dev)
    d["devices"] = devices
    d["consumer_limits"] = _limits.describe()
    if note:
        d["devices_note"] = note
    if count == 0:
        if torch is None:
            why = "torch is not importable: sageattn()/sageattn3_blackwell need torch"
            d["cpu_routes"] = [{"case": "every call", "path": "none", "why": why}]
        else:
            why = "kernels need a CUDA GPU"
            if not build.get("cuda"):
                why += "; also this build has no CUDA kernels: " + str(build.get("why_no_cuda"))
            d["cpu_routes"] = [{"case": "every call (no CUDA device)", "path": "SDPA on the tensors' device",
                                "why": why}]
    d["stats"] = _stats.stats()
    d["fallback_details"] = _stats.details()
    return d


def _fmt_kv(lines: List[str], key: str, value: Any, indent: int = 2) -> None:
    lines.append(f"{' ' * indent}{key + ':':<14} {value}")


def format_info(d: dict) -> str:
    """Human-readable rendering of `info()`."""
    lines: List[str] = []
    lines.append(f"sageattn3 {d.get('sageattn3')}  ({d.get('package_dir')})")
    py = d.get("python", {})
    plat = d.get("platform", {})
    _fmt_kv(lines, "python", f"{py.get('version')} ({py.get('implementation')}) {py.get('executable')}")
    _fmt_kv(lines, "platform", plat.get("platform"))
    _fmt_kv(lines, "numpy", d.get("numpy") or "not installed")
    t = d.get("torch", {})
    if t.get("version"):
        cuda = t.get("cuda") or "none (CPU build)"
        _fmt_kv(lines, "torch", f"{t['version']}  CUDA {cuda}  cuDNN {t.get('cudnn') or '-'}  "
                f"cuda available: {t.get('cuda_available')}")
    else:
        _fmt_kv(lines, "torch", f"not importable ({t.get('error')}); {t.get('note')}")

    b = d.get("build", {})
    lines.append("build (sageattn3._C):")
    if not b.get("extension_loaded", True):
        _fmt_kv(lines, "extension", f"NOT LOADED: {b.get('load_error')}", 4)
    if b.get("cuda"):
        _fmt_kv(lines, "CUDA", f"yes, CUDA {b.get('cuda_version')}", 4)
        _fmt_kv(lines, "archs", ", ".join(b.get("cuda_archs") or []) or "-", 4)
        _fmt_kv(lines, "PTX", (b.get("cuda_ptx") or "none") + ("  (newer GPUs JIT it at first use)"
                                                               if b.get("cuda_ptx") else ""), 4)
        kernels = b.get("kernels")
        if kernels is not None:
            fam = b.get("family_archs") or {}
            _fmt_kv(lines, "kernels", ", ".join(f"{k} ({fam[k]})" if k in fam else str(k) for k in kernels)
                    if isinstance(kernels, (list, tuple)) else kernels, 4)
        if b.get("nvcc_host_compiler"):
            _fmt_kv(lines, "nvcc host", b["nvcc_host_compiler"], 4)
    else:
        _fmt_kv(lines, "CUDA", f"no: {b.get('why_no_cuda')}", 4)
        _fmt_kv(lines, "to get kernels", b.get("how_to_get_kernels", HOW_TO_GET_KERNELS), 4)
    _fmt_kv(lines, "compiler", b.get("compiler", "?"), 4)
    env = d.get("env") or {}
    if env:
        _fmt_kv(lines, "env", ", ".join(f"{k}={v}" for k, v in env.items()), 4)

    devs = d.get("devices") or []
    if d.get("consumer_limits"):
        lines.append(f"CONSUMER LIMITS: {d['consumer_limits']}")
    if not devs:
        lines.append(f"devices: none ({d.get('devices_note', '')})")
        for r in d.get("cpu_routes") or []:
            lines.append(f"  {r['case']}\n      -> {r['path']}: {r['why']}")
    for dev in devs:
        head = f"device {dev.get('index')}: {dev.get('name', '?')}"
        if dev.get("sm_arch") is not None:
            head += f"  sm_{dev['sm_arch']}"
            if dev.get("hw_arch") not in (None, dev["sm_arch"]):
                head += f" (consumer limits {dev.get('consumer_limits')}; the GPU is sm_{dev['hw_arch']})"
        if dev.get("sm_count") is not None:
            head += f", {dev['sm_count']} SMs"
        if "families" in dev:
            head += f", kernel families: {', '.join(dev['families']) or 'none'}"
        if dev.get("sm_arch") is not None and not dev.get("error"):
            head += f", auto order: {' -> '.join(_policy.auto_order(dev['sm_arch']))}"
        lines.append(head + "   (case -> path: why)")
        if dev.get("error"):
            lines.append(f"    error: {dev['error']}")
        for r in dev.get("routes") or []:
            lines.append(f"    {r['case']}\n        -> {r['path']}: {r['why']}")
        for fam, state in (dev.get("self_test") or {}).items():
            lines.append(f"    self-test of {fam}: {state}")
        for case, cfg in (dev.get("kernel_configs") or {}).items():
            lines.append(f"    {case}: {cfg}")

    s = d.get("stats") or {}
    served, fb = s.get("served") or {}, s.get("fallback") or {}
    if served or fb:
        lines.append("calls so far:")
        for k, n in served.items():
            lines.append(f"    {n:>8}  served by {k}")
        det = d.get("fallback_details") or {}
        for k, n in fb.items():
            lines.append(f"    {n:>8}  SDPA fallback: {k}" + (f" ({det[k]})" if det.get(k) else ""))
    else:
        lines.append("calls so far: none in this process")
    return "\n".join(lines)
