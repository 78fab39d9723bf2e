"""Numeric self-test behind `python -m sageattn3 check`.

Three sections, each a list of cases with one error figure, a bound and PASS/FAIL/SKIP:

(a) reference: the C reference (`_C.reference_attention`) in every mode against float64
    NumPy attention on fresh random inputs: odd lengths, Sq != Sk, GQA/MQA, causal, a
    K-offset case, NHD layout, an odd head dim, an explicit scale.
(b) sdpa: with torch, the SDPA fallback of `sageattn()` on CPU (and on a CUDA device when
    there is one) gives exactly what calling torch SDPA directly gives, in every layout,
    with GQA, causal, scale and mask, and the fallback is counted in `stats()`.
(c) kernel: on a CUDA GPU with compiled kernels, the mma kernel (pv fp16, fp8, fp8_f16acc) against
    float64 on K-offset bf16/fp16 inputs: odd lengths (77, 1000, 4097), Sq != Sk, NHD/HND/
    NHD_FLAT, strided (qkv-packed) inputs, GQA/MQA, causal, head dims 32..256. The kernel is
    called with a NaN-filled output so unwritten rows show up; the inputs are checked to be
    unmodified; on small shapes the result is also compared with `_C.reference_attention`
    in the same quantization mode, which must be much closer than float64 is. One case
    goes through the public `sageattn(kernel="auto")` and must be served by the kernel.
    Before it, one "selftest" row per family: the dispatcher's first-call self-test on this
    device (sageattn3/_selftest.py), run now unless decided: passed / failed / skipped (by
    SAGEATTN3_SELF_TEST=0) / verified (a pair in _policy.VERIFIED, not run); also in the JSON.

Error figure: rel-L1 = sum|out - ref| / sum|ref| (float64).

Bounds (rel-L1 vs float64; inputs N(0,1), K optionally + a per-channel offset of several
sigma, which smoothing removes before quantization). sigma_s = sm_scale * sqrt(D) is the
spread of the scores for such inputs; s = max(1, sigma_s). See `bound()`:
  exact      1e-5          fp32 arithmetic only (measured 1e-7..5e-7).
  int8-fp16  0.016 * s     INT8 Q/K with one absmax scale per block: rounding RMS
                           amax/(127*sqrt(12)) ~ 0.009 sigma per operand, i.e. ~0.013 sigma_s of
                           score noise, ~0.010-0.013 rel-L1 of the output at sigma_s = 1, growing
                           linearly with sigma_s; P and V in bf16 (8 bits) add ~0.002 in
                           quadrature. Measured on the reference over D 32..256, causal, K offset:
                           0.009-0.0127 at s = 1, up to 0.0196 at s = 1.8. Bound: 1.25x.
  int8-fp8   hypot(0.042, 0.016 * s)
                           P and V rounded to e4m3 (3 mantissa bits) cost ~0.025 rel-L1 each
                           (measured one at a time), ~0.035 together, plus the INT8 term.
                           Measured: 0.030-0.037. Bound at s = 1: 0.045.
  nvfp4      hypot(0.19, 0.14 * s)
                           Q, K, P, V all in e2m1 (1 mantissa bit: 4x the e4m3 step) with e4m3
                           scales per 16 values; the Q/K part grows with sigma_s. Measured:
                           0.156-0.191 at s = 1, up to 0.249 at s = 1.8. Bound at s = 1: 0.236.
These are floors of the formats, not of our code: SageAttention2.2 measures 0.011 (fp16 PV)
and 0.037 (fp8 PV) on the same kind of input (ANCHORS.md); 0.012 / 0.03 are not reachable
by the reference itself on N(0,1) inputs.
The GPU kernel's output is rounded to bf16/fp16 once more, so its bound vs float64 adds
OUT_ROUNDING; against the reference in the same mode it must stay within TIGHT_FACTOR of the
mode's bound plus OUT_ROUNDING (only summation order, exp2 approximation and that final
rounding differ).

Runs in well under 60 s on a 2-core CPU (sections a, b) and on an H100 (all three).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

from . import _policy, _stats
from ._ext import LOAD_ERROR, _C

BOUNDS = {"exact": 1e-5, "int8-fp16": 0.016, "int8-fp8": 0.045, "int8-fp8-f16acc": 0.045,
          "nvfp4": 0.236}  # at sigma_s <= 1
PV_MODE = {"fp16": "int8-fp16", "fp8": "int8-fp8", "fp8_f16acc": "int8-fp8-f16acc"}  # kernel pv -> reference mode
OUT_ROUNDING = {"bfloat16": 0.003, "float16": 0.001}
TIGHT_FACTOR = 0.3
K_OFFSET_SIGMA = 5.0  # per-channel K offset, in units of K's standard deviation


@dataclass
class Result:
    section: str
    case: str
    mode: str
    metric: Optional[float] = None  # rel-L1 vs float64 (or max diff for the SDPA section)
    bound: Optional[float] = None
    status: str = "PASS"            # PASS | FAIL | SKIP
    vs_ref: Optional[float] = None  # kernel vs C reference, same mode
    vs_ref_bound: Optional[float] = None
    seconds: float = 0.0
    note: str = ""


@dataclass
class Report:
    seed: int
    results: List[Result] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    self_test: dict = field(default_factory=dict)  # family -> first-call self-test status on this device
    consumer_limits: Optional[str] = None  # SAGEATTN3_CONSUMER_LIMITS in force (sageattn3/_limits.py), or None

    @property
    def failed(self) -> List[Result]:
        return [r for r in self.results if r.status == "FAIL"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict:
        c = {"PASS": 0, "FAIL": 0, "SKIP": 0}
        for r in self.results:
            c[r.status] = c.get(r.status, 0) + 1
        return c

    def to_json(self) -> dict:
        return {"seed": self.seed, "seconds": round(self.seconds, 2), "device": self.device,
                "ok": self.ok, "counts": self.counts(), "self_test": self.self_test,
                "consumer_limits": self.consumer_limits,
                "results": [asdict(r) for r in self.results]}




def bound(mode: str, d: int, sm_scale: Optional[float] = None) -> float:
    """rel-L1 bound vs float64 for N(0,1) inputs (see the module docstring)."""
    sigma_s = (1.0 / math.sqrt(d) if sm_scale is None else abs(float(sm_scale))) * math.sqrt(d)
    s = max(1.0, sigma_s)
    if mode == "exact":
        return 1e-5
    if mode == "int8-fp16":
        return 0.016 * s
    if mode in ("int8-fp8", "int8-fp8-f16acc"):  # fp16 partials add ~2^-11 relative: nothing visible
        return math.hypot(0.042, 0.016 * s)
    if mode == "nvfp4":
        return math.hypot(0.19, 0.14 * s)
    raise ValueError(mode)


# ----------------------------------------------------------------------------- float64 math

def rel_l1(out, ref) -> float:
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    den = np.abs(ref).sum()
    return float(np.abs(out - ref).sum() / den) if den > 0 else float(np.abs(out).sum())


def attention_f64(q, k, v, *, is_causal=False, sm_scale=None, layout="HND"):
    """Plain float64 softmax(q k^T * scale) v on NumPy arrays; GQA by head groups; causal is
    top-left (key j visible to query i iff j <= i), as torch SDPA."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    if layout == "NHD":
        q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    hq, hkv, d = q.shape[1], k.shape[1], q.shape[3]
    g = hq // hkv
    if g > 1:
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    s = np.matmul(q, k.transpose(0, 1, 3, 2)) * scale
    if is_causal:
        s = np.where(np.tri(s.shape[2], s.shape[3], dtype=bool), s, -np.inf)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    o = np.matmul(p, v)
    return o.transpose(0, 2, 1, 3) if layout == "NHD" else o


# ----------------------------------------------------------------------------- (a) reference

# (name, B, Hq, Hkv, Sq, Sk, D, causal, layout, k_offset, sm_scale, per_block_mean)
REF_CASES = [
    ("odd length 77", 1, 2, 2, 77, 77, 64, False, "HND", False, None, False),
    ("Sq!=Sk 50x131, NHD", 2, 2, 2, 50, 131, 128, False, "NHD", False, None, False),
    ("GQA 4/2 causal 77", 1, 4, 2, 77, 77, 64, True, "HND", False, None, False),
    ("MQA causal Sq<Sk 33x100", 1, 3, 1, 33, 100, 32, True, "HND", False, None, False),
    ("K-offset 256, D128", 1, 2, 2, 256, 256, 128, False, "HND", True, None, False),
    ("K-offset D80 scale 0.2, NHD", 1, 2, 2, 65, 200, 80, False, "NHD", True, 0.2, False),
    ("K-offset per-block-mean", 1, 2, 2, 130, 130, 64, False, "HND", True, None, True),
]
REF_MODES = ("exact", "int8-fp16", "int8-fp8", "int8-fp8-f16acc", "nvfp4")


def _np_inputs(rng, b, hq, hkv, sq, sk, d, layout, k_offset):
    def shape(h, s):
        return (b, s, h, d) if layout == "NHD" else (b, h, s, d)

    q = rng.standard_normal(shape(hq, sq), dtype=np.float32)
    k = rng.standard_normal(shape(hkv, sk), dtype=np.float32)
    v = rng.standard_normal(shape(hkv, sk), dtype=np.float32)
    if k_offset:
        off = (K_OFFSET_SIGMA * rng.standard_normal((hkv, d))).astype(np.float32)
        k += off[None, :, None, :] if layout == "HND" else off[None, None, :, :]
    return q, k, v


def check_reference(rng, emit) -> None:
    if _C is None:
        emit(Result("reference", "C extension", "-", status="FAIL", note=str(LOAD_ERROR)))
        return
    for name, b, hq, hkv, sq, sk, d, causal, layout, koff, scale, pbm in REF_CASES:
        q, k, v = _np_inputs(rng, b, hq, hkv, sq, sk, d, layout, koff)
        ref = attention_f64(q, k, v, is_causal=causal, sm_scale=scale, layout=layout)
        label = f"{name} ({b},{hq}/{hkv},{sq}x{sk},{d})"
        for mode in REF_MODES:
            t0 = time.perf_counter()
            try:
                out = _C.reference_attention(q, k, v, mode=mode, is_causal=causal, sm_scale=scale,
                                             per_block_mean=pbm, layout=layout)
            except Exception as exc:  # a crash in the reference is a failure, not a skip
                emit(Result("reference", label, mode, status="FAIL", note=f"{type(exc).__name__}: {exc}"))
                continue
            err = rel_l1(out, ref)
            bnd = bound(mode, d, scale)
            ok = out.shape == ref.shape and np.isfinite(out).all() and err <= bnd
            emit(Result("reference", label, mode, metric=err, bound=bnd, status="PASS" if ok else "FAIL",
                        seconds=time.perf_counter() - t0,
                        note="" if out.shape == ref.shape else f"shape {out.shape} != {ref.shape}"))


# ----------------------------------------------------------------------------- torch helpers

def _torch():
    try:
        import torch
        return torch
    except Exception:
        return None


def make_inputs(torch, gen, b, hq, hkv, sq, sk, d, *, layout="HND", dtype=None, device="cpu",
                k_offset=False, packed=False):
    """Random q, k, v in `layout`; K optionally with a per-(head, channel) offset.
    packed=True: NHD views into one (B, S, 3, H, D) qkv tensor (strided, like a fused qkv
    projection); needs Sq == Sk and Hq == Hkv."""
    dtype = dtype or torch.bfloat16

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(dtype)

    if packed:
        qkv = rnd(b, sq, 3, hq, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        layout = "NHD"
    elif layout == "HND":
        q, k, v = rnd(b, hq, sq, d), rnd(b, hkv, sk, d), rnd(b, hkv, sk, d)
    elif layout == "NHD":
        q, k, v = rnd(b, sq, hq, d), rnd(b, sk, hkv, d), rnd(b, sk, hkv, d)
    else:
        q, k, v = rnd(b, sq, hq * d), rnd(b, sk, hkv * d), rnd(b, sk, hkv * d)
    if k_offset:
        off = (K_OFFSET_SIGMA * torch.randn(hkv, d, generator=gen, device=device)).to(dtype)
        to_hnd(k, layout, hkv).add_(off[None, :, None, :])
    return q, k, v


def to_hnd(x, layout, heads):
    """(B, H, S, D) view of a tensor in `layout` (no copy)."""
    if layout == "HND":
        return x
    if layout == "NHD":
        return x.transpose(1, 2)
    b, s, hd = x.shape
    return x.view(b, s, heads, hd // heads).transpose(1, 2)


def reference_f64_torch(torch, qh, kh, vh, *, is_causal=False, sm_scale=None, rows=None, heads=None):
    """float64 attention on (B, H, S, D) views, on their device. rows: query-row indices (a
    subset keeps huge shapes cheap); heads: query-head indices. Returns (B, len(heads),
    len(rows), D) float64."""
    b, hq, sq, d = qh.shape
    hkv, sk = kh.shape[1], kh.shape[2]
    g = hq // hkv
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    rows = torch.arange(sq, device=qh.device) if rows is None else rows.to(qh.device)
    heads = list(range(hq)) if heads is None else list(heads)
    out = torch.empty(b, len(heads), rows.numel(), d, dtype=torch.float64, device=qh.device)
    chunk = max(1, (1 << 27) // max(sk, 1))  # <= 1 GiB of float64 scores at a time
    for bi in range(b):
        for oi, h in enumerate(heads):
            kk = kh[bi, h // g].double()
            vv = vh[bi, h // g].double()
            for r0 in range(0, rows.numel(), chunk):
                r = rows[r0:r0 + chunk]
                s = (qh[bi, h].index_select(0, r).double() @ kk.T) * scale
                if is_causal:
                    s.masked_fill_(torch.arange(sk, device=s.device)[None, :] > r[:, None], float("-inf"))
                out[bi, oi, r0:r0 + r.numel()] = torch.softmax(s, dim=-1) @ vv
    return out


def rel_l1_torch(torch, out, ref) -> float:
    out = out.to(torch.float64)
    ref = ref.to(torch.float64)
    den = ref.abs().sum().item()
    return (out - ref).abs().sum().item() / den if den > 0 else out.abs().sum().item()


# ----------------------------------------------------------------------------- (b) SDPA passthrough

def _direct_sdpa(torch, q, k, v, layout, heads, attn_mask=None, is_causal=False, scale=None):
    F = torch.nn.functional
    if layout == "NHD_FLAT":
        d = q.shape[-1] // heads
        qh = q.unflatten(-1, (heads, d)).transpose(1, 2)
        kh = k.unflatten(-1, (k.shape[-1] // d, d)).transpose(1, 2)
        vh = v.unflatten(-1, (v.shape[-1] // d, d)).transpose(1, 2)
    elif layout == "NHD":
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    else:
        qh, kh, vh = q, k, v
    kw = {"enable_gqa": True} if qh.shape[1] != kh.shape[1] else {}
    o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask, is_causal=is_causal, scale=scale, **kw)
    if layout == "HND":
        return o
    o = o.transpose(1, 2)
    return o if layout == "NHD" else o.reshape(o.shape[0], o.shape[1], -1)


# (name, B, Hq, Hkv, Sq, Sk, D, layout, causal, scale, dtype, mask)
SDPA_CASES = [
    ("HND", 1, 2, 2, 77, 77, 64, "HND", False, None, "float32", False),
    ("NHD Sq!=Sk", 2, 2, 2, 50, 131, 32, "NHD", False, None, "float32", False),
    ("NHD_FLAT GQA causal", 1, 4, 2, 65, 65, 64, "NHD_FLAT", True, None, "float32", False),
    ("HND scale 0.3 bf16", 1, 2, 2, 40, 90, 64, "HND", False, 0.3, "bfloat16", False),
    ("HND bool mask", 1, 2, 2, 33, 47, 32, "HND", False, None, "float32", True),
]


def check_sdpa(torch, gen_seed, emit, device="cpu") -> None:
    from .api import sageattn, sageattn3_blackwell

    gen = torch.Generator(device=device).manual_seed(gen_seed)
    for name, b, hq, hkv, sq, sk, d, layout, causal, scale, dt, use_mask in SDPA_CASES:
        t0 = time.perf_counter()
        dtype = getattr(torch, dt)
        q, k, v = make_inputs(torch, gen, b, hq, hkv, sq, sk, d, layout=layout, dtype=dtype, device=device)
        heads = hq if layout == "NHD_FLAT" else None
        label = f"{name} ({b},{hq}/{hkv},{sq}x{sk},{d}) {dt} {device}"
        before = _stats.stats()
        try:
            if use_mask:
                mask = torch.rand(b, 1, sq, sk, generator=gen, device=device) > 0.3
                mask[..., 0] = True
                ours = sageattn3_blackwell(q, k, v, attn_mask=mask, is_causal=causal)
                direct = _direct_sdpa(torch, q, k, v, layout, heads, attn_mask=mask, is_causal=causal)
            else:
                ours = sageattn(q, k, v, tensor_layout=layout, is_causal=causal, sm_scale=scale, heads=heads,
                                kernel="sdpa" if device != "cpu" else "auto")
                direct = _direct_sdpa(torch, q, k, v, layout, heads, is_causal=causal, scale=scale)
        except Exception as exc:
            emit(Result("sdpa", label, "sdpa", status="FAIL", note=f"{type(exc).__name__}: {exc}"))
            continue
        after = _stats.stats()
        n_before = sum(before["fallback"].values())
        n_after = sum(after["fallback"].values())
        diff = (ours.double() - direct.double()).abs().max().item() if ours.shape == direct.shape else float("inf")
        notes = []
        if ours.shape != direct.shape:
            notes.append(f"shape {tuple(ours.shape)} != {tuple(direct.shape)}")
        if ours.dtype != q.dtype:
            notes.append(f"dtype {ours.dtype} != {q.dtype}")
        if n_after != n_before + 1:
            notes.append("fallback not counted in stats()")
        ok = not notes and diff == 0.0
        if not ok and not notes:
            notes.append("differs from direct SDPA")
        emit(Result("sdpa", label, "max|diff|", metric=diff, bound=0.0, status="PASS" if ok else "FAIL",
                    seconds=time.perf_counter() - t0, note="; ".join(notes) or "bitwise equal"))


# ----------------------------------------------------------------------------- (c) kernel

@dataclass
class GpuCase:
    name: str
    b: int
    hq: int
    hkv: int
    sq: int
    sk: int
    d: int
    layout: str = "HND"
    causal: bool = False
    dtype: str = "bfloat16"
    packed: bool = False
    ref: bool = False          # also compare with the C reference (small shapes only)
    rows: Optional[int] = None  # float64 on this many random query rows only
    scale: Optional[float] = None


GPU_CASES = [
    GpuCase("odd 77, HND", 1, 4, 4, 77, 77, 128, "HND", ref=True),
    GpuCase("1000, NHD, D64", 1, 3, 3, 1000, 1000, 64, "NHD", ref=True),
    GpuCase("4097, NHD_FLAT", 1, 2, 2, 4097, 4097, 128, "NHD_FLAT"),
    GpuCase("GQA 6/2, 333x1000, D64", 1, 6, 2, 333, 1000, 64, "HND", ref=True),
    GpuCase("MQA 4/1 NHD_FLAT causal 1000", 1, 4, 1, 1000, 1000, 128, "NHD_FLAT", causal=True),
    GpuCase("causal 1000, HND", 1, 2, 2, 1000, 1000, 128, "HND", causal=True, ref=True),
    GpuCase("causal Sq<Sk 77x1000, NHD", 1, 2, 2, 77, 1000, 64, "NHD", causal=True, ref=True),
    GpuCase("causal Sq>Sk 1000x300", 1, 2, 2, 1000, 300, 64, "HND", causal=True),
    GpuCase("Sk tail 1000x65", 1, 2, 2, 1000, 65, 128, "HND", ref=True),
    GpuCase("D256, 300", 1, 2, 2, 300, 300, 256, "HND", ref=True),
    GpuCase("D80 (padded), 500", 1, 2, 2, 500, 500, 80, "NHD", ref=True),
    GpuCase("D32, 1000", 1, 2, 2, 1000, 1000, 32, "HND"),
    GpuCase("qkv-packed strided NHD 1000", 2, 2, 2, 1000, 1000, 128, packed=True),
    GpuCase("fp16 inputs, 1000, scale 0.05", 1, 2, 2, 1000, 1000, 128, "HND", dtype="float16", ref=True,
            scale=0.05),
    GpuCase("32768 one head (256 rows)", 1, 1, 1, 32768, 32768, 128, "HND", rows=256),
]


def _kernel_call(torch, family, q, k, v, out, layout, heads, causal, scale, pv):
    """Kernel family `family` on this call, into a caller-supplied (poisoned) output, without
    the dispatcher's policy (short sequences, per-arch order): `_dispatch.run_family`."""
    from . import _dispatch

    return _dispatch.run_family(family, q, k, v, layout=layout, heads=heads, causal=causal, scale=scale, pv=pv,
                                out=out)


# Each family's numerics as the C reference (csrc/sa3_reference.c) spells them: the P.V modes it
# has and the reference's scale-group arguments. mma: INT8 scales follow its mma.sync layout;
# hopper: one Q scale per row, 4 K scales per 128-key block (keys by (j % 8) // 2, the lane of
# the wgmma accumulator quad that holds their scores), FP8 P.V only, minus the mean rounding
# error of V added to every row (v_mean_fix).
# nvfp4: one numerics whatever pv says (NVFP4 Q, K, P, V; "mode" names the reference mode),
# KV blocks of 64 keys, Q minus its mean per 64-row block (the kernel's CTA tile).
FAMILY_NUMERICS = {
    "mma": {"pvs": ("fp16", "fp8", "fp8_f16acc"), "ref": {"granularity": "mma", "v_mean_fix": True}},
    "hopper": {"pvs": ("fp8",), "ref": {"granularity": "quad", "q_block": 1, "k_block": 128, "v_mean_fix": True}},
    "nvfp4": {"pvs": ("fp16",), "mode": "nvfp4", "ref": {"granularity": "block", "k_block": 64, "q_block": 64,
                                                          "per_block_mean": True, "v_mean_fix": True}},
}


def family_mode(fam: str, pv: str) -> str:
    """The reference mode a family computes with P.V option `pv`."""
    return FAMILY_NUMERICS.get(fam, {}).get("mode") or PV_MODE[pv]


def _device_families(torch) -> tuple:
    """The policy's families that run on the current device, in policy order."""
    from . import _dispatch

    return _dispatch.families_here(_C.device_info(torch.cuda.current_device()))


def _gpu_skip_reason(torch) -> Optional[str]:
    if torch is None:
        return "torch not importable"
    try:
        if not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
    except Exception as exc:
        return f"torch.cuda failed: {exc}"
    if _C is None:
        return str(LOAD_ERROR)
    bi = _C.build_info()
    if not bi.get("cuda"):
        return "this build has no CUDA kernels: " + str(bi.get("why_no_cuda"))
    facts = _C.device_info(torch.cuda.current_device())
    if not any(f in facts.get("families", ()) for f in _policy.FAMILIES):
        return f"no compiled kernel for sm_{facts.get('sm_arch')} ({facts.get('name')}); compiled: " \
               f"{', '.join(bi.get('cuda_archs') or [])}"
    return None


def check_kernel(torch, seed, emit, cases: Sequence[GpuCase] = GPU_CASES, *, device: str = "cuda",
                 kernel_fn: Optional[Callable] = None, arch: Optional[int] = None,
                 families: Optional[Sequence[str]] = None) -> None:
    """Section (c), for every kernel family that runs on this device. kernel_fn(q, k, v, out,
    layout, heads, causal, scale, pv) (one stand-in family, "mma" numerics) and device/arch
    are injectable so the plumbing can be tested on a CPU with a stand-in kernel."""
    if arch is None:
        arch = int(_C.device_info(torch.cuda.current_device())["sm_arch"])
    if families is None:
        families = ("mma",) if kernel_fn is not None else _device_families(torch)
    for fam in families:
        fn = kernel_fn
        if fn is None:
            def fn(q, k, v, out, layout, heads, causal, scale, pv, fam=fam):
                _kernel_call(torch, fam, q, k, v, out, layout, heads, causal, scale, pv)
        _check_family(torch, seed, emit, cases, fam, fn, device, arch)
    if device == "cuda":
        _check_public_api(torch, emit, families, seed)


def _check_family(torch, seed, emit, cases, fam, kernel_fn, device, arch) -> None:
    """Every case in every P.V mode the family has on `arch` through kernel_fn, judged against
    float64 and, for cases with ref=True, the C reference in the family's numerics. The one
    comparison shared by `check` and the first-call self-test (sageattn3/_selftest.py)."""
    numerics = FAMILY_NUMERICS[fam]
    sync = (lambda: torch.cuda.synchronize(device)) if str(device).startswith("cuda") else (lambda: None)
    unsupported = getattr(_C, "UnsupportedError", ()) if _C is not None else ()
    gen = torch.Generator(device=device).manual_seed(seed)
    cpu_gen = torch.Generator().manual_seed(seed)
    for c in cases:
        dtype = getattr(torch, c.dtype)
        label = f"{c.name} ({c.b},{c.hq}/{c.hkv},{c.sq}x{c.sk},{c.d})" + (" causal" if c.causal else "")
        t0 = time.perf_counter()
        q, k, v = make_inputs(torch, gen, c.b, c.hq, c.hkv, c.sq, c.sk, c.d, layout=c.layout, dtype=dtype,
                              device=device, k_offset=True, packed=c.packed)
        layout = "NHD" if c.packed else c.layout
        heads = c.hq if layout == "NHD_FLAT" else None
        qh, kh, vh = to_hnd(q, layout, c.hq), to_hnd(k, layout, c.hkv), to_hnd(v, layout, c.hkv)
        rows = None
        if c.rows is not None:
            rows = torch.randperm(c.sq, generator=cpu_gen)[:c.rows].sort().values.to(device)
        ref64 = reference_f64_torch(torch, qh, kh, vh, is_causal=c.causal, sm_scale=c.scale, rows=rows)
        ref_np = None
        if c.ref:
            ref_np = tuple(x.float().cpu().numpy() for x in (qh, kh, vh))
        copies = (q.clone(), k.clone(), v.clone())
        t_prep = time.perf_counter() - t0
        for pv in numerics["pvs"]:
            t0 = time.perf_counter()
            mode = family_mode(fam, pv)
            mode_bound = bound(mode, c.d, c.scale)
            res = Result("kernel", label, f"{fam} " + (mode if "mode" in numerics else f"pv={pv}"),
                         bound=mode_bound + OUT_ROUNDING[c.dtype])
            if pv.startswith("fp8") and arch < 89:
                res.status, res.note = "SKIP", f"FP8 P.V needs sm_89+, this is sm_{arch}"
                emit(res)
                continue
            out = torch.full(q.shape, float("nan"), dtype=dtype, device=device)
            try:
                kernel_fn(q, k, v, out, layout, heads, c.causal, c.scale, pv)
                sync()
            except unsupported as exc:
                res.status, res.note = "SKIP", f"kernel declined: {exc}"
                emit(res)
                continue
            except Exception as exc:
                res.status, res.note = "FAIL", f"{type(exc).__name__}: {exc}"
                emit(res)
                continue
            notes = []
            bad = (~torch.isfinite(out)).sum().item()
            if bad:
                notes.append(f"{bad} non-finite outputs (unwritten rows?)")
            if not all(torch.equal(a, b) for a, b in zip((q, k, v), copies)):
                notes.append("inputs were modified")
            oh = to_hnd(out, layout, c.hq)
            if rows is not None:
                oh = oh.index_select(2, rows)
            res.metric = rel_l1_torch(torch, oh, ref64) if not bad else float("nan")
            if not bad and res.metric > res.bound:
                notes.append("above bound")
            if ref_np is not None and not bad:
                # the family's own INT8 scale groups (FAMILY_NUMERICS)
                cref = _C.reference_attention(*ref_np, mode=mode, is_causal=c.causal, sm_scale=c.scale,
                                              pv_dtype="bf16" if c.dtype == "bfloat16" else "f16",
                                              **numerics["ref"])
                res.vs_ref = rel_l1(oh.float().cpu().numpy(), cref)
                res.vs_ref_bound = TIGHT_FACTOR * mode_bound + OUT_ROUNDING[c.dtype]
                if res.vs_ref > res.vs_ref_bound:
                    notes.append("far from the C reference of the same mode")
            res.status = "FAIL" if notes else "PASS"
            res.note = "; ".join(notes)
            res.seconds = time.perf_counter() - t0 + t_prep
            emit(res)
        del q, k, v, copies


SELF_TEST_ROW = {"passed": "PASS", "verified": "PASS", "failed": "FAIL", "skipped": "SKIP"}


def check_self_test(torch, emit, rep: Report, dev: Optional[int] = None, facts: Optional[dict] = None) -> None:
    """The dispatcher's first-call self-test (sageattn3/_selftest.py) for every family on this
    device: run now if this process has not decided it yet; one row per family and
    `rep.self_test[family]` = its status (passed / failed / skipped / verified). dev/facts
    (_C.device_info) are injectable for CPU tests."""
    from . import _selftest

    dev = torch.cuda.current_device() if dev is None else dev
    facts = _C.device_info(dev) if facts is None else facts
    arch = int(facts["sm_arch"])
    from . import _dispatch

    for fam in (f for f in _policy.FAMILIES if f in facts.get("families", ())):
        why = _dispatch.declines_arch(fam, facts)
        if why is not None:  # e.g. hopper under consumer limits: its supports() says sm_90 only
            emit(Result("selftest", f"{fam} first-call self-test, sm_{arch}", "-", status="SKIP",
                        note=f"the family declines this arch: {why}"))
            continue
        t0 = time.perf_counter()
        try:
            st = _selftest.ensure(dev, fam, arch)
        except Exception as exc:  # noqa: BLE001
            emit(Result("selftest", f"{fam} on sm_{arch}", "-", status="FAIL", note=f"{type(exc).__name__}: {exc}"))
            continue
        rep.self_test[fam] = st.to_json()
        emit(Result("selftest", f"{fam} first-call self-test, sm_{arch}", st.state, status=SELF_TEST_ROW[st.state],
                    seconds=time.perf_counter() - t0, note=st.detail))


def _check_public_api(torch, emit, families, seed: int = 0) -> None:
    """sageattn(kernel=<family>) through the public API for each family: served by the kernel
    (stats), close to float64, and equal to the direct kernel call. ('auto' may keep SDPA on
    GPUs where it is faster; the routing itself is checked in tests/test_gpu_*.py.)"""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    for fam in families:
        _check_public_family(torch, gen, emit, fam)


def _check_public_family(torch, gen, emit, fam) -> None:
    from .api import sageattn

    b, h, s, d = 1, 2, 4097, 128
    label = f"public sageattn(kernel={fam}), NHD_FLAT ({b},{h},{s},{d})"
    t0 = time.perf_counter()
    q, k, v = make_inputs(torch, gen, b, h, h, s, s, d, layout="NHD_FLAT", device="cuda", k_offset=True)
    pv = _policy.default_pv(fam, int(_C.device_info(q.get_device())["sm_arch"]))
    res = Result("kernel", label, f"pv={pv}", bound=bound(family_mode(fam, pv), d) + OUT_ROUNDING["bfloat16"])
    # Poison the caching allocator: the output block most likely reuses this NaN-filled one.
    junk = torch.full_like(q, float("nan"))
    del junk
    before = _stats.stats()["served"].get(fam, 0)
    try:
        out = sageattn(q, k, v, tensor_layout="NHD_FLAT", heads=h, kernel=fam)
        torch.cuda.synchronize()
    except Exception as exc:
        res.status, res.note = "FAIL", f"{type(exc).__name__}: {exc}"
        emit(res)
        return
    served = _stats.stats()["served"].get(fam, 0) - before
    notes = []
    if served != 1:
        notes.append(f"not served by the kernel (fallbacks so far: {_stats.stats()['fallback']})")
    ref = reference_f64_torch(torch, to_hnd(q, "NHD_FLAT", h), to_hnd(k, "NHD_FLAT", h), to_hnd(v, "NHD_FLAT", h))
    res.metric = rel_l1_torch(torch, to_hnd(out, "NHD_FLAT", h), ref)
    if not math.isfinite(res.metric) or res.metric > res.bound:
        notes.append("above bound")
    if served == 1:
        direct = torch.empty_like(q)
        _kernel_call(torch, fam, q, k, v, direct, "NHD_FLAT", h, False, None, pv)
        torch.cuda.synchronize()
        res.vs_ref = rel_l1_torch(torch, out, direct)
        res.vs_ref_bound = 1e-3
        if res.vs_ref > res.vs_ref_bound:
            notes.append("differs from the direct kernel call")
    if tuple(out.shape) != tuple(q.shape) or out.dtype != q.dtype:
        notes.append(f"output {tuple(out.shape)} {out.dtype}, expected {tuple(q.shape)} {q.dtype}")
    res.status = "FAIL" if notes else "PASS"
    res.note = "; ".join(notes) or f"served by {fam}; 'vs ref' column = vs direct kernel call"
    res.seconds = time.perf_counter() - t0
    emit(res)


# ----------------------------------------------------------------------------- driver

def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if x == 0:
        return "0"
    return f"{x:.2e}" if (abs(x) < 1e-3 or abs(x) >= 1e4) else f"{x:.4f}"


HEADER = f"{'section':<9} {'case':<52} {'mode':<14} {'rel-L1':>9} {'bound':>9} {'vs ref':>9} {'bound':>9}  status"


def format_row(r: Result) -> str:
    line = (f"{r.section:<9} {r.case[:52]:<52} {r.mode:<14} {_fmt(r.metric):>9} {_fmt(r.bound):>9} "
            f"{_fmt(r.vs_ref):>9} {_fmt(r.vs_ref_bound):>9}  {r.status}")
    if r.note and r.status != "PASS" or r.note.startswith("served") or r.section == "selftest":
        line += f"  ({r.note})"
    return line


def run_check(seed: Optional[int] = None, gpu: bool = True, stream=None, quiet: bool = False) -> Report:
    """Run every section that this machine supports; print rows as they finish."""
    stream = stream or sys.stdout
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else int(seed)
    from . import _limits

    rep = Report(seed=seed, consumer_limits=_limits.mode())
    t_start = time.perf_counter()

    def emit(r: Result) -> None:
        rep.results.append(r)
        if not quiet:
            print(format_row(r), file=stream, flush=True)

    if not quiet:
        print(f"sageattn3 check (seed {seed}; rel-L1 = sum|out-ref|/sum|ref| vs float64; "
              f"'vs ref' = vs the C reference in the same mode)", file=stream)
        if rep.consumer_limits:
            print(f"CONSUMER LIMITS: {_limits.describe()}", file=stream)
        print(HEADER, file=stream, flush=True)
    rng = np.random.default_rng(seed)
    check_reference(rng, emit)

    torch = _torch()
    if torch is None:
        emit(Result("sdpa", "SDPA passthrough", "-", status="SKIP", note="torch not importable"))
    else:
        check_sdpa(torch, seed, emit, device="cpu")

    try:
        reason = _gpu_skip_reason(torch) if gpu else "disabled (--cpu)"
    except Exception as exc:  # a device query that fails on a machine that has a GPU is a failure
        emit(Result("kernel", "device query", "-", status="FAIL", note=f"{type(exc).__name__}: {exc}"))
        reason = "device query failed"
    if reason is None:
        rep.device = torch.cuda.get_device_name()
        check_sdpa(torch, seed, emit, device="cuda")
        try:
            check_self_test(torch, emit, rep)
            check_kernel(torch, seed, emit)
        except Exception as exc:  # e.g. an illegal address poisons the context
            emit(Result("kernel", "kernel section", "-", status="FAIL", note=f"{type(exc).__name__}: {exc}"))
    else:
        if torch is not None and torch.cuda.is_available() and gpu:
            rep.device = torch.cuda.get_device_name()
            check_sdpa(torch, seed, emit, device="cuda")
        emit(Result("kernel", "GPU kernel cases (all)", "-", status="SKIP", note=reason))
    rep.seconds = time.perf_counter() - t_start
    if not quiet:
        c = rep.counts()
        print(f"check: {'PASS' if rep.ok else 'FAIL'}: {c['PASS']} passed, {c['FAIL']} failed, {c['SKIP']} skipped "
              f"in {rep.seconds:.1f} s on {rep.device} (seed {seed})"
              + (f" under consumer limits {rep.consumer_limits}" if rep.consumer_limits else ""),
              file=stream, flush=True)
        for r in rep.results:
            if r.status == "SKIP":
                print(f"  skipped: {r.section}/{r.case} {r.mode}: {r.note}", file=stream)
    return rep


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=None, help="random seed (default: fresh, printed)")
    p.add_argument("--cpu", action="store_true", help="skip the GPU sections even if a GPU is present")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON ('-' = stdout)")


def main_from_args(args) -> int:
    # With --json - the JSON owns stdout and the table goes to stderr.
    rep = run_check(seed=args.seed, gpu=not args.cpu, stream=sys.stderr if args.json == "-" else None)
    if args.json:
        text = json.dumps(rep.to_json(), indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0 if rep.ok else 1


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sageattn3 check", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return main_from_args(p.parse_args(argv))
