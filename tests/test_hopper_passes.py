"""The hopper family's workspace policy on the host (cuda/hopper/hopper_workspace.cuh,
kv_heads_per_pass): a call whose quantized K/V would exceed both 256 MiB and half the output runs
in passes over groups of K/V heads, each re-using one workspace, so its peak extra memory stays
near 1.5x the output; shorter calls keep one pass. Size queries only: no GPU needed (the hopper
family must be compiled, as it is wherever nvcc 12.3+ built the extension)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sageattn3._ext import _C  # noqa: E402

H100 = (90, 132, 232448)
MIB = 1 << 20
pytestmark = pytest.mark.skipif(_C is None or "hopper" not in [f["name"] for f in _C.families()],
                                reason="the hopper family is not compiled in this build")


def _ws(b, sq, hq, sk, hkv, d=128):
    """(workspace bytes, output bytes) of a (B, S, H*D) bf16 call. The views have stride 0 along
    B and S: the size query reads only shapes, so no memory of the real size is needed."""
    q = torch.zeros(hq * d, dtype=torch.bfloat16).as_strided((b, sq, hq * d), (0, 0, 1))
    k = torch.zeros(hkv * d, dtype=torch.bfloat16).as_strided((b, sk, hkv * d), (0, 0, 1))
    p = _C.problem(q, k, k, "NHD_FLAT", hq)
    return p.workspace_bytes("hopper", "fp8", facts=H100), b * sq * hq * d * 2


def _one_pass(b, sk, hkv, d=128):
    return 2 * b * hkv * ((sk + 127) // 128 * 128) * d  # INT8 K + e4m3 V tiles, scales left out


@pytest.mark.parametrize("s,bound", [(82992, 0.36), (32760, 0.503)])
def test_wan_calls_keep_the_workspace_near_half_the_output(s, bound):
    """Wan 2.2 at 832x1216 (82,992 tokens) and 832x480 (32,760), 40 heads: three and two passes."""
    ws, out = _ws(1, s, 40, s, 40)
    assert ws / out <= bound, ws / out
    assert ws < _one_pass(1, s, 40)


@pytest.mark.parametrize("b,s,h", [(1, 4608, 24), (1, 16384, 40), (4, 4096, 40), (1, 1024, 24)])
def test_calls_under_the_floor_run_in_one_pass(b, s, h):
    ws, _ = _ws(b, s, h, s, h)
    assert ws >= _one_pass(b, s, h)
    assert ws <= 256 * MIB


def test_long_kv_short_q_is_bounded_by_the_floor():
    """333 queries against 300,001 keys of 4 K/V heads (GQA, 8 query heads): the output is 0.7 MB,
    so the floor, not half the output, bounds the workspace: two passes of 2 K/V heads."""
    ws, _ = _ws(1, 333, 8, 300_001, 4)
    assert _one_pass(1, 300_001, 2) <= ws <= 256 * MIB
