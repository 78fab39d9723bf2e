"""Fuzzed calls of the public API, of its C validation entry (_C.problem) and of the C
reference, in a child process.

Thousands of generated calls, valid and invalid (ranks 0-5, shapes with 0 and huge sizes,
layouts, heads, dtypes incl. int/fp64/bool, mixed dtypes, NumPy arrays, None, str,
stride-0 and non-contiguous views, sm_scale values incl. bool/NaN/inf/1e40/10**400/0/<0,
masks of bad shapes, typo keywords) run in a worker process with a 10 s limit per case, so
a crash (signal) or a hang fails the test instead of the run.

The oracle (`expect_*`) decides "valid or not" from the documented contract only (README
"API", DESIGN.md section 1, the issue's validation rules, the docstrings of sageattn /
sageattn3_blackwell / reference_attention), never by asking the implementation:
  valid   -> must return a tensor/array of the right shape and dtype
  invalid -> must raise TypeError or ValueError (never another exception, never a result)
  either  -> the contract doesn't decide (NumPy arrays into the torch API, fp64, zero-size
             tensors, non-bool is_causal): a right-shaped result or TypeError/ValueError
The parent and the worker build case i from (SEED, i) alone, so the worker only receives i.

    python tests/test_fuzz.py --cases 20000      # a longer run, with statistics
"""
from __future__ import annotations

import json
import math
import os
import random
import select
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

SEED = 20261125
CASE_TIMEOUT_S = 10.0
# "problem" is _C.problem, the C validation entry every public path calls first.
DEFAULT_CASES = {"sageattn": 2400, "sageattn3_blackwell": 800, "problem": 600, "reference_attention": 800}
PROBLEM_ARGS = ("tensor_layout", "heads", "is_causal", "sm_scale", "attn_mask")
FLT_MAX = 3.4028234663852886e38
LAYOUTS = ("HND", "NHD", "NHD_FLAT")
API_DTYPES = ("float16", "bfloat16", "float32")      # documented: fp16/bf16 (kernels), fp32 (SDPA)
BAD_DTYPES = ("int32", "int64", "bool", "int8", "complex64")
REF_DTYPES = ("float16", "float32", "float64")       # reference_attention's documented inputs
BIG = 1 << 40                                        # "huge" sizes: stride-0 views, no memory
MAX_REAL_ELEMENTS = 200_000                          # valid calls must stay tiny on CPU


# ------------------------------------------------------------------------- descriptions

@dataclass
class T:
    """A tensor to build: torch or numpy, shape, dtype, how it is laid out in memory."""
    lib: str                    # "torch" | "numpy"
    shape: tuple
    dtype: str
    view: str = "contig"        # contig | permuted | sliced | lastT | expand | zero_stride
    requires_grad: bool = False

    def numel(self) -> int:
        return math.prod(self.shape)

    def __repr__(self) -> str:
        extra = "" if self.view == "contig" else f", view={self.view}"
        return f"{self.lib}{self.shape}:{self.dtype}{extra}" + (", grad" if self.requires_grad else "")


class Lit:
    """A non-tensor argument, with a printable repr that rebuilds it."""

    def __init__(self, code: str):
        self.code = code

    def build(self):
        return eval(self.code, {"math": math, "np": _np(), "nan": math.nan, "inf": math.inf})  # noqa: S307

    def __repr__(self) -> str:
        return self.code


NOT_GIVEN = object()


@dataclass
class Call:
    target: str
    args: list
    kwargs: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.target}({', '.join(parts)})"


def _np():
    import numpy
    return numpy


# ------------------------------------------------------------------------------ building

def build(x, gen_seed: int):
    if isinstance(x, T):
        return build_tensor(x, gen_seed)
    if isinstance(x, Lit):
        return x.build()
    return x


def build_tensor(t: T, seed: int):
    np = _np()
    rng = np.random.default_rng(seed)
    shape = tuple(t.shape)
    if t.view == "zero_stride":
        base = np.zeros(1, np.float32)
        if t.lib == "numpy":
            return np.lib.stride_tricks.as_strided(base.astype(t.dtype), shape=shape, strides=(0,) * len(shape))
        import torch
        return torch.zeros(1, dtype=getattr(torch, t.dtype)).as_strided(shape, (0,) * len(shape))
    if t.view == "expand" and len(shape) >= 2:
        alloc = (1,) + shape[1:]
    elif t.view == "sliced" and len(shape) >= 2:
        alloc = shape[:-2] + (2 * shape[-2],) + shape[-1:]
    elif t.view in ("permuted",) and len(shape) >= 2:
        alloc = tuple(reversed(shape))
    elif t.view == "lastT" and len(shape) >= 2:
        alloc = shape[:-2] + (shape[-1], shape[-2])
    else:
        alloc = shape
    data = rng.standard_normal(alloc)
    if t.dtype == "bool":
        data = data > 0
    elif t.dtype.startswith("int"):
        data = (data * 10).astype(np.int64)
    if t.lib == "numpy":
        arr = data.astype(t.dtype)
    else:
        import torch
        arr = torch.from_numpy(np.ascontiguousarray(data)).to(getattr(torch, t.dtype))
    if t.view == "expand" and len(shape) >= 2:
        arr = arr.expand(*shape) if t.lib == "torch" else np.broadcast_to(arr, shape)
    elif t.view == "sliced" and len(shape) >= 2:
        arr = arr[..., ::2, :]
    elif t.view == "permuted" and len(shape) >= 2:
        arr = arr.permute(*reversed(range(len(shape)))) if t.lib == "torch" else arr.transpose()
    elif t.view == "lastT" and len(shape) >= 2:
        arr = arr.transpose(-1, -2) if t.lib == "torch" else np.swapaxes(arr, -1, -2)
    if t.requires_grad and t.lib == "torch" and arr.is_floating_point():
        arr = arr.detach().requires_grad_(True)
    return arr


# ---------------------------------------------------------------------------- generation

def _dims(layout, b, h, s, d, hflat=None):
    if layout == "HND":
        return (b, h, s, d)
    if layout == "NHD":
        return (b, s, h, d)
    return (b, s, h * d)


BAD_SCALES = ["True", "False", "math.nan", "math.inf", "-math.inf", "-0.5", "0", "0.0", "-0.0", "1e40",
              "10**400", "'0.1'", "[0.125]", "complex(0.1, 0)", "-(10**400)", "3.5e38"]
GOOD_SCALES = ["None", "0.125", "1", "0.5", "2.0", "np.float32(0.3)", "1e-3", "np.float64(0.2)"]
SAGEATTN_TYPOS = ["is_casual", "casual", "sm_scal", "tensor_layot", "layout", "kernal", "attention_mask",
                  "mask", "dropout_p", "enable_gqa", "headz", "pv_mode", "scale_factor"]
BAD_INPUTS = ["None", "'q'", "3", "[1.0, 2.0]", "1.5", "b'x'"]


def gen_api_call(rng: random.Random, target: str) -> Call:
    blackwell = target == "sageattn3_blackwell"
    layout = "HND" if (blackwell and rng.random() < 0.6) else rng.choice(LAYOUTS)
    b = rng.choice((1, 1, 2))
    hkv = rng.choice((1, 2))
    hq = hkv * rng.choice((1, 2, 3))
    sq, sk = rng.randint(1, 9), rng.randint(1, 9)
    d = rng.choice((8, 16, 32, 40))
    dv = d if rng.random() < 0.85 else rng.choice((8, 24))
    dtype = rng.choice(API_DTYPES)
    shapes = {"q": [b, hq, sq, d], "k": [b, hkv, sk, d], "v": [b, hkv, sk, dv]}  # canonical B,H,S,D
    dtypes = {n: dtype for n in "qkv"}
    views = {n: "contig" for n in "qkv"}
    libs = {n: "torch" for n in "qkv"}
    others: dict = {}
    rank_delta = {n: 0 for n in "qkv"}
    opts: dict = {}
    huge = False

    for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
        m = rng.randrange(26)
        n = rng.choice("qkv")
        if m == 0:
            views[n] = rng.choice(("permuted", "sliced", "lastT", "expand"))
        elif m == 1:
            shapes[n][0] = shapes[n][0] + rng.choice((1, 2))       # batch mismatch
        elif m == 2:
            shapes[rng.choice("kv")][2] += rng.choice((1, 3))     # k/v lengths differ
        elif m == 3:
            shapes[rng.choice("kv")][1] += 1                       # k/v heads differ / GQA not dividing
        elif m == 4:
            shapes[rng.choice("qk")][3] += rng.choice((8, 1))      # head dim q != k
        elif m == 5:
            shapes[n][rng.randrange(4)] = 0                         # a zero-size dim
        elif m == 6:
            rank_delta[n] = rng.choice((-4, -3, -2, -1, 1, 2))     # ranks 0..5 (and 6)
        elif m == 7:
            dtypes[n] = rng.choice(BAD_DTYPES + ("float64",))
        elif m == 8:
            dtypes[n] = rng.choice([t for t in API_DTYPES if t != dtype])   # mixed dtypes
        elif m == 9:
            others[n] = rng.choice(BAD_INPUTS)
        elif m == 10:
            libs[n] = "numpy"
            dtypes[n] = rng.choice(("float16", "float32", "float64"))
        elif m == 11:
            opts["sm_scale"] = rng.choice(BAD_SCALES + GOOD_SCALES)
        elif m == 12:
            opts["is_causal"] = rng.choice(("True", "False", "True", "1", "0", "'yes'", "None"))
        elif m == 13:
            opts["heads"] = rng.choice(("0", "-1", "True", "'2'", "2.0", str(hq), str(hq + 1), "None", "10**30"))
        elif m == 14:
            opts["layout"] = rng.choice(("'bogus'", "'hnd'", "None", "1", "''", "'NHD_FLAT '"))
        elif m == 15:
            opts["kernel"] = rng.choice(("'mma'", "'sdpa'", "'auto'", "'fast'", "None", "1"))
        elif m == 16:
            opts["pv"] = rng.choice(("'fp16'", "'fp8'", "'fp8_f16acc'", "'auto'", "'fp4'", "None"))
        elif m == 17:
            opts["typo"] = rng.choice(SAGEATTN_TYPOS)
        elif m == 18:
            opts["alias"] = rng.choice(("scale", "softmax_scale", "causal"))
            opts["alias_value"] = rng.choice(("0.25", "0.5", "True", "False"))
        elif m == 19:
            opts["sa2"] = rng.choice((("smooth_k", "True"), ("smooth_k", "'no'"), ("qk_quant_gran", "'per_warp'"),
                                      ("qk_quant_gran", "'per_tensor'"), ("pv_accum_dtype", "'fp32+fp16'"),
                                      ("pv_accum_dtype", "'fp8'"), ("smooth_v", "False"),
                                      ("quantization_backend", "'triton'")))
        elif m == 20:
            opts["mask"] = rng.choice(("ok", "ok_bcast", "ok_2d", "bad_sq", "bad_sk", "bad_rank", "int", "float_other",
                                       "str", "bool_full"))
        elif m == 21:
            huge = True
        elif m == 22:
            views[n] = "expand"
            shapes[n][0] = max(shapes[n][0], 2)
            if n != "q":
                shapes["q"][0] = shapes[n][0] if rng.random() < 0.7 else shapes["q"][0]
        elif m == 23:
            opts["requires_grad"] = n
        elif m == 24:
            hq2 = rng.choice((0, 5, 7))
            shapes["q"][1] = hq2 if hkv > 1 or hq2 == 0 else hq2
            if rng.random() < 0.5:
                shapes["k"][1] = shapes["v"][1] = 0
        elif m == 25 and blackwell:
            opts["bw_extra"] = rng.choice(("per_block_mean=False", "smooth_k=True", "foo=1", "return_lse=True",
                                           "return_lse=False", "attn_bias=None", "tensor_layout='NHD'"))

    if huge:  # a stride-0 tensor with a huge dim, plus an inconsistency elsewhere
        n = rng.choice("qkv")
        dim = rng.randrange(4)
        shapes[n][dim] = rng.choice((BIG, 1 << 31, 1 << 20))
        views[n] = "zero_stride"
        other = rng.choice([x for x in "qkv" if x != n])
        shapes[other][0] = 0 if rng.random() < 0.5 else shapes[other][0] + 1

    # a layout chosen for sageattn3_blackwell via tensor_layout=
    bw_layout = layout
    if blackwell and opts.get("bw_extra") == "tensor_layout='NHD'":
        bw_layout = "NHD"
    if blackwell and layout != "HND" and "bw_extra" not in opts:
        opts["bw_extra"] = f"tensor_layout={layout!r}"
        bw_layout = layout
    eff_layout = bw_layout if blackwell else layout

    def tensor(n):
        if n in others:
            return Lit(others[n])
        bb, hh, ss, dd = shapes[n]
        shape = list(_dims(eff_layout, bb, hh, ss, dd))
        delta = rank_delta[n]
        if delta < 0:
            shape = shape[:max(0, len(shape) + delta)]
        elif delta > 0:
            shape = [1] * delta + shape
        return T(libs[n], tuple(shape), dtypes[n], views[n] if libs[n] == "torch" or views[n] != "zero_stride"
                 else "zero_stride", requires_grad=(opts.get("requires_grad") == n))

    args = [tensor("q"), tensor("k"), tensor("v")]
    kwargs: dict = {}
    if blackwell:
        if "mask" in opts:
            kwargs["attn_mask"] = _mask(opts["mask"], shapes, dtype)
        if "is_causal" in opts:
            kwargs["is_causal"] = Lit(opts["is_causal"])
        if "bw_extra" in opts:
            k_, v_ = opts["bw_extra"].split("=", 1)
            kwargs[k_] = Lit(v_)
        if "heads" in opts and eff_layout == "NHD_FLAT":
            kwargs["heads"] = Lit(opts["heads"])
        elif eff_layout == "NHD_FLAT":
            kwargs["heads"] = Lit(str(shapes["q"][1]))
        if "sm_scale" in opts:
            kwargs[rng.choice(("sm_scale", "scale", "softmax_scale"))] = Lit(opts["sm_scale"])
        if "typo" in opts and rng.random() < 0.5:
            kwargs[opts["typo"]] = Lit("True")
        if "alias" in opts:
            kwargs[opts["alias"]] = Lit(opts["alias_value"])
        return Call(target, args, kwargs)
    kwargs["tensor_layout"] = Lit(opts.get("layout", repr(layout)))
    if "is_causal" in opts:
        kwargs["is_causal"] = Lit(opts["is_causal"])
    if "sm_scale" in opts:
        kwargs["sm_scale"] = Lit(opts["sm_scale"])
    if layout == "NHD_FLAT":
        kwargs["heads"] = Lit(opts.get("heads", str(shapes["q"][1])))
    elif "heads" in opts:
        kwargs["heads"] = Lit(opts["heads"])
    for name in ("kernel", "pv"):
        if name in opts:
            kwargs[name] = Lit(opts[name])
    if "mask" in opts:
        kwargs["attn_mask"] = _mask(opts["mask"], shapes, dtype)
    if "typo" in opts:
        kwargs[opts["typo"]] = Lit("True")
    if "alias" in opts:
        kwargs[opts["alias"]] = Lit(opts["alias_value"])
    if "sa2" in opts:
        kwargs[opts["sa2"][0]] = Lit(opts["sa2"][1])
    return Call(target, args, kwargs)


def _mask(kind, shapes, dtype):
    b, hq, sq, _ = shapes["q"]
    sk = shapes["k"][2]
    if kind == "ok":
        return T("torch", (b, hq, sq, sk), "bool")
    if kind == "ok_bcast":
        return T("torch", (1, 1, sq, sk), dtype)
    if kind == "ok_2d":
        return T("torch", (sq, sk), "bool")
    if kind == "bool_full":
        return T("torch", (b, 1, sq, sk), "bool")
    if kind == "bad_sq":
        return T("torch", (sq + 2, sk), "bool")
    if kind == "bad_sk":
        return T("torch", (1, 1, sq, sk + 3), "bool")
    if kind == "bad_rank":
        return T("torch", (1, 1, 1, sq, sk), "bool")
    if kind == "int":
        return T("torch", (sq, sk), "int32")
    if kind == "float_other":
        return T("torch", (sq, sk), "float64" if dtype != "float64" else "float32")
    return Lit("'causal'")


REF_MODES = ("exact", "int8-fp16", "int8-fp8", "int8-fp8-f16acc", "nvfp4")


def gen_reference_call(rng: random.Random) -> Call:
    layout = rng.choice(("HND", "NHD"))
    b, hkv = rng.choice((1, 2)), rng.choice((1, 2))
    hq = hkv * rng.choice((1, 2))
    sq, sk, d = rng.randint(1, 12), rng.randint(1, 12), rng.choice((4, 8, 16, 20))
    shapes = {"q": [b, hq, sq, d], "k": [b, hkv, sk, d], "v": [b, hkv, sk, d]}
    dtypes = {n: rng.choice(REF_DTYPES) for n in "qkv"} if rng.random() < 0.3 else dict.fromkeys("qkv", "float32")
    views = dict.fromkeys("qkv", "contig")
    libs = dict.fromkeys("qkv", "numpy")
    others: dict = {}
    rank_delta = dict.fromkeys("qkv", 0)
    kwargs: dict = {}
    huge = False
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        m = rng.randrange(17)
        n = rng.choice("qkv")
        if m == 0:
            views[n] = rng.choice(("permuted", "sliced", "lastT", "expand"))
        elif m == 1:
            shapes[n][0] += 1
        elif m == 2:
            shapes[rng.choice("kv")][rng.choice((1, 2, 3))] += 1
        elif m == 3:
            shapes["q"][1] = rng.choice((3, 5))
        elif m == 4:
            shapes[n][rng.randrange(4)] = 0
        elif m == 5:
            rank_delta[n] = rng.choice((-4, -2, -1, 1))
        elif m == 6:
            dtypes[n] = rng.choice(BAD_DTYPES + ("float64", "float16"))
        elif m == 7:
            others[n] = rng.choice(BAD_INPUTS)
        elif m == 8:
            libs[n] = "torch"
        elif m == 9:
            kwargs["mode"] = Lit(rng.choice(("'exact'", "'int8-fp16'", "'int8-fp8'", "'int8-fp8-f16acc'", "'nvfp4'", "'fp4'", "None", "3")))
        elif m == 10:
            kwargs["sm_scale"] = Lit(rng.choice(BAD_SCALES + GOOD_SCALES + ["-0.25"]))
        elif m == 11:
            kwargs[rng.choice(("q_block", "k_block"))] = Lit(rng.choice(("1", "16", "32", "64", "0", "-1", "True", "2**70",
                                                                         "7", "1.5", "'32'")))
        elif m == 12:
            kwargs[rng.choice(("is_causal", "smooth_k", "per_block_mean"))] = Lit(rng.choice(
                ("True", "False", "0", "1", "2", "'no'", "None", "np.bool_(True)")))
        elif m == 13:
            kwargs[rng.choice(("layout", "pv_dtype", "granularity"))] = Lit(rng.choice(
                ("'HND'", "'NHD'", "'bf16'", "'f16'", "'fp16'", "'block'", "'mma'", "'bogus'", "None", "1")))
        elif m == 14:
            kwargs[rng.choice(("is_casual", "scale", "tensor_layout", "heads"))] = Lit("True")
        elif m == 15:
            huge = True
        elif m == 16:
            kwargs["layout"] = Lit(repr(rng.choice(("HND", "NHD"))))
    if huge:
        n = rng.choice("qkv")
        shapes[n][rng.randrange(4)] = rng.choice((BIG, 1 << 31, 1 << 22))
        views[n] = "zero_stride"
        other = rng.choice([x for x in "qkv" if x != n])
        shapes[other][0] = 0 if rng.random() < 0.5 else shapes[other][0] + 1
    eff_layout = layout
    lay = kwargs.get("layout")
    if isinstance(lay, Lit) and lay.code in ("'HND'", "'NHD'"):
        eff_layout = lay.code.strip("'")
    elif lay is None and layout == "NHD":
        kwargs["layout"] = Lit("'NHD'")

    def tensor(n):
        if n in others:
            return Lit(others[n])
        shape = list(_dims(eff_layout, *shapes[n]))
        delta = rank_delta[n]
        shape = shape[:max(0, len(shape) + delta)] if delta < 0 else [1] * delta + shape
        return T(libs[n], tuple(shape), dtypes[n], views[n])

    return Call("reference_attention", [tensor("q"), tensor("k"), tensor("v")], kwargs)


def make_case(i: int, plan: dict) -> Call:
    """Case i of a plan {target: count} (targets in the plan's order); the case depends on
    (SEED, target, its number within the target) only."""
    for target, n in plan.items():
        if i < n:
            rng = random.Random(f"{SEED}:{target}:{i}")
            if target == "reference_attention":
                return gen_reference_call(rng)
            if target == "problem":  # the same calls, less the policy's and the aliases' keywords
                call = gen_api_call(rng, "sageattn")
                return Call("problem", call.args, {k: v for k, v in call.kwargs.items() if k in PROBLEM_ARGS})
            return gen_api_call(rng, target)
        i -= n
    raise IndexError(i)


# ------------------------------------------------------------------------------- oracle

class Invalid(Exception):
    """The contract says this call is invalid (TypeError/ValueError expected)."""


def _lit(x, default=NOT_GIVEN):
    if x is NOT_GIVEN:
        return default
    if isinstance(x, Lit):
        return x.build()
    return x


def _is_real(x) -> bool:
    np = _np()
    return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_)))


def _check_scale(x, allow_negative=False):
    if x is None:
        return
    if not _is_real(x):
        raise Invalid("sm_scale type")
    try:
        f = float(x)
    except OverflowError:
        raise Invalid("sm_scale overflows")
    if not math.isfinite(f) or abs(f) > FLT_MAX:
        raise Invalid("sm_scale not finite in float32")
    if not allow_negative and f <= 0:
        raise Invalid("sm_scale <= 0")


def _is_int(x) -> bool:
    np = _np()
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


_SA_OWN = ("tensor_layout", "is_causal", "sm_scale", "heads", "kernel", "pv", "attn_mask", "return_lse")
_SA2 = {"smooth_k": None, "smooth_v": None, "qk_quant_gran": ("per_warp", "per_thread"),
        "pv_accum_dtype": ("fp16", "fp32", "fp16+fp32", "fp32+fp32", "fp32+fp16"),
        "quantization_backend": ("triton", "cuda")}
# sageattn3_blackwell's docstring: misspellings of a result-changing name are a TypeError:
# the common other spellings, and names within difflib ratio 0.75 of one.
_BW_RESULT_NAMES = ("attn_mask", "is_causal", "sm_scale", "tensor_layout", "heads", "return_lse")
_BW_OTHER_SPELLINGS = ("is_casual", "casual", "mask", "attention_mask", "attn_bias", "bias", "layout")


def _bw_misspelt(name: str) -> bool:
    import difflib
    return name in _BW_OTHER_SPELLINGS or bool(difflib.get_close_matches(name, _BW_RESULT_NAMES, n=1, cutoff=0.75))


def _merge_alias(canon: dict, name: str, value) -> None:
    """Two spellings of one argument must agree; the first one given is used."""
    if canon[name] is NOT_GIVEN:
        canon[name] = value
        return
    a = canon[name]
    try:
        same = a is value or bool(a == value)
    except Exception:
        same = False
    if not same:
        raise Invalid("two spellings")


def expect_api(call: Call):
    """('valid'|'either', shape, dtype) or raises Invalid."""
    kw = dict(call.kwargs)
    blackwell = call.target == "sageattn3_blackwell"
    vals = {k: _lit(v) for k, v in kw.items() if not isinstance(v, T)}
    canon = {"sm_scale": NOT_GIVEN, "is_causal": NOT_GIVEN}
    either = False
    layout, heads, kernel, pv = "HND", None, "auto", "auto"
    for name, value in kw.items():
        v = vals.get(name, value)
        if name in ("sm_scale", "scale", "softmax_scale"):
            _merge_alias(canon, "sm_scale", v)
        elif name in ("is_causal", "causal"):
            _merge_alias(canon, "is_causal", v)
        elif name == "tensor_layout":
            layout = v
        elif name == "heads":
            heads = v
        elif name in ("kernel", "pv") and not blackwell:
            kernel, pv = (v, pv) if name == "kernel" else (kernel, v)
        elif name == "attn_mask":
            pass
        elif name in _SA2 and not blackwell:
            choices = _SA2[name]
            if choices is None and not (isinstance(v, bool) or (type(v) is int and v in (0, 1))):
                raise Invalid(f"{name} not a bool")
            if choices is not None and v not in choices:
                raise Invalid(f"{name} choice")
        elif blackwell:
            if name == "return_lse":
                if v:
                    raise Invalid("return_lse=True")
            elif _bw_misspelt(name):
                raise Invalid("misspelt result-changing keyword")
            # anything else: ignored with a warning
        else:
            raise Invalid(f"unknown keyword {name}")
    if layout is None or (isinstance(layout, str) and layout.upper() in LAYOUTS and layout not in LAYOUTS):
        # Not decided by the README (it names the three spellings): None reads as "HND" the way
        # SageAttention 2 reads any non-"NHD" value, and case variants name the same layout.
        layout = "HND" if layout is None else layout.upper()
        either = True
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise Invalid("layout")
    if not isinstance(kernel, str) or kernel not in ("auto", "mma", "sdpa"):
        raise Invalid("kernel")
    if not isinstance(pv, str) or pv not in ("auto", "fp16", "fp8", "fp8_f16acc"):
        raise Invalid("pv")
    sm_scale = None if canon["sm_scale"] is NOT_GIVEN else canon["sm_scale"]
    is_causal = False if canon["is_causal"] is NOT_GIVEN else canon["is_causal"]
    q, k, v = call.args
    for t in (q, k, v):
        if not isinstance(t, T):
            raise Invalid("not a tensor")
    if any(t.lib == "numpy" for t in (q, k, v)):
        either = True
    dts = {t.dtype for t in (q, k, v)}
    if len(dts) > 1:
        raise Invalid("mixed dtypes")
    (dt,) = dts
    if dt in BAD_DTYPES:
        raise Invalid("dtype")
    if dt == "float64":
        either = True
    rank = 3 if layout == "NHD_FLAT" else 4
    if any(len(t.shape) != rank for t in (q, k, v)):
        raise Invalid("rank")
    if layout == "NHD_FLAT":
        if not _is_int(heads) or heads <= 0:
            raise Invalid("heads")
        bq, sq, hdq = q.shape
        bk, sk, hdk = k.shape
        bv, sv, hdv = v.shape
        if hdq % heads:
            raise Invalid("q last dim % heads")
        hq, d = heads, hdq // heads
        if d == 0:
            either = True
            hkv, dv = 0, 0
        else:
            if hdk % d:
                raise Invalid("k last dim % D")
            hkv = hdk // d
            if hkv == 0:
                if hq:
                    raise Invalid("no k/v heads")
                either, dv = True, 0
            else:
                if hdv % hkv:
                    raise Invalid("v last dim % Hkv")
                dv = hdv // hkv
        hv = hkv
        dk = d
    else:
        if heads is not None and (not _is_int(heads) or heads != (q.shape[1] if layout == "HND" else q.shape[2])):
            raise Invalid("heads != q's heads")
        if layout == "HND":
            (bq, hq, sq, d), (bk, hkv, sk, dk), (bv, hv, sv, dv) = q.shape, k.shape, v.shape
        else:
            (bq, sq, hq, d), (bk, sk, hkv, dk), (bv, sv, hv, dv) = q.shape, k.shape, v.shape
    if not (bq == bk == bv):
        raise Invalid("batch")
    if sk != sv or hkv != hv:
        raise Invalid("k/v shapes")
    if d != dk:
        raise Invalid("head dim q/k")
    if hkv == 0:
        if hq:
            raise Invalid("no k/v heads")
        either = True
    elif hq % hkv:
        raise Invalid("GQA not dividing")
    if isinstance(sm_scale, Lit):
        sm_scale = sm_scale.build()
    _check_scale(sm_scale)
    if not isinstance(is_causal, bool):
        either = True
    mask = kw.get("attn_mask")
    if isinstance(mask, Lit) and mask.build() is None:
        mask = None
    if mask is not None:
        if not isinstance(mask, T):
            raise Invalid("mask type")
        if is_causal is True:
            raise Invalid("mask and is_causal")
        if mask.dtype != "bool" and mask.dtype != dt:
            raise Invalid("mask dtype")
        target = (bq, hq, sq, sk)
        if len(mask.shape) > 4 or any(m not in (1, t) for m, t in zip(reversed(mask.shape), reversed(target))):
            raise Invalid("mask shape")
        if layout != "HND":
            either = True
    if 0 in (bq, hq, sq, d, sk, dv) or 0 in (q.numel(), k.numel(), v.numel()):
        either = True
    shape = {"HND": (bq, hq, sq, dv), "NHD": (bq, sq, hq, dv), "NHD_FLAT": (bq, sq, hq * dv)}[layout]
    return ("either" if either else "valid"), shape, dt


def expect_reference(call: Call):
    kw = call.kwargs
    allowed = ("mode", "is_causal", "sm_scale", "smooth_k", "per_block_mean", "q_block", "k_block", "pv_dtype",
               "layout", "granularity")
    vals = {}
    for name, v in kw.items():
        if name not in allowed:
            raise Invalid("unknown keyword")
        vals[name] = _lit(v)
    either = False
    for name, choices in (("mode", REF_MODES), ("layout", ("HND", "NHD")), ("granularity", ("block", "mma")),
                          ("pv_dtype", ("bf16", "bfloat16", "f16", "fp16", "float16"))):
        if name in vals and (not isinstance(vals[name], str) or vals[name] not in choices):
            raise Invalid(name)
    for name in ("is_causal", "smooth_k", "per_block_mean"):
        if name in vals:
            x = vals[name]
            np = _np()
            if not (isinstance(x, (bool, np.bool_)) or (type(x) is int and x in (0, 1))):
                raise Invalid(name)
    blocks = {}
    for name in ("q_block", "k_block"):
        if name in vals:
            x = vals[name]
            if not _is_int(x) or x < 1 or x >= 2**63:
                raise Invalid(name)
            blocks[name] = x
    if vals.get("mode") == "nvfp4" and blocks.get("k_block", 64) % 16:
        raise Invalid("nvfp4 k_block")
    if vals.get("mode") == "int8-fp8-f16acc" and blocks.get("k_block", 64) % 32:
        raise Invalid("f16acc k_block")
    q, k, v = call.args
    for t in (q, k, v):
        if not isinstance(t, T) or t.lib != "numpy":
            raise Invalid("not an ndarray")
        if t.dtype not in REF_DTYPES:
            raise Invalid("dtype")
        if len(t.shape) != 4:
            raise Invalid("rank")
        if 0 in t.shape:
            raise Invalid("zero-size")
    if len({t.dtype for t in (q, k, v)}) > 1:
        either = True  # the reference casts each input to float32 itself
    nhd = vals.get("layout") == "NHD"
    if k.shape != v.shape:
        raise Invalid("k/v shapes")
    bq, hq, sq, d = (q.shape[0], q.shape[2], q.shape[1], q.shape[3]) if nhd else q.shape
    hk = k.shape[2] if nhd else k.shape[1]
    if bq != k.shape[0] or d != k.shape[3] or hq % hk:
        raise Invalid("shapes")
    sm = vals.get("sm_scale")
    _check_scale(sm, allow_negative=True)
    if sm is not None and float(sm) <= 0:
        either = True
    for t in (q, k, v):
        if t.numel() * 4 > 2**62:
            raise Invalid("too large")
    return ("either" if either else "valid"), tuple(q.shape), "float32"


def expect(call: Call):
    """('valid'|'either', shape, dtype) or ('invalid', reason, None)."""
    try:
        if call.target == "reference_attention":
            return expect_reference(call)
        return expect_api(call)
    except Invalid as why:
        return "invalid", str(why), None


# -------------------------------------------------------------------------------- worker

def worker(plan: dict) -> None:
    """Reads case numbers from stdin, runs each, writes one JSON line per case."""
    import warnings
    warnings.simplefilter("ignore")
    import sageattn3
    from sageattn3._ext import _C
    def problem(q, k, v, tensor_layout=None, heads=None, is_causal=False, sm_scale=None, attn_mask=None):
        return _C.problem(q, k, v, tensor_layout, heads, is_causal, sm_scale, attn_mask)

    fns = {"sageattn": sageattn3.sageattn, "sageattn3_blackwell": sageattn3.sageattn3_blackwell,
           "reference_attention": getattr(_C, "reference_attention", None), "problem": problem}
    out = sys.stdout
    for line in sys.stdin:
        i = int(line)
        call = make_case(i, plan)
        rec: dict = {"i": i}
        try:
            args = [build(a, SEED + i * 7 + j) for j, a in enumerate(call.args)]
            kwargs = {k: build(v, SEED + i * 7 + 5) for k, v in call.kwargs.items()}
        except Exception as exc:  # a case this torch/numpy can't even build: skip it
            rec.update(outcome="unbuildable", type=type(exc).__name__, msg=str(exc)[:200])
        else:
            try:
                res = fns[call.target](*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - classified by the parent
                rec.update(outcome="raised", type=type(exc).__name__,
                           tv=isinstance(exc, (TypeError, ValueError)), msg=str(exc)[:300])
            else:
                shape = tuple(getattr(res, "shape", None) or getattr(res, "out_shape", None) or ())
                dtype = str(getattr(res, "dtype", type(res).__name__)).replace("torch.", "")
                rec.update(outcome="ok", shape=list(shape), dtype=dtype, type=type(res).__name__)
        out.write(json.dumps(rec) + "\n")
        out.flush()


# -------------------------------------------------------------------------------- parent

def run_fuzz(plan: dict, cwd: Optional[str] = None, env: Optional[dict] = None,
             timeout_s: float = CASE_TIMEOUT_S) -> dict:
    """All cases through worker processes; returns statistics and failures."""
    total = sum(plan.values())
    stats: Counter = Counter()
    failures: list = []
    proc = None

    if env is None:  # the worker imports the sageattn3 this process imported
        pkg_parent = str(Path(__import__("sageattn3").__file__).resolve().parent.parent)
        path = [pkg_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))

    def start():
        return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(plan)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, bufsize=1, cwd=cwd, env=env)

    def read_line(p, limit):
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([p.stdout], [], [], left)
            if ready:
                return p.stdout.readline()

    i = 0
    while i < total:
        if proc is None or proc.poll() is not None:
            proc = start()
            first = True
        call = make_case(i, plan)
        exp = expect(call)
        try:
            proc.stdin.write(f"{i}\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = read_line(proc, timeout_s + (30.0 if first else 0.0))  # the first case pays the imports
        first = False
        if line is None:
            proc.kill()
            proc.wait()
            proc = None
            rec = {"outcome": "hang"}
        elif line == "":
            proc.wait()
            rec = {"outcome": "crash", "returncode": proc.returncode}
            proc = None
        else:
            rec = json.loads(line)
        verdict = judge(exp, rec)
        key = f"{call.target}:{exp[0]}:{verdict}"
        stats[key] += 1
        stats[f"outcome:{rec['outcome']}:{rec.get('type', '')}"] += 1
        if verdict == "fail":
            failures.append((i, repr(call), exp, rec))
        i += 1
    if proc is not None:
        proc.stdin.close()
        proc.wait(timeout=30)
    return {"stats": dict(stats), "failures": failures, "cases": total}


def judge(exp, rec) -> str:
    kind = exp[0]
    out = rec["outcome"]
    if out == "unbuildable":
        return "skipped"
    if out in ("hang", "crash"):
        return "fail"
    if out == "raised":
        if kind in ("invalid", "either") and rec.get("tv"):
            return "pass"
        return "fail"
    if kind == "invalid":
        return "fail"
    return "pass" if (tuple(rec["shape"]) == tuple(exp[1]) and rec["dtype"] == exp[2]) else "fail"


def summarize(result: dict, limit: int = 40) -> str:
    lines = [f"{result['cases']} cases"]
    for k, n in sorted(result["stats"].items()):
        lines.append(f"  {k:60s} {n}")
    lines.append(f"{len(result['failures'])} failures; first {limit}:")
    for i, call, exp, rec in result["failures"][:limit]:
        got = rec["outcome"] + (f" {rec.get('type')}: {rec.get('msg', '')[:160]}" if rec["outcome"] == "raised"
                                else f" shape={rec.get('shape')} dtype={rec.get('dtype')}" if rec["outcome"] == "ok"
                                else f" rc={rec.get('returncode')}" if rec["outcome"] == "crash" else "")
        lines.append(f"  #{i} {call}\n      expected {exp[0]} ({exp[1]}), got {got}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- tests

def _plan(*targets) -> dict:
    scale = float(os.environ.get("SAGEATTN3_FUZZ_SCALE", "1"))
    return {k: int(n * scale) for k, n in DEFAULT_CASES.items() if not targets or k in targets}


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def test_oracle_knows_the_issue_examples():
    """The oracle itself, on the calls issue 10 reported as wrongly accepted."""
    def api(q, k, v, **kw):
        return expect(Call("sageattn", [T("torch", q, "float16"), T("torch", k, "float16"), T("torch", v, "float16")],
                           {n: Lit(repr(x)) for n, x in kw.items()}))[0]
    assert api((1, 2, 5, 64), (1, 0, 5, 64), (1, 1, 5, 64)) == "invalid"
    assert api((1, 2, 5, 64), (3, 2, 5, 64), (3, 2, 5, 64)) == "invalid"
    assert api((1, 2, 5, 64), (1, 2, 77, 64), (1, 2, 50, 64)) == "invalid"
    assert api((1, 128, 77), (1, 128, 77), (1, 128, 77), tensor_layout="NHD") == "invalid"
    assert api((2, 5, 64), (2, 5, 64), (2, 5, 64)) == "invalid"
    assert api((1, 2, 5, 64), (1, 2, 5, 64), (1, 2, 5, 64), heads=3) == "invalid"
    for bad in (math.nan, math.inf, 1e40, True, 10**400, 0, -1.0):
        assert api((1, 2, 5, 64), (1, 2, 5, 64), (1, 2, 5, 64), sm_scale=bad) == "invalid", bad
    assert api((1, 2, 5, 64), (1, 2, 5, 64), (1, 2, 5, 64), is_casual=True) == "invalid"
    assert api((1, 2, 5, 64), (1, 2, 5, 64), (1, 2, 5, 64), scale=0.01) == "valid"
    assert api((1, 4, 5, 64), (1, 2, 9, 64), (1, 2, 9, 32)) == "valid"


def _fuzz(plan):
    t0 = time.monotonic()
    result = run_fuzz(plan)
    report = summarize(result) + f"\n({time.monotonic() - t0:.1f} s)"
    print(report)
    assert not result["failures"], report


def test_fuzz_reference_attention():
    _fuzz(_plan("reference_attention"))


@pytest.mark.skipif(_torch() is None, reason="the public API needs torch")
def test_fuzz_public_api():
    _fuzz(_plan("sageattn", "sageattn3_blackwell"))


@pytest.mark.skipif(_torch() is None, reason="fuzzed with torch tensors")
def test_fuzz_c_validation_entry():
    _fuzz(_plan("problem"))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        import argparse
        ap = argparse.ArgumentParser(description="run the fuzz test standalone, with statistics")
        ap.add_argument("--scale", type=float, default=1.0, help="multiply the default case counts")
        a = ap.parse_args()
        os.environ["SAGEATTN3_FUZZ_SCALE"] = str(a.scale)
        res = run_fuzz(_plan())
        print(summarize(res, limit=200))
        sys.exit(1 if res["failures"] else 0)
