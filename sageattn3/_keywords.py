"""Extra keywords of the public functions: aliases, SageAttention 2's options, typos.

Only reached when a caller passes a keyword outside the function's own signature, so the
hot path pays one truth test of an empty dict. The rules:

- `sageattn`: `scale` / `softmax_scale` mean sm_scale and `causal` means is_causal (the
  spellings of torch SDPA, flash-attn and yunchang's callers). SageAttention 2's options that
  cannot change our result (smooth_k: softmax ignores K's mean, and we always subtract it;
  smooth_v, qk_quant_gran, pv_accum_dtype, quantization_backend: its kernel choices) are
  checked against SageAttention 2's own choices, then ignored. Anything else: TypeError.
- `sageattn3_blackwell`: the official signature takes **kwargs and callers pass extras, so
  an unknown keyword is ignored with a warning (once per name per process), except when it
  would change the result: tensor_layout, heads, sm_scale and its aliases, causal are
  honoured; return_lse=True and names that look like a misspelt result-changing argument
  (is_casual, mask, attention_mask, ...) are a TypeError.
- Two spellings of one argument with different values: TypeError.
"""
from __future__ import annotations

import difflib
import warnings


class _Unset:
    """Default of an argument that has an alias, so "not given" differs from "given as the
    default". Behaves like the default it stands for (repr, truth) if it ever leaks."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)


UNSET_CAUSAL = _Unset(False)
UNSET_SCALE = _Unset(None)

_SCALE_ALIASES = ("scale", "softmax_scale")
_CAUSAL_ALIASES = ("causal",)

# SageAttention 2 (thu-ml/SageAttention, sageattention/core.py) options and their choices.
_SA2_FLAGS = ("smooth_k", "smooth_v")
_SA2_CHOICES = {
    "qk_quant_gran": ("per_warp", "per_thread"),
    "pv_accum_dtype": ("fp16", "fp32", "fp16+fp32", "fp32+fp32", "fp32+fp16"),
    "quantization_backend": ("triton", "cuda"),
}

_SAGEATTN_NAMES = ("tensor_layout", "is_causal", "sm_scale", "heads", "kernel", "pv", "attn_mask",
                   "return_lse") + _SCALE_ALIASES + _CAUSAL_ALIASES + _SA2_FLAGS + tuple(_SA2_CHOICES)

# Names whose value changes sageattn3_blackwell's result, and common other spellings of them.
_BLACKWELL_RESULT_NAMES = ("attn_mask", "is_causal", "sm_scale", "tensor_layout", "heads", "return_lse")
_KNOWN_MISSPELLINGS = {
    "mask": "attn_mask", "attention_mask": "attn_mask", "attn_bias": "attn_mask", "bias": "attn_mask",
    "layout": "tensor_layout", "is_casual": "is_causal", "casual": "is_causal",
}

_warned: set = set()


def _same(a, b) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # e.g. tensors: ambiguous truth value; treat as different
        return False


def _merge(fn: str, canonical: str, current, unset, name: str, value, given: dict):
    """The value of `canonical` once spelling `name` = value is seen; TypeError on a conflict."""
    if current is unset:
        given[canonical] = name
        return value
    if not _same(current, value):
        first = given.get(canonical, canonical)
        raise TypeError(f"{fn}() got two spellings of {canonical} with different values: "
                        f"{first}={current!r} and {name}={value!r}")
    return current


def _suggest(name: str, names) -> str:
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_sa2_option(fn: str, name: str, value) -> None:
    if name in _SA2_FLAGS:
        if not isinstance(value, bool) and not (type(value) is int and value in (0, 1)):
            raise TypeError(f"{fn}(): {name} must be a bool, got {type(value).__name__} {value!r}")
        return
    choices = _SA2_CHOICES[name]
    if not isinstance(value, str):
        raise TypeError(f"{fn}(): {name} must be a str, one of {choices}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{fn}(): {name} must be one of {choices}, got {value!r}")


def sageattn_extras(extra: dict, is_causal, sm_scale):
    """(is_causal, sm_scale) after sageattn's aliases; TypeError for unknown keywords."""
    given: dict = {}
    for name, value in extra.items():
        if name in _SCALE_ALIASES:
            sm_scale = _merge("sageattn", "sm_scale", sm_scale, UNSET_SCALE, name, value, given)
        elif name in _CAUSAL_ALIASES:
            is_causal = _merge("sageattn", "is_causal", is_causal, UNSET_CAUSAL, name, value, given)
        elif name in _SA2_FLAGS or name in _SA2_CHOICES:
            _check_sa2_option("sageattn", name, value)
        else:
            hint = _KNOWN_MISSPELLINGS.get(name)
            hint = f" (did you mean {hint!r}?)" if hint else _suggest(name, _SAGEATTN_NAMES)
            raise TypeError(f"sageattn() got an unexpected keyword argument {name!r}{hint}")
    return is_causal, sm_scale


def blackwell_extras(extra: dict, is_causal):
    """(layout, is_causal, sm_scale, heads) for sageattn3_blackwell's **kwargs."""
    fn = "sageattn3_blackwell"
    layout, sm_scale, heads = "HND", UNSET_SCALE, None
    given: dict = {}
    for name, value in extra.items():
        if name == "tensor_layout":
            if not isinstance(value, str):
                raise TypeError(f"{fn}(): tensor_layout must be a str, got {type(value).__name__} {value!r}")
            layout = value  # checked against the layouts with the other arguments
        elif name == "heads":
            heads = value
        elif name == "sm_scale" or name in _SCALE_ALIASES:
            sm_scale = _merge(fn, "sm_scale", sm_scale, UNSET_SCALE, name, value, given)
        elif name in _CAUSAL_ALIASES:
            is_causal = _merge(fn, "is_causal", is_causal, UNSET_CAUSAL, name, value, given)
        elif name == "return_lse":
            if value is not False and value != 0:
                raise TypeError(f"{fn}(return_lse={value!r}) is not supported: sageattn3 returns only the output")
        elif name in _KNOWN_MISSPELLINGS or difflib.get_close_matches(name, _BLACKWELL_RESULT_NAMES, n=1,
                                                                        cutoff=0.75):
            hint = _KNOWN_MISSPELLINGS.get(name) or difflib.get_close_matches(name, _BLACKWELL_RESULT_NAMES,
                                                                               n=1, cutoff=0.75)[0]
            raise TypeError(f"{fn}() got an unexpected keyword argument {name!r} (did you mean {hint!r}?): "
                            f"it would change the result, so it is not ignored")
        elif name not in _warned:
            _warned.add(name)
            warnings.warn(f"{fn}(): keyword argument {name!r} is ignored (it does not change sageattn3's "
                          f"result); said once per keyword", UserWarning, stacklevel=3)
    if is_causal is UNSET_CAUSAL:
        is_causal = False
    return layout, is_causal, None if sm_scale is UNSET_SCALE else sm_scale, heads
