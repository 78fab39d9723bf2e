"""Peer discovery (sageattn3/_peers.py) and the benchmark's peer rows, on CPU with fake peer
modules put into sys.modules (present, absent, raising on import, declining causal). The real
peers run on the GPU machine: `pytest -m gpu tests/test_peers.py` with them on PYTHONPATH."""
from __future__ import annotations

import json
import sys
import types

import pytest

from sageattn3 import _policy, _bench, _check, _peers

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _sdpa_hnd(q, k, v, causal=False):
    kw = {"enable_gqa": True} if q.shape[1] != k.shape[1] else {}
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, **kw)


def fake_sageattention(calls):
    """A stand-in `sageattention`: sageattn(q, k, v, tensor_layout, is_causal) by SDPA, which
    records the layout and shapes it was handed."""
    def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, **kw):
        calls.append((tensor_layout, tuple(q.shape), q.stride(-1), is_causal))
        assert q.stride(-1) == 1
        if tensor_layout == "NHD":
            return _sdpa_hnd(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal).transpose(1, 2)
        return _sdpa_hnd(q, k, v, is_causal)
    mod = types.ModuleType("sageattention")
    mod.sageattn = sageattn
    mod.__version__ = "2.2.0-fake"
    mod.core = types.SimpleNamespace(SM80_ENABLED=False, SM89_ENABLED=False, SM90_ENABLED=True)
    return mod


def fake_comfy_kitchen(calls, available=True):
    def int8_attention(q, k, v, *, scale=None, attn_mask=None):
        calls.append(("HND", tuple(q.shape), q.is_contiguous()))
        return _sdpa_hnd(q, k, v).contiguous()
    mod = types.ModuleType("comfy_kitchen")
    mod.int8_attention = int8_attention
    mod.int8_attention_is_available = lambda device=None: available
    return mod


@pytest.fixture
def no_peers(monkeypatch):
    """Neither peer importable, whatever this machine has installed."""
    for name in ("sageattention", "comfy_kitchen"):
        monkeypatch.setitem(sys.modules, name, None)
    return monkeypatch


def _by_key(peers):
    return {p.key: p for p in peers}


def test_absent_peers_are_unavailable_with_a_reason(no_peers):
    peers = _by_key(_peers.discover(torch, 90))
    assert set(peers) == {"sageattention", "comfy_kitchen"}
    for p in peers.values():
        assert not p.available and "not installed" in p.reason, p.reason
        assert p.facts()["available"] is False and p.facts()["version"] is None


def test_present_peers_are_found_with_versions(no_peers):
    no_peers.setitem(sys.modules, "sageattention", fake_sageattention([]))
    no_peers.setitem(sys.modules, "comfy_kitchen", fake_comfy_kitchen([]))
    peers = _by_key(_peers.discover(torch, 90))
    assert peers["sageattention"].available and peers["sageattention"].version == "2.2.0-fake"
    assert peers["comfy_kitchen"].available
    assert peers["comfy_kitchen"].version  # no metadata, no __version__: says so
    # sm_89 extension missing in this (fake) build: declined with the flag named
    sa = _peers.SageAttention2().probe(torch, 89)
    assert not sa.available and "SM89_ENABLED" in sa.reason
    assert "sm_75" in _peers.SageAttention2().probe(torch, 75).reason


def test_a_peer_that_raises_on_import_is_skipped(no_peers, tmp_path):
    (tmp_path / "comfy_kitchen").mkdir()
    (tmp_path / "comfy_kitchen" / "__init__.py").write_text("raise RuntimeError('CUDA driver too old')\n")
    (tmp_path / "sageattention.py").write_text("import no_such_dependency_xyz\n")
    for name in ("sageattention", "comfy_kitchen"):
        no_peers.delitem(sys.modules, name)
    no_peers.syspath_prepend(str(tmp_path))
    peers = _by_key(_peers.discover(torch, 90))  # must not raise
    ck, sa = peers["comfy_kitchen"], peers["sageattention"]
    assert not ck.available and "RuntimeError: CUDA driver too old" in ck.reason
    # a missing dependency of an installed peer is an import failure, not "not installed"
    assert not sa.available and "no_such_dependency_xyz" in sa.reason and "not installed" not in sa.reason


def test_availability_check_raising_or_false_is_a_reason(no_peers):
    mod = fake_comfy_kitchen([])
    mod.int8_attention_is_available = lambda device=None: 1 / 0
    no_peers.setitem(sys.modules, "comfy_kitchen", mod)
    ck = _peers.ComfyKitchen().probe(torch, 90)
    assert not ck.available and "ZeroDivisionError" in ck.reason
    no_peers.setitem(sys.modules, "comfy_kitchen", fake_comfy_kitchen([], available=False))
    ck = _peers.ComfyKitchen().probe(torch, 90)
    assert not ck.available and "is_available() is False" in ck.reason


def test_supports_declines_with_reasons():
    sa, ck = _peers.SageAttention2(), _peers.ComfyKitchen()
    sh = _bench.parse_shape("1,8,300,128")
    assert sa.supports(sh, "HND", False) == (True, "") and ck.supports(sh, "HND", False) == (True, "")
    ok, why = ck.supports(_bench.parse_shape("1,8,300,128,causal"), "HND", True)
    assert not ok and "causal" in why
    assert sa.supports(_bench.parse_shape("1,8,300,128,causal"), "HND", True)[0]
    assert not sa.supports(_bench.parse_shape("1,8,300,256"), "HND", False)[0]
    assert ck.supports(_bench.parse_shape("1,8,300,256"), "HND", False)[0]
    assert not sa.supports(_bench.parse_shape("1,8,300,128,causal,Sk=400"), "HND", True)[0]


@pytest.mark.parametrize("layout", ["HND", "NHD", "NHD_FLAT"])
def test_calls_take_our_layout_and_return_it(no_peers, layout):
    sa_calls, ck_calls = [], []
    no_peers.setitem(sys.modules, "sageattention", fake_sageattention(sa_calls))
    no_peers.setitem(sys.modules, "comfy_kitchen", fake_comfy_kitchen(ck_calls))
    g = torch.Generator().manual_seed(3)
    q, k, v = _check.make_inputs(torch, g, 2, 4, 2, 37, 53, 32, layout=layout, dtype=torch.float32)
    heads = 4 if layout == "NHD_FLAT" else None
    ref = _check._direct_sdpa(torch, q, k, v, layout, heads)
    for peer in _peers.discover(torch, 90):
        out = peer.call(torch, q, k, v, layout, heads, False)
        assert out.shape == q.shape
        torch.testing.assert_close(out, ref)
    # SageAttention2 reads (B,S,H*D) as an NHD view; comfy-kitchen gets (B,H,S,D) views, no copies
    assert sa_calls[0][0] == ("HND" if layout == "HND" else "NHD")
    assert ck_calls[0][1] == (2, 4, 37, 32) and ck_calls[0][2] == (layout == "HND")
    with pytest.raises(ValueError):
        _peers.ComfyKitchen().probe(torch, 90).call(torch, q, k, v, layout, heads, True)


# ----------------------------------------------------------------------------- bench rows

from bench_fakes import fake_cuda as _fake_cuda  # noqa: E402


def test_bench_times_peers_beside_us(no_peers, tmp_path, capsys):
    """With a fake SageAttention2 present and comfy-kitchen absent: the peer is one more
    backend per row (timings, ratio, memory, rel-L1, cosine vs SDPA), the absent one is
    reported skipped, the JSON records versions, the table shows the peer."""
    if torch.cuda.is_available():
        pytest.skip("a real GPU runs the real thing")
    _fake_cuda(no_peers)
    sa_calls = []
    no_peers.setitem(sys.modules, "sageattention", fake_sageattention(sa_calls))
    rc = _bench.main(["--shape", "1,2,300,64", "--shape", "1,4,200,32,causal,Hkv=2", "--layout", "NHD_FLAT",
                      "--runs", "2", "--warmup", "1", "--rest", "0", "--out", str(tmp_path), "--no-plot"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "peer SageAttention2 2.2.0-fake" in out and "peer comfy-kitchen skipped: not installed" in out
    assert "sa2 ms" in out and "cos/SDPA" in out
    (path,) = tmp_path.glob("*.json")
    res = json.loads(path.read_text())
    peers = {p["key"]: p for p in res["env"]["peers"]}
    assert peers["sageattention"]["version"] == "2.2.0-fake" and peers["sageattention"]["available"]
    assert not peers["comfy_kitchen"]["available"]
    for row in res["rows"]:
        assert row["backends"] == ["sdpa", "auto", *_policy.FAMILIES, "sageattention"]
        assert row["hopper"]["route"].startswith("unavailable")  # the fake device lists only mma
        m = row["sageattention"]
        assert m["error"] is None, m
        assert m["runs"] == 2 and m["ms"] > 0 and m["tops"] > 0 and row["x_sdpa_sageattention"] > 0
        assert m["mem_x_out"] == pytest.approx(4096 / row["out_bytes"])
        assert 0 < m["rel_l1"] < 0.01 and m["cos_sdpa"] > 0.9999
        assert m["route"] == "SageAttention2 2.2.0-fake"
        assert row["mma"]["cos_sdpa"] > 0.9999 and row["sdpa"]["cos_sdpa"] == 1.0
    assert {c[0] for c in sa_calls} == {"NHD"} and {c[3] for c in sa_calls} == {False, True}
    assert "sageattention: geomean" in _bench.summary(res)


def test_bench_row_of_a_peer_that_declines_causal(no_peers, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a real GPU runs the real thing")
    _fake_cuda(no_peers)
    no_peers.setitem(sys.modules, "comfy_kitchen", fake_comfy_kitchen([]))
    rc = _bench.main(["--shape", "1,2,130,64,causal", "--runs", "2", "--warmup", "1", "--rest", "0",
                      "--json", str(tmp_path / "r.json"), "--no-plot"])
    out = capsys.readouterr().out
    assert rc == 0, out  # a peer that can't take a shape is not a failure of the run
    row = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert row["comfy_kitchen"]["route"].startswith("unavailable: comfy-kitchen has no causal")
    assert row["comfy_kitchen"]["ms"] is None and row["x_sdpa_comfy_kitchen"] is None
    assert "comfy_kitchen: unavailable" in out
    rc = _bench.main(["--shape", "1,2,130,64", "--runs", "2", "--warmup", "1", "--rest", "0", "--no-peers",
                      "--json", str(tmp_path / "n.json"), "--no-plot"])
    assert rc == 0
    res = json.loads((tmp_path / "n.json").read_text())
    assert res["env"]["peers"] == [] and res["rows"][0]["backends"] == ["sdpa", "auto", *_policy.FAMILIES]


def test_plot_shows_peers(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"name": "a", "layout": "HND", "backends": ["sdpa", "auto", "mma", "sageattention"],
             "sdpa": {"tops": 100.0}, "auto": {"tops": 120.0}, "mma": {"tops": 90.0},
             "sageattention": {"tops": 140.0}, "x_sdpa_auto": 1.2, "x_sdpa_mma": 0.9, "x_sdpa_sageattention": 1.4}]
    env = {"sageattn3": "0", "card": "X", "torch": "t", "date": "d", "git": {"commit": None},
           "peers": [{"key": "sageattention", "label": "SageAttention2", "version": "2.2.0"}]}
    assert _bench.plot(rows, env, tmp_path / "p.png") is None
    assert (tmp_path / "p.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- real peers (GPU)

@pytest.mark.gpu
def test_real_peers_agree_with_sdpa_on_gpu():
    """With the peers on PYTHONPATH (shared/peers/README.md): each one found answers within its
    quantization error of SDPA in every layout we hand it."""
    found = [p for p in _peers.discover(torch, 10 * torch.cuda.get_device_capability()[0]
                                        + torch.cuda.get_device_capability()[1]) if p.available]
    if not found:
        pytest.skip("no peer installed here")
    g = torch.Generator(device="cuda").manual_seed(11)
    for layout in ("HND", "NHD", "NHD_FLAT"):
        q, k, v = _check.make_inputs(torch, g, 1, 8, 8, 1000, 1000, 128, layout=layout, dtype=torch.bfloat16,
                                     device="cuda")
        heads = 8 if layout == "NHD_FLAT" else None
        ref = _check._direct_sdpa(torch, q, k, v, layout, heads)
        for p in found:
            out = p.call(torch, q, k, v, layout, heads, False)
            assert out.shape == q.shape
            cos = _bench._cosine(torch, out, ref, layout, 8)
            assert cos > 0.999, (p.key, layout, cos)


# ----------------------------------------------------------------------------- ComfyUI override (bench_comfyui_wan)

def _wan_bench():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_comfyui_wan.py"
    if not path.is_file():
        pytest.skip("needs the source tree's benchmarks/")
    spec = importlib.util.spec_from_file_location("bench_comfyui_wan", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_peer_override_follows_comfyui_contract(no_peers):
    """The override bench_comfyui_wan.py puts a peer in with: ComfyUI's (B,S,H*D) and
    skip_reshape (B,H,S,D) calls in, the layout ComfyUI asked for out; a mask or fp32 goes
    back to ComfyUI's func with the arguments untouched, counted by reason."""
    bench = _wan_bench()
    calls = []
    no_peers.setitem(sys.modules, "sageattention", fake_sageattention(calls))
    (peer,) = [p for p in _peers.discover(torch, 90) if p.key == "sageattention"]
    ov = bench.PeerOverride(peer)
    g = torch.Generator().manual_seed(5)
    b, h, s, d = 1, 4, 77, 32
    qh, kh, vh = (torch.randn(b, h, s, d, generator=g).to(torch.bfloat16) for _ in range(3))
    ref = F.scaled_dot_product_attention(qh, kh, vh)
    flat = [x.transpose(1, 2).reshape(b, s, h * d) for x in (qh, kh, vh)]

    def comfy_func(*a, **kw):
        calls.append("comfy")
        return "comfy"
    to = {"transformer_options": {}, "_inside_attn_wrapper": True}
    out = ov(comfy_func, *flat, h, mask=None, **to)
    torch.testing.assert_close(out, ref.transpose(1, 2).reshape(b, s, h * d))
    out = ov(comfy_func, *flat, h, skip_output_reshape=True, **to)
    torch.testing.assert_close(out, ref)
    out = ov(comfy_func, qh, kh, vh, h, skip_reshape=True, **to)
    torch.testing.assert_close(out, ref.transpose(1, 2).reshape(b, s, h * d))
    out = ov(comfy_func, qh, kh, vh, h, skip_reshape=True, skip_output_reshape=True, **to)
    torch.testing.assert_close(out, ref)
    # heads as a keyword, as ComfyUI's WanModel passes it (the H200 run of d54cb94 sent all 80
    # calls per step back to ComfyUI as "unexpected arguments" before this was handled)
    out = ov(comfy_func, *flat, heads=h, **to)
    torch.testing.assert_close(out, ref.transpose(1, 2).reshape(b, s, h * d))
    assert ov.served == 5 and "comfy" not in calls
    assert ov(comfy_func, *flat, h, mask=torch.zeros(s, s), **to) == "comfy"
    assert ov(comfy_func, *(x.float() for x in flat), h, **to) == "comfy"
    assert ov(comfy_func, *flat, h, some_new_flag=True) == "comfy"
    assert sorted(ov.fallback) == ["attention mask", "dtype torch.float32", "unexpected arguments"]
