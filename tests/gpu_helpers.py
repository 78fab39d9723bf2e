"""Shared helpers for the GPU tests: direct kernel calls with poisoned outputs, float64
references on the GPU, input generators. Imported only by tests marked `gpu`."""
from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch

from sageattn3 import _check, _dispatch, _limits
from sageattn3._ext import _C

# SAGEATTN3_CONSUMER_LIMITS / pytest --consumer-limits (sageattn3/_limits.py): the devices report
# a GeForce class's arch and 99 KB shared memory, as on an RTX card; None = off.
CONSUMER_LIMITS = _limits.mode()
SMALL_SMEM = 110 * 1024  # below this per-block limit the mma family runs its small-smem configurations

K_OFFSET = 8.0  # per-channel K offset magnitude (real DiT keys carry one; smoothing removes it)


def make_qkv(b, hq, hkv, sq, sk, d, *, layout="HND", dtype=torch.bfloat16, k_offset=True, gen=None):
    """Fresh random q, k, v in `layout` (never zeros). Returns HND-ordered tensors too."""
    dev = "cuda"
    q = torch.randn(b, hq, sq, d, device=dev, generator=gen)
    k = torch.randn(b, hkv, sk, d, device=dev, generator=gen)
    v = torch.randn(b, hkv, sk, d, device=dev, generator=gen)
    if k_offset:
        k = k + K_OFFSET * torch.randn(1, hkv, 1, d, device=dev, generator=gen)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    return to_layout(q, layout), to_layout(k, layout), to_layout(v, layout)


def to_layout(t_hnd, layout):
    """A (B,H,S,D) tensor as a view in the requested layout, memory ordered like that layout."""
    if layout == "HND":
        return t_hnd.contiguous()
    nhd = t_hnd.transpose(1, 2).contiguous()
    if layout == "NHD":
        return nhd
    return nhd.view(nhd.shape[0], nhd.shape[1], -1)  # NHD_FLAT


def to_hnd(t, layout, heads=None):
    if layout == "HND":
        return t
    if layout == "NHD":
        return t.transpose(1, 2)
    b, s, hd = t.shape
    return t.view(b, s, heads if heads else hd // 128, -1).transpose(1, 2)


def run_mma(q, k, v, *, layout="HND", heads=None, causal=False, scale=None, pv="fp16", with_lse=False):
    """Call the mma family directly (no dispatch policy), output and workspace poisoned first.
    with_lse: also the kernel's LSE, (out, lse), the lse buffer NaN-poisoned before the run."""
    lse = None
    if with_lse:
        prob = _dispatch.problem(q, k, v, layout, heads, causal, scale)
        lse = torch.full((prob.batch, prob.heads_q, prob.seq_q), float("nan"), dtype=torch.float32, device=q.device)
    try:
        out = _dispatch.run_family("mma", q, k, v, layout=layout, heads=heads, causal=causal, scale=scale, pv=pv,
                                   poison=True, lse=lse)
    except _C.UnsupportedError as exc:
        # On a 99 KB GPU (or under consumer limits) some (head dim, P.V) pairs are not served by
        # design (cuda/mma/mma_configs.h: SDPA's there); anywhere else a refusal is a failure.
        if str(exc).startswith(("smem_limit", "pv_mode")) and \
                _C.device_info(q.get_device())["smem_optin"] < SMALL_SMEM:
            pytest.skip(f"not served on a 99 KB-per-block GPU (SDPA's there): {exc}")
        raise
    return (out, lse) if with_lse else out


def ref64(q, k, v, *, causal=False, scale=None, rows=None):
    """float64 attention on the GPU for HND tensors; `rows` limits the query rows computed."""
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    q64 = q.double()
    if rows is not None:
        q64 = q64[:, :, rows]
    k64, v64 = k.double(), v.double()
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k64 = k64.repeat_interleave(rep, dim=1)
        v64 = v64.repeat_interleave(rep, dim=1)
    outs = []
    for h in range(q64.shape[1]):  # one head at a time keeps the score matrix small
        s = (q64[:, h] @ k64[:, h].transpose(-1, -2)) * scale
        if causal:
            qi = torch.arange(q.shape[2], device=q.device) if rows is None else rows
            kj = torch.arange(k.shape[2], device=q.device)
            s = s.masked_fill(kj[None, None, :] > qi[None, :, None], float("-inf"))
        outs.append(torch.softmax(s, dim=-1) @ v64[:, h])
    return torch.stack(outs, dim=1)


def rel_l1(out, ref):
    out = out.double()
    return float((out - ref).abs().sum() / ref.abs().sum())


def reference_same_mode(q, k, v, *, causal, pv, scale=None, return_lse=False):
    """The C CPU reference in the mma kernel's exact quantization (HND tensors, small shapes;
    its scale groups and V fix from _check.FAMILY_NUMERICS["mma"]); with return_lse, (out, lse)
    with the reference's LSE (K smoothing added back)."""
    d = q.shape[-1]
    q_block = 32 if d <= 128 else 16
    mode = {"fp8": "int8-fp8", "fp8_f16acc": "int8-fp8-f16acc"}.get(pv, "int8-fp16")
    pv_dtype = "bf16" if q.dtype == torch.bfloat16 else "f16"
    arr = [t.float().cpu().numpy() for t in (q, k, v)]
    res = _C.reference_attention(
        *arr, mode=mode, is_causal=causal, sm_scale=scale, smooth_k=True, per_block_mean=False,
        q_block=q_block, k_block=64, pv_dtype=pv_dtype, layout="HND", return_lse=return_lse,
        **_check.FAMILY_NUMERICS["mma"]["ref"])
    if return_lse:
        return torch.from_numpy(np.asarray(res[0])), torch.from_numpy(np.asarray(res[1]))
    return torch.from_numpy(np.asarray(res))


def v_rounding_bias_case(run, top):
    """(err, bias) for V whose e4m3 codes all round the same way: every key but one at 0.53, key 0
    at 1.0, so each channel's scale is top / 1.0 and every other code rounds by the same err
    (V's mean e4m3 error, in V's units); bias is the mean signed error of run(q, k, v) against
    float64. A kernel with V's fix (the reference's v_mean_fix) keeps |bias| a small part of |err|."""
    sq, sk, d = 300, 1000, 128
    q, k, _ = make_qkv(1, 2, 2, sq, sk, d)
    v = torch.full((1, 2, sk, d), 0.53, device="cuda").to(torch.bfloat16)
    v[:, :, 0] = 1.0
    out = run(q, k, v)
    vf = v.float()
    scale = top / vf.abs().amax(dim=2, keepdim=True)
    err = ((vf * scale).to(torch.float8_e4m3fn).float() / scale - vf).mean().item()
    return err, (out.double() - ref64(q, k, v)).mean().item()


def check_f64(out, q, k, v, layout, heads, causal, bound, *, rows=None, scale=None):
    """rel-L1 of a kernel's output (q/k/v/out in `layout`) against float64 attention, asserted
    <= bound after checking no element was left unwritten (NaN-poisoned); returns the error."""
    qh, kh, vh = (to_hnd(t, layout, heads) for t in (q, k, v))
    oh = to_hnd(out, layout, heads)
    assert not torch.isnan(oh).any(), "unwritten (NaN-poisoned) output elements"
    ref = ref64(qh, kh, vh, causal=causal, rows=rows, scale=scale)
    got = oh if rows is None else oh[:, :, rows]
    err = rel_l1(got, ref)
    assert err <= bound, f"rel-L1 vs float64 {err:.5f} > {bound}"
    return err


def ring_of_calls(q, k, v, parts, **kw):
    """NHD q against K/V cut at parts - 1 random places, each chunk through
    _lse.attention_with_lse(**kw), merged by the LSE: (out as float32, lse)."""
    from sageattn3 import _lse
    from sageattn3.parallel import merge_attention
    sk = k.shape[1]
    cuts = sorted(torch.randperm(sk - 1)[: parts - 1].add(1).tolist())
    edges = [0] + cuts + [sk]
    acc = None
    for a, b in zip(edges[:-1], edges[1:]):
        o, l = _lse.attention_with_lse(q, k[:, a:b], v[:, a:b], layout="NHD", **kw)
        acc = (o.float(), l) if acc is None else merge_attention(acc[0], acc[1], o, l, layout="NHD")
    return acc


def lse64(qh, kh, *, causal=False, scale=None):
    """float64 log-sum-exp of each row's scores sm_scale * q.k (HND tensors, GQA, top-left causal)."""
    d = qh.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    rep = qh.shape[1] // kh.shape[1]
    k64 = kh.double().repeat_interleave(rep, 1)
    outs = []
    for h in range(qh.shape[1]):  # one head at a time keeps the score matrix small
        s = (qh[:, h].double() @ k64[:, h].transpose(-1, -2)) * scale
        if causal:
            i = torch.arange(qh.shape[2], device=qh.device)[:, None]
            j = torch.arange(kh.shape[2], device=qh.device)[None]
            s = s.masked_fill(j > i, float("-inf"))
        outs.append(torch.logsumexp(s, -1))
    return torch.stack(outs, dim=1)


def three_consumer_query_heads():
    """Query heads (even, for GQA 2:1) with which a non-causal D = 128 hopper call of 377 rows takes
    the three-consumer CTAs (consumers_d128 in cuda/hopper/hopper_attn.cu) on this GPU: half as
    many as SMs, so 128-row CTAs (3 per head) need two waves and 192-row ones (2 per head) one."""
    sm = _C.device_info(torch.cuda.current_device())["sm_count"]
    return max(2, sm // 2 // 2 * 2)


def run_hopper(q, k, v, *, layout="HND", heads=None, causal=False, scale=None):
    """Call the hopper family directly (no dispatch policy), output and workspace poisoned first."""
    return _dispatch.run_family("hopper", q, k, v, layout=layout, heads=heads, causal=causal, scale=scale,
                                pv="fp8", poison=True)


def reference_hopper(q, k, v, *, causal, scale=None):
    """The C CPU reference in the hopper kernel's quantization (_check.FAMILY_NUMERICS): INT8 Q
    per row, INT8 K in 4 lane groups per 128-key block after smoothing, e4m3 V per channel and
    e4m3 P (HND tensors, small shapes)."""
    arr = [t.float().cpu().numpy() for t in (q, k, v)]
    return torch.from_numpy(np.asarray(_C.reference_attention(
        *arr, mode="int8-fp8", is_causal=causal, sm_scale=scale, smooth_k=True, per_block_mean=False,
        layout="HND", **_check.FAMILY_NUMERICS["hopper"]["ref"])))


def _have_c_compiler() -> bool:
    """torch.compile's inductor backend compiles C/C++ on the host: without a compiler on PATH
    (a wheel user's machine may have only the driver) it raises before running anything."""
    return any(shutil.which(c) for c in (os.environ.get("CC") or "", "cc", "gcc", "clang") if c)


needs_c_compiler = pytest.mark.skipif(not _have_c_compiler(),
                                      reason="torch.compile (inductor) needs a C compiler on PATH")


def capture_graph(f):
    """Run f once on a side stream (the warm-up capture needs), then capture it in a CUDA graph.
    Returns (graph, the warm-up's result, the captured call's static result)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        warm = f()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static = f()
    return g, warm, static


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def assert_graph_replays(kernel: str, return_lse: bool = False):
    """sageattn(kernel=kernel[, return_lse]) captured in a CUDA graph: the replay computes on the
    new q, like an eager call (the extension allocates nothing and never syncs, so capture works)."""
    import sageattn3
    q, k, v = make_qkv(1, 2, 2, 2048, 2048, 128)
    f = lambda: sageattn3.sageattn(q, k, v, kernel=kernel, return_lse=return_lse)  # noqa: E731
    g, eager, static = capture_graph(f)
    q.copy_(torch.randn_like(q))
    g.replay()
    torch.cuda.synchronize()
    for got, want, before in zip(_as_tuple(static), _as_tuple(f()), _as_tuple(eager)):
        assert torch.equal(got, want)
        assert not torch.equal(got, before)


def assert_compiles_fullgraph(kernel: str, return_lse: bool = False):
    """sageattn(kernel=kernel[, return_lse]) inside torch.compile(fullgraph=True) equals the eager call."""
    import sageattn3
    q, k, v = make_qkv(1, 2, 2, 2048, 2048, 128)

    def f(q, k, v):
        r = sageattn3.sageattn(q * 1.0, k, v, kernel=kernel, return_lse=return_lse)
        return tuple(t * 1.0 for t in r) if return_lse else r + 0.0

    compiled = torch.compile(f, fullgraph=True)
    for got, want in zip(_as_tuple(compiled(q, k, v)), _as_tuple(f(q, k, v))):
        assert torch.equal(got, want)


# ----------------------------------------------------------------------------- self-test

@pytest.fixture
def fresh(monkeypatch):
    """A clean self-test state and clean stats before and after the test; yields monkeypatch
    (tests set SAGEATTN3_SELF_TEST through it). Import it into a test module to use it."""
    import sageattn3
    from sageattn3 import _selftest
    _selftest.reset()
    sageattn3.reset_stats()
    yield monkeypatch
    _selftest.reset()
    sageattn3.reset_stats()


def random_qkv(s=1000, d=128, h=2, layout="NHD_FLAT"):
    """q, k, v of one batch from a freshly seeded generator, bf16, (1, S, H*D) or (1, H, S, D)."""
    g = torch.Generator(device="cuda").manual_seed(int.from_bytes(os.urandom(4), "little"))
    shape = (1, s, h * d) if layout == "NHD_FLAT" else (1, h, s, d)
    return [torch.randn(shape, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3)]
