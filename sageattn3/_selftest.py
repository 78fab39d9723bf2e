"""Self-test before trust: the first call of a kernel family on a GPU we never ran it on.

A (family, sm_arch) pair not in `_policy.VERIFIED` (for instance mma on an RTX 4090/5090) is
trusted only after a few small problems pass in this process: fresh random inputs, odd lengths,
a causal case, GQA, NHD_FLAT, every P.V mode the family has on that arch, run through
`_dispatch.run_family` and judged by `_check._check_family` (float64 and the C reference in the
family's numerics, `_check.FAMILY_NUMERICS`, with `check`'s bounds). It runs once per (device
index, family), before the first real call, and synchronizes once; afterwards the dispatcher's
cost is one set lookup (`trusted`).

Fail (an error above bound, NaN, an exception): the family is disabled on that device for the
process; the dispatcher asks the plan's next family or falls back to SDPA under the reason
key "self_test_failed", and one WARNING says what failed and how to report it. While the current
stream is capturing a CUDA graph the self-test can't run (it synchronizes): the family is not
trusted inside that capture ("self_test_pending") and the test runs at the next eager call.

SAGEATTN3_SELF_TEST: unset or 1 = as above; 0 = trust every family (said once at INFO);
force = run it on verified pairs too; force-fail = run it and corrupt every output before the
comparison, so the failure path runs end to end on real hardware.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from . import _policy, _stats

log = logging.getLogger("sageattn3")

ENV = "SAGEATTN3_SELF_TEST"
FAILED_KEY = "self_test_failed"
PENDING_KEY = "self_test_pending"
REPORT = "please open an issue with the output of `python -m sageattn3 check` (and `python -m sageattn3 info`)"

# (device index, family) pairs the dispatcher may launch without asking: passed, verified on
# hardware, or trusted by SAGEATTN3_SELF_TEST=0. _dispatch holds a reference: clear, never rebind.
trusted: set = set()
_status: dict = {}  # (device index, family) -> Status, once decided
_pending_said: set = set()
_said: set = set()
_lock = threading.Lock()


@dataclass
class Status:
    state: str            # "passed" | "failed" | "skipped" | "verified"
    detail: str = ""
    seconds: float = 0.0
    results: List = field(default_factory=list)  # _check.Result rows of the run, if it ran

    @property
    def trusted(self) -> bool:
        return self.state != "failed"

    def to_json(self) -> dict:
        return {"state": self.state, "detail": self.detail, "seconds": round(self.seconds, 3),
                "cases": [f"{r.case} {r.mode}: {r.status}" for r in self.results]}


def _cases():
    from ._check import GpuCase

    # Small enough for the C reference on one CPU core in well under a second; odd lengths
    # everywhere (partial tiles in Sq and Sk), >1 key block of 128, head dims 64 and 128 (both
    # families' native ones), both input dtypes.
    return (
        GpuCase("odd 77x77, HND", 1, 2, 2, 77, 77, 64, "HND", ref=True),
        GpuCase("GQA 4/2 causal 200x200, NHD", 1, 4, 2, 200, 200, 128, "NHD", causal=True, ref=True),
        GpuCase("NHD_FLAT 100x257, fp16", 1, 2, 2, 100, 257, 128, "NHD_FLAT", dtype="float16", ref=True),
        GpuCase("MQA 3/1 causal Sq<Sk 65x190", 1, 3, 1, 65, 190, 64, "HND", causal=True, ref=True),
    )


def mode() -> str:
    """"on" (default), "off", "force" or "force-fail", from SAGEATTN3_SELF_TEST."""
    raw = os.environ.get(ENV, "").strip().lower()
    if raw in ("", "1", "on", "auto"):
        return "on"
    if raw in ("0", "off"):
        return "off"
    if raw in ("force", "force-fail"):
        return raw
    _once(("env", raw), logging.WARNING, f"sageattn3: {ENV}={raw!r} is not one of 0, 1, force, force-fail; "
          "running the self-test as by default")
    return "on"


def _once(tag, level, msg) -> None:
    if tag in _said:
        return
    _said.add(tag)
    log.log(level, msg)


def _capturing(dev: int) -> bool:
    import torch

    with torch.cuda.device(dev):
        return bool(torch.cuda.is_current_stream_capturing())


def _device_name(dev: int) -> Tuple[str, int]:
    from . import _dispatch

    facts = _dispatch.device_facts(dev)
    return str(facts.get("name", f"cuda:{dev}")), int(facts.get("sm_arch") or 0)


def run_self_test(torch, family: str, arch: int, device, *, kernel_fn: Optional[Callable] = None,
                  corrupt: bool = False, seed: Optional[int] = None) -> Status:
    """Run the self-test cases for `family` on `device` and judge them. kernel_fn(q, k, v, out,
    layout, heads, causal, scale, pv) defaults to run_family; injectable for CPU tests."""
    from . import _check, _dispatch

    if kernel_fn is None:
        def kernel_fn(q, k, v, out, layout, heads, causal, scale, pv):
            _dispatch.run_family(family, q, k, v, layout=layout, heads=heads, causal=causal, scale=scale, pv=pv,
                                 out=out)
    fn = kernel_fn
    if corrupt:  # SAGEATTN3_SELF_TEST=force-fail: the kernel really runs, its result is then spoiled
        def fn(q, k, v, out, *rest):
            kernel_fn(q, k, v, out, *rest)
            out.neg_()
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
    rows: list = []
    t0 = time.perf_counter()
    try:
        _check._check_family(torch, seed, rows.append, _cases(), family, fn, device, arch)
    except Exception as exc:  # noqa: BLE001 - any failure means "don't trust it"
        return Status("failed", f"the self-test raised {type(exc).__name__}: {exc}", time.perf_counter() - t0, rows)
    seconds = time.perf_counter() - t0
    bad = [r for r in rows if r.status == "FAIL"]
    if bad:
        return Status("failed", describe(bad[0]) + (f" (and {len(bad) - 1} more failing cases)" if len(bad) > 1 else ""),
                      seconds, rows)
    if not any(r.status == "PASS" for r in rows):
        notes = "; ".join(sorted({r.note for r in rows}))
        return Status("failed", f"no self-test case ran ({notes})", seconds, rows)
    return Status("passed", f"{sum(r.status == 'PASS' for r in rows)} cases passed (seed {seed})", seconds, rows)


def describe(r) -> str:
    """One failing _check.Result as a sentence: the case, the error against its bound."""
    from ._check import _fmt

    parts = [f"case '{r.case}' {r.mode}"]
    if r.metric is not None:
        parts.append(f"rel-L1 vs float64 {_fmt(r.metric)} (bound {_fmt(r.bound)})")
    if r.vs_ref is not None:
        parts.append(f"vs the C reference {_fmt(r.vs_ref)} (bound {_fmt(r.vs_ref_bound)})")
    if r.note:
        parts.append(r.note)
    return ", ".join(parts)


def _run_on_device(dev: int, family: str, arch: int, corrupt: bool) -> Status:
    import torch

    with torch.cuda.device(dev):
        return run_self_test(torch, family, arch, f"cuda:{dev}", corrupt=corrupt)


def _without_a_run(m: str, family: str, arch: int) -> Optional[Status]:
    """The status when no self-test is due (trusted by the environment, or a verified pair)."""
    if m == "off":
        _once("off", logging.INFO, f"sageattn3: {ENV}=0: kernel families are trusted without a self-test, "
              "including on GPUs they were never run on")
        return Status("skipped", f"{ENV}=0")
    where = _policy.VERIFIED.get((family, arch))
    if where is not None and m == "on":
        return Status("verified", f"verified on hardware: {where}")
    return None


def _decide(dev: int, family: str, arch: int, m: str) -> Status:
    st = _run_on_device(dev, family, arch, m == "force-fail")
    if m == "force-fail":
        st.detail += f" [{ENV}=force-fail corrupted every output]"
    if not st.trusted:
        name, _ = _device_name(dev)
        msg = (f"sageattn3: the {family} kernel family failed its self-test on cuda:{dev} ({name}, sm_{arch}): "
               f"{st.detail}. {family} is disabled on this device for this process: its calls go to the next "
               f"family in the policy or to SDPA (stats() key '{FAILED_KEY}'). This GPU is not among those "
               f"verified on hardware; {REPORT}. {ENV}=0 skips the self-test.")
        log.warning(msg)
        _stats.note_reason(FAILED_KEY, msg)
    return st


def admit(dev: int, family: str, arch: int) -> Optional[Tuple[str, str]]:
    """None when `family` may serve calls on device `dev` (running the self-test first if this is
    its first use here), else (reason key, details). Called only for pairs not in `trusted`."""
    key = (dev, family)
    st = _status.get(key)
    if st is None:
        with _lock:
            st = _status.get(key)
            if st is None:
                m = mode()
                st = _without_a_run(m, family, arch)
                if st is None:
                    if _capturing(dev):  # not cached: the next eager call runs it
                        return _pending(dev, family, arch)
                    st = _decide(dev, family, arch, m)
                _status[key] = st
                if st.trusted:
                    trusted.add(key)
    return None if st.trusted else (FAILED_KEY, st.detail)


def _pending(dev: int, family: str, arch: int) -> Tuple[str, str]:
    msg = (f"sageattn3: the {family} kernel family has not run its self-test on cuda:{dev} (sm_{arch}) yet, and "
           "it can't run while the current stream is capturing a CUDA graph (it synchronizes): this capture "
           f"uses the next family or SDPA (stats() key '{PENDING_KEY}'). Make one eager call before capturing.")
    if (dev, family) not in _pending_said:
        _pending_said.add((dev, family))
        log.warning(msg)
        _stats.note_reason(PENDING_KEY, msg)
    return PENDING_KEY, msg


def ensure(dev: int, family: str, arch: int) -> Status:
    """The decided status of (dev, family), running the self-test now if it has not run (for
    `check`; not under graph capture)."""
    admit(dev, family, arch)
    return _status[(dev, family)]


def describe_state(dev: int, family: str, arch: int) -> str:
    """What info() shows, without running anything."""
    st = _status.get((dev, family))
    if st is not None:
        return f"{st.state}: {st.detail}" if st.detail else st.state
    m = mode()
    if m == "off":
        return f"skipped ({ENV}=0)"
    where = _policy.VERIFIED.get((family, arch))
    if where is not None and m == "on":
        return f"verified on hardware: {where}"
    return "not run yet: runs before the first call in this process" + (f" ({ENV}={m})" if m != "on" else "")


def statuses(dev: int) -> dict:
    """{family: Status.to_json()} for the families decided on device `dev` so far."""
    return {f: st.to_json() for (d, f), st in sorted(_status.items()) if d == dev}


def reset() -> None:
    """Forget every decision (tests)."""
    with _lock:
        trusted.clear()
        _status.clear()
        _pending_said.clear()
        _said.clear()
