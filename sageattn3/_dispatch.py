"""The per-call decision: validate in C, ask the policy's families, run one or say why not.

Every entry (sageattn, sageattn3_blackwell, the custom op, the ComfyUI override) comes through
`problem()`: `_C.problem` validates the call once (TypeError/ValueError naming the argument)
and returns a Problem. `_serve` then asks it, in the policy's order (`_policy.plan`), which
family serves the call (`Problem.select`, answered in C by each family's supports()), and
launches it on torch's current stream with torch-allocated output and workspace; a family's
first call on a device it was never verified on runs its self-test first (_selftest.py). A call
no family serves gets a short fixed reason key plus details. Everything here is O(1) Python per
call: no per-element work, no host-device synchronization.
"""
from __future__ import annotations

from typing import Optional, Tuple

from . import _limits, _policy, _selftest, _stats  # noqa: F401 - _limits applies SAGEATTN3_CONSUMER_LIMITS
from ._ext import _C, LOAD_ERROR

try:  # torch is optional for `import sageattn3`
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - exercised in a subprocess test
    torch = None
    F = None

LAYOUTS = ("HND", "NHD", "NHD_FLAT")
KERNELS = _policy.KERNEL_CHOICES
PV_MODES = _policy.PV_MODES


def _no_kernel_reason() -> Optional[Tuple[str, str]]:
    if _C is None:
        return "no_extension", LOAD_ERROR
    info = _C.build_info()
    if not info.get("cuda"):
        return "no_cuda_build", "built without CUDA kernels: " + str(info.get("why_no_cuda"))
    return None


_STATIC = _no_kernel_reason()
_STATIC_REASON = _STATIC[1] if _STATIC else None  # why no kernel can run in this process, or None

_device_cache: dict = {}
_trusted = _selftest.trusted  # (device index, family) pairs that passed their self-test (or need none)


def device_facts(index: int) -> dict:
    """_C.device_info(index) (name, sm_arch, sm_count, smem_optin, families), cached; on a CUDA
    error (e.g. a driver older than our runtime) a dict with "error" and no families."""
    facts = _device_cache.get(index)
    if facts is None:
        try:
            facts = dict(_C.device_info(index))
        except Exception as exc:  # noqa: BLE001 - any failure here means "can't serve"
            facts = {"name": f"cuda:{index}", "sm_arch": 0, "families": [],
                     "error": f"querying the device failed: {exc}"}
        _device_cache[index] = facts
    return facts


def declines_arch(family: str, facts: dict) -> Optional[str]:
    """The family's own "arch" refusal for the device `facts` describe (device_facts' dict), or
    None. A family whose binary runs on the GPU can still decline its arch: hopper under consumer
    limits (the H200 reports sm_120, hopper serves sm_90 only). Asked of the family's supports()
    on a small CPU problem with those facts, so it is the family's rule, not a copy here."""
    if _C is None or torch is None or family not in (facts.get("families") or ()):
        return None
    try:
        x = torch.zeros((1, 1, 64, 64), dtype=torch.float16)
        arch = int(facts["sm_arch"])
        t = (arch, int(facts["sm_count"]), int(facts["smem_optin"]), int(facts["smem_per_sm"]),
             int(facts["hw_arch"]))
        key, why = _C.problem(x, x, x).supports(family, _policy.default_pv(family, arch), facts=t)
    except Exception:  # noqa: BLE001 - stand-in facts (tests) or an old extension: no opinion
        return None
    return why if key == "arch" else None


def families_here(facts: dict) -> Tuple[str, ...]:
    """The policy's families that run on this device and don't decline its arch, in policy order."""
    have = facts.get("families") or ()
    return tuple(f for f in _policy.FAMILIES if f in have and declines_arch(f, facts) is None)


def why_no_kernels(index: Optional[int]) -> Optional[str]:
    """Why no family of the auto policy can run on CUDA device `index` at all, or None."""
    if _STATIC_REASON is not None:
        return _STATIC_REASON
    if index is None:
        return None
    facts = device_facts(index)
    if facts.get("error"):
        return facts["error"]
    arch = facts.get("sm_arch")
    order = [f for f in _policy.auto_order(arch) if f != "sdpa"]
    if order and not any(f in facts.get("families", ()) for f in order):
        return f"no compiled kernel for sm_{arch} ({facts.get('name')})"
    return None


def problem(q, k, v, layout: str = "HND", heads: Optional[int] = None, is_causal: bool = False,
            sm_scale=None, attn_mask=None):
    """The one validation of a call (C): a Problem, or TypeError/ValueError naming the argument."""
    if _C is None:
        raise ImportError(f"sageattn3 attention needs its C extension: {LOAD_ERROR}")
    return _C.problem(q, k, v, layout, heads, is_causal, sm_scale, attn_mask)


def _serve(prob, q, k, v, kernel: str, pv: str, lse=None):
    """(out, None, None) when a family ran, else (None, reason_key, details). `lse`: an optional
    (B, Hq, Sq) float32 tensor the family also fills (families that can't decline with "lse")."""
    if kernel == "sdpa":
        return None, "requested", "kernel='sdpa'"
    if _STATIC is not None:
        return None, _STATIC[0], _STATIC[1]
    dev = prob.device
    if dev < 0:
        if dev == -1:
            return None, "cpu", "tensors are on the CPU; kernels are CUDA only"
        return None, "device", "tensors are on a device other than CPU/CUDA"
    if (q.requires_grad or k.requires_grad or v.requires_grad) and torch.is_grad_enabled():
        return None, "requires_grad", "sageattn3 has no backward kernel"
    plan, ms = _policy.plan(prob.sm_arch, kernel, pv), _policy.min_scores(kernel, prob.sm_arch, prob.is_causal)
    r = prob.select(plan, ms) if lse is None else prob.select(plan, ms, lse)
    if r[0] is None:
        return None, r[1], r[2]
    mk = _policy.min_keys(kernel, prob.sm_arch)
    if mk and prob.seq_k < mk:  # after select, so a call it refuses keeps that (first) reason
        return None, "short_keys", (f"Sk = {prob.seq_k} < {mk}: on sm_{prob.sm_arch} SDPA is faster with this few "
                                    "keys (cross-attention)")
    family, nbytes = r
    if (dev, family) not in _trusted:  # first use here, or disabled by its self-test
        r = _admit(prob, plan, ms, lse, r)
        if r[0] is None:
            return r
        family, nbytes = r
    out = torch.empty_like(q)
    ws = torch.empty(nbytes, dtype=torch.uint8, device=q.device)
    try:
        prob.launch(out, ws.data_ptr(), nbytes, torch._C._cuda_getCurrentRawStream(dev))
    except _C.UnsupportedError as exc:
        msg = str(exc)
        return None, msg.split(":", 1)[0], msg
    _stats.record_served(family)
    return out, None, None


def _admit(prob, plan, ms, lse, r):
    """`r` (the selected family) when its self-test lets it serve on this device (running the
    test at its first use, _selftest.admit), else the plan's next family that can, else
    (None, "self_test_failed" | "self_test_pending", details)."""
    dev, refused = prob.device, {}
    while True:
        why = _selftest.admit(dev, r[0], prob.sm_arch)
        if why is None:
            return r
        refused[r[0]] = why
        rest = []
        for e in plan:  # select stops at "sdpa"
            if e == "sdpa":
                break
            if e[0] not in refused:
                rest.append(e)
        if not rest:
            break
        nxt = prob.select(tuple(rest), ms) if lse is None else prob.select(tuple(rest), ms, lse)
        if nxt[0] is None:
            break
        r = nxt
    key, detail = next(iter(refused.values()))
    return None, key, detail


def try_attention(q, k, v, *, layout: str = "HND", heads: Optional[int] = None,
                  is_causal: bool = False, sm_scale: Optional[float] = None,
                  kernel: str = "auto", pv: str = "auto") -> Tuple[Optional["torch.Tensor"], Optional[str]]:
    """Run a sageattn3 kernel on q/k/v if one can serve the call.

    Returns (out, None) with `out` shaped and laid out like `q`, or (None, reason_key) when the
    call must go elsewhere (the reason's details are logged once). Raises only for invalid
    calls (TypeError/ValueError from the C validation), never for "can't serve".
    """
    prob = problem(q, k, v, layout, heads, is_causal, sm_scale)
    out, key, detail = _serve(prob, q, k, v, kernel, pv)
    if out is None:
        _stats.log_reason(key, detail)
    return out, key


def run(q, k, v, *, layout: str, heads: Optional[int], is_causal: bool, sm_scale,
        kernel: str, pv: str, attn_mask=None):
    """A sageattn3 kernel when one serves the call, else SDPA (the reason logged once and
    counted in stats()). The one decision shared by the API and the custom op."""
    prob = problem(q, k, v, layout, heads, is_causal, sm_scale, attn_mask)
    if attn_mask is not None:
        key, detail = "mask", "attn_mask given: kernels take no mask"
    else:
        out, key, detail = _serve(prob, q, k, v, kernel, pv)
        if out is not None:
            return out
    _stats.record_fallback(key, detail)
    if layout not in LAYOUTS:  # C took any case
        layout = prob.layout
    return sdpa(q, k, v, layout=layout, heads=heads, attn_mask=attn_mask, is_causal=bool(is_causal),
                sm_scale=sm_scale)


def run_family(family: str, q, k, v, *, layout: str = "HND", heads: Optional[int] = None,
               causal: bool = False, scale: Optional[float] = None, pv: str = "fp16", out=None,
               poison: bool = False, lse=None):
    """Run kernel family `family` on the call, or raise `_C.UnsupportedError("<key>: <details>")`.

    The one way checks, benchmarks, tests and scripts run a kernel directly: same validation,
    same supports() and launch as the dispatcher, no policy and no fallback. `out` (optional)
    receives the result; `lse` (optional, a (B, Hq, Sq) float32 tensor) receives each row's LSE
    from the kernel; `poison=True` fills a fresh output with NaN and the workspace with 0xFF
    first, so a kernel that skips an element or reads scratch it never wrote is caught (poison
    `lse` yourself). Returns the output tensor.
    """
    prob = problem(q, k, v, layout, heads, causal, scale)
    r = prob.select(((family, pv),), 0) if lse is None else prob.select(((family, pv),), 0, lse)
    if r[0] is None:
        raise _C.UnsupportedError(f"{r[1]}: {r[2]}")
    _, nbytes = r
    if out is None:
        out = q.new_empty(prob.out_shape)
        if poison:
            out.fill_(float("nan"))
    if poison:
        ws = torch.full((nbytes,), 0xFF, dtype=torch.uint8, device=q.device)
    else:
        ws = torch.empty(nbytes, dtype=torch.uint8, device=q.device)
    prob.launch(out, ws.data_ptr(), nbytes, torch.cuda.current_stream(q.device).cuda_stream)
    return out


def sdpa(q, k, v, *, layout: str = "HND", heads: Optional[int] = None, attn_mask=None,
         is_causal: bool = False, sm_scale: Optional[float] = None):
    """torch SDPA on the caller's layout, output in the same layout (the fallback path).
    Takes a call `problem()` accepted."""
    if layout == "HND":
        qh, kh, vh = q, k, v
    elif layout == "NHD":
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    else:
        d = q.shape[-1] // heads
        hkv = k.shape[-1] // d if d else heads
        qh = q.unflatten(-1, (heads, d)).transpose(1, 2)
        kh = k.unflatten(-1, (hkv, d)).transpose(1, 2)
        vh = v.unflatten(-1, (hkv, v.shape[-1] // hkv)).transpose(1, 2)  # v's head dim may differ
    kwargs = {}
    if qh.shape[1] != kh.shape[1]:
        kwargs["enable_gqa"] = True
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask, is_causal=is_causal,
                                         scale=sm_scale, **kwargs)
    if layout == "HND":
        return out
    out = out.transpose(1, 2)
    if layout == "NHD":
        return out
    return out.flatten(2)


def out_shape(q, k, v, layout: str, heads: Optional[int]):
    """The output's shape from shapes alone (the custom op's fake implementation; the real
    call is validated in C): q's, with v's head dim."""
    layout = str(layout).upper()
    if layout != "NHD_FLAT":
        return (*q.shape[:-1], v.shape[-1])
    d = q.shape[-1] // heads
    hkv = k.shape[-1] // d if d else heads
    return (q.shape[0], q.shape[1], heads * (v.shape[-1] // hkv))


def validate_args(layout: str, heads: Optional[int], kernel: str, pv: str) -> None:
    """The policy's own arguments (layout and heads are validated with the tensors, in C)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if pv not in PV_MODES:
        raise ValueError(f"pv must be one of {PV_MODES}, got {pv!r}")
