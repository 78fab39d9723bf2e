"""Ctrl-C during a long `_C.reference_attention` call interrupts it promptly.

The reference runs without the GIL; it takes the GIL back about every 50 ms to run
Python's signal handlers (csrc/py_reference.c, poll_signals). A child process starts a call
of several seconds, the test sends SIGINT and times how long the child takes to stop."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from sageattn3._ext import _C

pytestmark = pytest.mark.skipif(os.name == "nt" or _C is None, reason="needs POSIX signals and the built _C")

CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from sageattn3._ext import _C
    x = np.random.default_rng(0).standard_normal((1, 1, 12000, 64)).astype(np.float32)  # ~8 s on a 2020s CPU core
    print("calling", flush=True)
    t0 = time.monotonic()
    try:
        _C.reference_attention(x, x, x, mode="int8-fp16")
    except KeyboardInterrupt:
        print(f"interrupted after {time.monotonic() - t0:.2f} s", flush=True)
        small = x[:, :, :40]
        out = _C.reference_attention(small, small, small, mode="int8-fp16")  # still usable
        assert out.shape == small.shape
        print("usable", flush=True)
        sys.exit(3)
    print("finished without interruption", flush=True)
""")


def test_sigint_interrupts_a_long_reference_call():
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(_C.__file__)))
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=pkg_parent, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "calling"
        time.sleep(0.5)  # inside the C loop by now
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
        waited = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 3, out + err
    assert "interrupted after" in out and "usable" in out, out + err
    assert waited < 2.0, f"the call went on {waited:.2f} s after SIGINT"


def test_polling_changes_no_result_and_works_off_the_main_thread():
    """Results are bit-identical from the main thread and from worker threads (where the
    signal poll only reads the clock), on a call long enough to poll many times."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((1, 2, 700, 64)).astype(np.float32) for _ in range(3))
    ref = _C.reference_attention(q, k, v, mode="int8-fp8", is_causal=True)
    outs = [None] * 3

    def work(i):
        outs[i] = _C.reference_attention(q, k, v, mode="int8-fp8", is_causal=True)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for o in outs:
        np.testing.assert_array_equal(o, ref)
