"""The attention override that `Sage3AttentionOnlySwitch` puts on one ComfyUI model.

ComfyUI's contract (shared DESIGN.md section 4): every ComfyUI attention function is wrapped
by `wrap_attn`; when the call's `transformer_options` holds "optimized_attention_override",
ComfyUI calls `override(func, *args, **kwargs)` instead, where `func` is the attention ComfyUI
would have run and `args`/`kwargs` are exactly what the model passed:
`q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
transformer_options=..., _inside_attn_wrapper=True`. Without `skip_reshape` q/k/v are
`(B, S, H*D)`, with it `(B, H, S, D)`; the result must be `(B, S, H*D)` unless
`skip_output_reshape`, then `(B, H, S, D)`.

`Sage3Override` serves a call with a sageattn3 kernel (`_dispatch.try_attention`, q/k/v passed
as they came: no copies, no repeated K/V heads) or hands it, with the original arguments
untouched, to the override that was on the model before (if any) or to ComfyUI's `func`. It
never raises for "can't serve": a mask, fp32 attention requested by the model, an unsupported
dtype/head dim/device, a short sequence, a missing CUDA build all go back to ComfyUI, counted
by reason (a short fixed key). A call in the announced layout whose tensors disagree (batch,
heads, lengths, head dims, dtypes, devices) is invalid: try_attention's C validation raises
its TypeError/ValueError, as the public API does, instead of letting any attention guess.

Schedule: the first/last sampling steps and first/last transformer blocks can be kept on
ComfyUI's own attention.
- Blocks come from `transformer_options["block_index"]` and `["total_blocks"]`, which recent
  ComfyUI sets per block in DiT models (Wan, Flux, Qwen-Image, ...). For models with several
  block lists (Flux: double then single blocks) the rule applies to each list. Where ComfyUI
  doesn't report both, the block rule can't apply: every block is served and the run's log
  line says so.
- Steps: the step of a model call is derived once per model call, on the host, from
  `transformer_options["sigmas"]` (this call's sigma) against `["sample_sigmas"]` (this run's
  schedule). We chose a lazy, identity-keyed cache in the override over a model wrapper:
  ComfyUI builds one `sigmas` tensor per model evaluation and hands the same object to every
  attention call of that evaluation (cond and uncond chunks included), so the first attention
  call of a model call reads one scalar from the device and every other call reuses the
  answer by an `is` check. `sample_sigmas` is copied to the host once per sampling run. Unlike a
  DIFFUSION_MODEL wrapper (which only some ComfyUI models run) this works for every model that
  calls ComfyUI attention, and it costs nothing at all when no step rule is set (the default).
  An evaluation between two schedule sigmas (DPM2's midpoint) belongs to the step it starts
  from; Heun's second evaluation, made at the next step's sigma, counts as the next step.
  With KSamplerAdvanced the schedule is the run's own slice, so "first steps" of a Wan 2.2
  low-noise expert are the first steps that expert runs.

With kernel="nvfp4", and with kernel="auto" on a GPU where auto's first choice is nvfp4 (sm_120),
the first/last `eight_bit_steps` sampling steps run on the 8-bit family instead
(EIGHT_BIT_KERNEL): NVFP4 attention on every step shows artifacts and flicker on Wan 2.2, and
SageAttention3 recommends 8-bit attention on the first and last steps. Same step rule as above
(and the full-precision rule wins where both apply). With auto elsewhere it costs nothing (the
device's arch is looked up once, no sigma is read).

Run boundaries come from an OUTER_SAMPLE wrapper (`outer_sample`) that the node registers on the
cloned model: it resets this model's counters when a sampling run starts and logs one line when
it ends (which kernel served how many calls, how many went to ComfyUI's attention and why).

The object is shared, not copied, when ComfyUI deep-copies model options on `clone()`.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, NamedTuple, Optional, Tuple

from .. import _dispatch, _policy, _stats

log = logging.getLogger("sageattn3.comfyui")

_MISSING = object()

# Keyword arguments ComfyUI's attention functions take. Anything else goes back to ComfyUI:
# a future argument may change the semantics (a causal flag, variable lengths, ...).
_KNOWN_KWARGS = frozenset({
    "q", "k", "v", "query", "key", "value", "heads", "mask", "attn_precision", "skip_reshape",
    "skip_output_reshape", "transformer_options", "_inside_attn_wrapper",
})

# The family that serves the 8-bit steps of a kernel="nvfp4" run (the 8-bit kernel of the
# GPUs nvfp4 is for; on Hopper, where nvfp4 runs emulated for testing, mma runs there too).
EIGHT_BIT_KERNEL = "mma"

# Fallback reasons we produce ourselves (fixed strings keep the counters small).
R_KERNEL_SDPA = "kernel 'sdpa' chosen on the node"
R_MASK = "attention mask (kernels take none)"
R_FP32 = "model asks for float32 attention (attn_precision)"
R_FIRST_STEPS = "schedule: first steps"
R_LAST_STEPS = "schedule: last steps"
R_FIRST_BLOCKS = "schedule: first blocks"
R_LAST_BLOCKS = "schedule: last blocks"
R_NO_QKV = "q/k/v not found in the call"
R_POSITIONAL = "unexpected positional arguments"
R_SHAPE = "q/k/v shapes don't match the layout ComfyUI announced"

NOTE_NO_BLOCKS = ("block schedule not applied: this model/ComfyUI reports no "
                  "block_index/total_blocks")
NOTE_NO_STEPS = "step schedule not applied: no sigmas/sample_sigmas in transformer_options"


class Schedule(NamedTuple):
    """How many first/last sampling steps and transformer blocks keep ComfyUI's attention."""
    first_steps: int = 0
    last_steps: int = 0
    first_blocks: int = 0
    last_blocks: int = 0

    def validate(self) -> "Schedule":
        for name, value in zip(self._fields, self):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        return self


def step_index(sample_sigmas, sigma: float) -> int:
    """The sampling step (0-based) that a model evaluation at `sigma` belongs to.

    Step i goes from sample_sigmas[i] down to sample_sigmas[i+1] (the schedule decreases; its
    last entry is where sampling ends, usually 0). An evaluation at sample_sigmas[i], or between
    it and sample_sigmas[i+1], is step i. Values above the first sigma count as step 0.
    """
    n = len(sample_sigmas) - 1
    if n <= 0:
        return 0
    tol = 1e-5 * abs(sigma) + 1e-12
    i = 0
    while i + 1 < n and sample_sigmas[i + 1] >= sigma - tol:
        i += 1
    return i


def _host_floats(x) -> list:
    if hasattr(x, "detach"):
        return [float(s) for s in x.detach().reshape(-1).float().cpu().tolist()]
    if isinstance(x, (int, float)):
        return [float(x)]
    return [float(s) for s in x]


def _host_first(x) -> float:
    if hasattr(x, "detach"):
        return float(x.detach().reshape(-1)[0])  # the one device read of a model call
    if isinstance(x, (int, float)):
        return float(x)
    return float(x[0])


def _compiling() -> bool:
    torch = _dispatch.torch
    compiler = getattr(torch, "compiler", None) if torch is not None else None
    return compiler is not None and compiler.is_compiling()


def _kw(kwargs: dict, name: str, alt: str):
    value = kwargs.get(name, _MISSING)
    if value is _MISSING:
        value = kwargs.get(alt)
    return value


def _arch_of(dev: int) -> int:
    """sm_arch of CUDA device `dev` (0 for CPU tensors, dev < 0)."""
    return int(_dispatch.device_facts(dev).get("sm_arch") or 0) if dev >= 0 else 0


class Sage3Override:
    """`optimized_attention_override` for one model (see the module docstring)."""

    def __init__(self, *, kernel: str = "auto", schedule: Schedule = Schedule(),
                 previous=None, label: str = "model", print_backend: bool = True,
                 pv: str = "auto", eight_bit_steps: Tuple[int, int] = (0, 0)):
        if kernel not in _dispatch.KERNELS:
            raise ValueError(f"kernel must be one of {_dispatch.KERNELS}, got {kernel!r}")
        first8, last8 = eight_bit_steps
        for name, value in (("eight_bit_first_steps", first8), ("eight_bit_last_steps", last8)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        self.kernel = kernel
        self.eight_bit_steps = (first8, last8)
        self._uses_8bit = kernel in ("nvfp4", "auto") and (first8 > 0 or last8 > 0)
        self._auto_fp4: Dict[int, bool] = {}  # device index -> auto picks nvfp4 first there
        self.pv = pv
        self.schedule = Schedule(*schedule).validate()
        self.previous = previous
        self.label = label
        self.print_backend = bool(print_backend)
        self._uses_steps = self.schedule.first_steps > 0 or self.schedule.last_steps > 0
        self._uses_blocks = self.schedule.first_blocks > 0 or self.schedule.last_blocks > 0
        self._depth = 0
        self.sigma_reads = 0  # device reads of a sigma: at most one per model call
        self.reset()

    # ComfyUI deep-copies model_options on every clone: every clone shares this one object.
    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __repr__(self) -> str:
        return (f"Sage3Override(kernel={self.kernel!r}, schedule={tuple(self.schedule)}, "
                f"eight_bit_steps={self.eight_bit_steps}, "
                f"label={self.label!r}, previous={'yes' if self.previous is not None else 'no'})")

    # ------------------------------------------------------------------ counters
    def reset(self) -> None:
        """Zero this model's counters (done at the start of every sampling run)."""
        self.served = 0
        self.compiled_calls = 0
        self.fallback: Dict[str, int] = {}
        self.notes: set = set()
        self._served_at_start = dict(_stats.stats()["served"])
        self._ss_obj = None
        self._ss_host = None
        self._sig_obj = None
        self._sig_pos = None

    def stats(self) -> Dict[str, Any]:
        """{'served': n, 'served_by_kernel': {name: n}, 'fallback': {reason: n}, 'notes': [...]}."""
        now = _stats.stats()["served"]
        delta = {name: n - self._served_at_start.get(name, 0) for name, n in now.items()}
        delta = {name: n for name, n in delta.items() if n > 0}
        if sum(delta.values()) != self.served:
            delta = {}  # another sageattn3 user ran meanwhile: which kernel is not known
        return {"served": self.served, "served_by_kernel": delta,
                "fallback": dict(self.fallback), "compiled": self.compiled_calls,
                "notes": sorted(self.notes)}

    def summary(self) -> str:
        """The one log line for a sampling run."""
        st = self.stats()
        n_fb = sum(st["fallback"].values())
        total = st["served"] + n_fb + st["compiled"]
        head = f"sageattn3 [{self.label}]"
        if total == 0:
            return (f"{head}: no attention call reached the node in this run (this model's "
                    "attention doesn't go through ComfyUI's optimized attention)")
        parts = []
        if st["served"]:
            kern = ", ".join(f"{name} {n}" for name, n in sorted(st["served_by_kernel"].items()))
            parts.append(f"{st['served']} on sageattn3" + (f" ({kern})" if kern else ""))
        if st["compiled"]:
            parts.append(f"{st['compiled']} through the torch.compile custom op (sageattn3 or SDPA)")
        if n_fb:
            why = "; ".join(f"{r}: {n}" for r, n in
                            sorted(st["fallback"].items(), key=lambda kv: (-kv[1], kv[0])))
            parts.append(f"{n_fb} on ComfyUI attention ({why})")
        line = f"{head}: {total} attention calls: " + ", ".join(parts)
        if st["notes"]:
            line += " [" + "; ".join(st["notes"]) + "]"
        return line

    # ------------------------------------------------------------------ run boundaries
    def outer_sample(self, executor, *args, **kwargs):
        """ComfyUI OUTER_SAMPLE wrapper: one sampling run of this model."""
        self._depth += 1
        if self._depth == 1:
            self.reset()
        try:
            return executor(*args, **kwargs)
        finally:
            self._depth -= 1
            if self._depth == 0:
                if self.print_backend:
                    log.info("%s", self.summary())
                # drop the references to this run's sigma tensors
                self._ss_obj = self._sig_obj = None

    # ------------------------------------------------------------------ schedule
    def _step(self, to) -> Optional[Tuple[int, int]]:
        sig = to.get("sigmas")
        ss = to.get("sample_sigmas")
        if sig is None or ss is None:
            return None
        if sig is self._sig_obj and ss is self._ss_obj:
            return self._sig_pos
        if ss is not self._ss_obj:
            self._ss_host = _host_floats(ss)  # once per sampling run
            self._ss_obj = ss
        sigma = _host_first(sig)  # once per model call
        self.sigma_reads += 1
        pos = (step_index(self._ss_host, sigma), len(self._ss_host) - 1)
        self._sig_obj = sig
        self._sig_pos = pos
        return pos

    def _schedule_reason(self, to) -> Optional[str]:
        sch = self.schedule
        if self._uses_blocks:
            bi = to.get("block_index") if to is not None else None
            tb = to.get("total_blocks") if to is not None else None
            if bi is None or tb is None:
                self.notes.add(NOTE_NO_BLOCKS)
            elif bi < sch.first_blocks:
                return R_FIRST_BLOCKS
            elif bi >= tb - sch.last_blocks:
                return R_LAST_BLOCKS
        if self._uses_steps:
            pos = self._step(to) if to is not None else None
            if pos is None:
                self.notes.add(NOTE_NO_STEPS)
            else:
                step, total = pos
                if step < sch.first_steps:
                    return R_FIRST_STEPS
                if step >= total - sch.last_steps:
                    return R_LAST_STEPS
        return None

    def _auto_is_fp4(self, q) -> bool:
        dev = q.get_device() if q.is_cuda else -1
        hit = self._auto_fp4.get(dev)
        if hit is None:
            order = _policy.auto_order(_arch_of(dev))
            hit = self._auto_fp4[dev] = bool(order) and order[0] == "nvfp4"
        return hit

    def _kernel_for(self, to, q) -> str:
        """The kernel= of this call: EIGHT_BIT_KERNEL on the 8-bit steps of a run that would use
        nvfp4 (kernel="nvfp4", or "auto" where auto starts with it)."""
        if self.kernel == "auto" and not self._auto_is_fp4(q):
            return self.kernel
        pos = self._step(to) if to is not None else None
        if pos is None:
            self.notes.add(NOTE_NO_STEPS)
            return self.kernel
        step, total = pos
        first8, last8 = self.eight_bit_steps
        return EIGHT_BIT_KERNEL if step < first8 or step >= total - last8 else self.kernel

    # ------------------------------------------------------------------ the override
    def _hand_back(self, reason: str, func, args, kwargs):
        self.fallback[reason] = self.fallback.get(reason, 0) + 1
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def __call__(self, func, *args, **kwargs):
        n = len(args)
        if self.kernel == "sdpa":
            return self._hand_back(R_KERNEL_SDPA, func, args, kwargs)
        mask = args[4] if n > 4 else kwargs.get("mask")
        if mask is not None:
            return self._hand_back(R_MASK, func, args, kwargs)
        attn_precision = args[5] if n > 5 else kwargs.get("attn_precision")
        if attn_precision is not None and str(attn_precision) == "torch.float32":
            return self._hand_back(R_FP32, func, args, kwargs)
        if n > 8:
            return self._hand_back(R_POSITIONAL, func, args, kwargs)
        for key in kwargs:
            if key not in _KNOWN_KWARGS:
                return self._hand_back(f"argument {key!r} not handled", func, args, kwargs)
        to = kwargs.get("transformer_options")
        if self._uses_steps or self._uses_blocks:
            reason = self._schedule_reason(to)
            if reason is not None:
                return self._hand_back(reason, func, args, kwargs)

        q = args[0] if n > 0 else _kw(kwargs, "q", "query")
        k = args[1] if n > 1 else _kw(kwargs, "k", "key")
        v = args[2] if n > 2 else _kw(kwargs, "v", "value")
        if q is None or k is None or v is None:
            return self._hand_back(R_NO_QKV, func, args, kwargs)
        heads = args[3] if n > 3 else kwargs.get("heads")
        skip_reshape = args[6] if n > 6 else kwargs.get("skip_reshape", False)
        skip_output_reshape = args[7] if n > 7 else kwargs.get("skip_output_reshape", False)

        if skip_reshape:  # (B, H, S, D)
            if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
                return self._hand_back(R_SHAPE, func, args, kwargs)
            layout, h = "HND", None
        else:  # (B, S, H*D)
            if not isinstance(heads, int):
                heads = int(heads) if hasattr(heads, "__index__") else 0
            if q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or heads <= 0 or q.shape[-1] % heads:
                return self._hand_back(R_SHAPE, func, args, kwargs)
            d = q.shape[-1] // heads
            if k.shape[-1] % d or v.shape[-1] != k.shape[-1]:
                return self._hand_back(R_SHAPE, func, args, kwargs)
            layout, h = "NHD_FLAT", heads

        kernel = self._kernel_for(to, q) if self._uses_8bit else self.kernel
        if _compiling():
            # Under torch.compile the decision lives in the opaque custom op (which falls back
            # to SDPA itself), so which path served is not known here: counted apart.
            from .. import _op
            out = _op.attention(q, k, v, layout, h or 0, False, None, kernel, self.pv)
            self.compiled_calls += 1
        else:
            out, reason = _dispatch.try_attention(q, k, v, layout=layout, heads=h,
                                                  kernel=kernel, pv=self.pv)
            if out is None:
                return self._hand_back(reason, func, args, kwargs)
            self.served += 1

        if layout == "NHD_FLAT":
            if skip_output_reshape:  # (B, S, H*D) -> (B, H, S, D), a view
                out = out.unflatten(-1, (h, -1)).transpose(1, 2)
        elif not skip_output_reshape:  # (B, H, S, D) -> (B, S, H*D)
            out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
        return out
