"""`python -m sageattn3 info | check | bench | comfyui-install`, info() and the plumbing of the
self-check and the benchmark. CPU tests run anywhere; `gpu` tests run check/bench for real."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from sageattn3 import _bench, _check, _info, _policy
from sageattn3._ext import _C

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cuda() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except Exception:
        return False


PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(_info.__file__)))


def run_cli(*args, code=None, timeout=600):
    """Run `python -m sageattn3 ARGS` (or `python -c CODE`) in a subprocess."""
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "sageattn3", *args]
    # Run where the imported package lives (the repo for an editable install, site-packages
    # otherwise), so `-m sageattn3` finds the built extension, not a bare source tree.
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=PKG_PARENT)


# ----------------------------------------------------------------------------- exit codes

def test_info_exits_0_and_mentions_the_build():
    r = run_cli("info")
    assert r.returncode == 0, r.stderr
    assert "build (sageattn3._C):" in r.stdout
    assert "CUDA:" in r.stdout and "compiler:" in r.stdout
    assert "sageattn3 " in r.stdout and "torch:" in r.stdout


def test_info_json_is_the_info_dict():
    r = run_cli("info", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert {"sageattn3", "python", "platform", "numpy", "torch", "build", "devices", "stats"} <= set(d)
    assert isinstance(d["build"]["cuda"], bool)
    assert isinstance(d["build"]["cuda_archs"], list)
    if not d["build"]["cuda"]:
        assert "SAGEATTN3_CUDA_ARCHS" in d["build"]["how_to_get_kernels"]
        assert "CUDA_HOME" in d["build"]["how_to_get_kernels"]


def test_check_exits_0_on_cpu(tmp_path):
    out = tmp_path / "check.json"
    args = ["check", "--seed", "7", "--json", str(out)] + (["--cpu"] if _cuda() else [])
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check: PASS" in r.stdout
    rep = json.loads(out.read_text())
    assert rep["ok"] and rep["seed"] == 7
    sections = {x["section"] for x in rep["results"] if x["status"] == "PASS"}
    assert "reference" in sections
    if _torch_importable():
        assert "sdpa" in sections
    else:  # the README test command runs in venvs without torch too: the section says why
        sdpa = [x for x in rep["results"] if x["section"] == "sdpa"]
        assert sdpa and all(x["status"] == "SKIP" and "torch" in x["note"] for x in sdpa), sdpa
    modes = {x["mode"] for x in rep["results"] if x["section"] == "reference"}
    assert modes == {"exact", "int8-fp16", "int8-fp8", "int8-fp8-f16acc", "nvfp4"}
    # the GPU section says why it did not run
    skipped = [x for x in rep["results"] if x["status"] == "SKIP" and x["section"] == "kernel"]
    assert skipped and skipped[0]["note"]


@pytest.mark.skipif(_cuda(), reason="on a CUDA machine bench really runs (see the gpu tests)")
def test_bench_exits_0_without_gpu():
    r = run_cli("bench")
    assert r.returncode == 0, r.stderr
    assert "nothing was timed" in r.stdout
    for name in ("s1k", "flux", "16k-causal", "wan-832x1216", "hd64", "batch"):
        assert name in r.stdout
    assert "NHD_FLAT" in r.stdout  # Wan shapes default to ComfyUI's (B,S,H*D)


@pytest.mark.skipif(_cuda(), reason="on a CUDA machine this would run the full benchmark")
def test_no_subcommand_runs_check_then_bench_on_cpu():
    r = run_cli()
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert out.index("self-check") < out.index("benchmark") < out.index("== summary ==")
    assert "check: PASS" in out and "bench: skipped" in out


def test_bad_subcommand_exits_2():
    r = run_cli("bogus")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "usage:" in r.stderr and "invalid choice" in r.stderr


@pytest.mark.parametrize("args", [
    ["bogus"],
    ["info", "--nope"],
    ["check", "--seed", "x"],
    ["check", "extra"],
    ["bench", "--shape", "1,2,3"],
    ["bench", "--shape", "1,4,128,64,Hkv=3"],
    ["bench", "--only", "no-such-shape"],
    ["bench", "--layout", "BHSD"],
    ["bench", "--runs", "0"],
    ["bench", "--rest", "-1"],
    ["comfyui-install"],
])
def test_usage_errors_exit_2(args, capsys):
    from sageattn3 import __main__ as cli

    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2, args
    assert "usage:" in capsys.readouterr().err


def test_import_and_info_without_torch():
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
        "import sageattn3\n"
        "from sageattn3._info import format_info\n"
        "d = sageattn3.info()\n"
        "assert d['torch']['version'] is None, d['torch']\n"
        "assert 'build' in d and 'cuda' in d['build']\n"
        "text = format_info(d)\n"
        "assert 'not importable' in text, text\n"
        "json.dumps(d)\n"
        "from sageattn3.__main__ import main\n"
        "assert main(['info']) == 0\n"
        "rc = main(['check', '--seed', '3'])\n"
        "assert rc == 0, rc\n"
        "print('OK')\n"
    )
    r = run_cli(code=code)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout
    assert "torch not importable" in r.stdout  # the check says why sections were skipped


# ----------------------------------------------------------------------------- in-process

def test_comfyui_install_is_forwarded(monkeypatch):
    from sageattn3 import __main__ as cli

    seen = {}

    def fake_main(argv):
        seen["argv"] = list(argv)
        return 0

    fake = types.ModuleType("sageattn3.comfyui.install")
    fake.main = fake_main
    monkeypatch.setitem(sys.modules, "sageattn3.comfyui.install", fake)
    try:
        import sageattn3.comfyui as pkg
        monkeypatch.setattr(pkg, "install", fake, raising=False)
    except ImportError:
        pass
    assert cli.main(["comfyui-install", "/some/ComfyUI", "--uninstall"]) == 0
    assert seen["argv"] == ["/some/ComfyUI", "--uninstall"]
    fake.main = lambda argv: 1
    assert cli.main(["comfyui-install", "/some/ComfyUI"]) == 1


def test_info_and_format_info_in_process():
    d = _info.info()
    json.dumps(d)
    text = _info.format_info(d)
    assert "build (sageattn3._C):" in text
    assert "calls so far" in text
    if not d["devices"]:
        assert d["cpu_routes"] and "devices: none" in text


def test_info_routes_for_a_device_with_kernels(monkeypatch):
    """The route table comes from the policy the dispatcher walks: on sm_90 the default call runs
    the hopper kernel (FP8 P.V) from 8192^2 scores per head, SDPA below that and for what hopper
    can't serve, kernel='mma' forces the mma kernel; a build without the hopper family says so
    and routes sm_90 to SDPA; on sm_89 the default call runs the mma kernel with FP8 P.V;
    everything else goes to SDPA with a reason."""
    fake_c = types.SimpleNamespace(
        build_info=lambda: {"cuda": True, "why_no_cuda": None, "cuda_archs": ["sm_90a"], "cuda_version": "13.0",
                            "compiler": "gcc", "kernels": ["hopper", "mma"]},
        device_info=lambda i: {"name": "NVIDIA H100 80GB HBM3", "sm_arch": 90, "sm_count": 132,
                               "smem_optin": 232448, "families": ["hopper", "mma"]})
    monkeypatch.setattr(_info, "_C", fake_c)
    monkeypatch.setattr(_info, "build_info", fake_c.build_info)
    monkeypatch.setattr(_info, "_device_count", lambda torch, build: (1, None))
    d = _info.info()
    dev = d["devices"][0]
    assert dev["name"].startswith("NVIDIA H100") and dev["sm_arch"] == 90 and dev["sm_count"] == 132
    routes = dev["routes"]
    torch_ok = d["torch"]["version"] is not None
    if torch_ok:
        main = routes[0]
        # what the dispatcher does with a default call on sm_90
        assert _policy.plan(90, "auto", "auto") == (("hopper", "fp8"), "sdpa")
        assert main["path"] == "hopper kernel (pv=fp8)" and "kernel='auto'" in main["case"]
        assert "16,777,216" in main["case"] and "policy for sm_90" in main["why"]
        assert "Sk >= 1,536" in main["case"]  # short-context cross-attention goes to SDPA
        paths = {r["case"]: r["path"] for r in routes}
        assert paths["Sk < 1,536 (cross-attention on a short context, e.g. 512 text tokens)"] == "SDPA"
        assert paths["default call that hopper can't serve"] == "SDPA"
        assert paths["kernel='mma' (forced, any length)"] == "mma kernel (pv=fp16)"
        assert paths["kernel='hopper' (forced, any length)"] == "hopper kernel (pv=fp8)"
        assert any("attn_mask" in c and p.startswith("SDPA") for c, p in paths.items())
        assert any("requires_grad" in c and p.startswith("SDPA") for c, p in paths.items())
        assert any("CPU" in c and p.startswith("SDPA") for c, p in paths.items())
        assert any("pv='fp8'" in c and "fp8" in p for c, p in paths.items())
    text = _info.format_info(d)
    assert "device 0: NVIDIA H100 80GB HBM3  sm_90, 132 SMs" in text and "auto order: hopper -> sdpa" in text

    # A build without the hopper family (e.g. SAGEATTN3_CUDA_ARCHS=90): sm_90 calls go to SDPA.
    fake_c.device_info = lambda i: {"name": "NVIDIA H100 80GB HBM3", "sm_arch": 90, "sm_count": 132,
                                    "smem_optin": 232448, "families": ["mma"]}
    d = _info.info()
    if torch_ok:
        paths = {r["case"]: (r["path"], r["why"]) for r in d["devices"][0]["routes"]}
        assert paths["default call, family hopper"][0] == "skipped"
        assert paths["default call that hopper can't serve"][0] == "SDPA"
        assert paths["kernel='hopper'"][0] == "SDPA"

    fake_c.device_info = lambda i: {"name": "NVIDIA GeForce RTX 4090", "sm_arch": 89, "sm_count": 128,
                                    "smem_optin": 101376, "families": ["mma"]}
    d = _info.info()
    if torch_ok:
        main = d["devices"][0]["routes"][0]
        assert _policy.plan(89, "auto", "auto") == (("mma", "fp8_f16acc"), ("mma", "fp8"))
        assert main["path"] == "mma kernel (pv=fp8_f16acc)"
        assert "NHD_FLAT" in main["case"] and "32 <= D <= 256" in main["case"] and "1,048,576" in main["case"]

    # An arch without a compiled kernel: everything to SDPA, with the rebuild hint.
    fake_c.device_info = lambda i: {"name": "Old GPU", "sm_arch": 75, "sm_count": 40, "families": []}
    d = _info.info()
    if torch_ok:
        (only,) = d["devices"][0]["routes"]
        assert only["path"].startswith("SDPA") and "SAGEATTN3_CUDA_ARCHS" in only["why"]


def test_bounds_are_documented_and_monotone():
    for mode in _check.REF_MODES:
        assert _check.bound(mode, 128) == pytest.approx(_check.BOUNDS[mode], rel=0.02)
        assert _check.bound(mode, 128, sm_scale=2 / 128 ** 0.5) >= _check.bound(mode, 128)
    assert _check.bound("int8-fp16", 64) < _check.bound("int8-fp8", 64) < _check.bound("nvfp4", 64)


def test_attention_f64_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 4, 5, 8)), rng.standard_normal((1, 2, 7, 8)), rng.standard_normal((1, 2, 7, 8))
    out = _check.attention_f64(q, k, v, is_causal=True, sm_scale=0.3)
    for h in range(4):
        for i in range(5):
            s = np.array([q[0, h, i] @ k[0, h // 2, j] * 0.3 if j <= i else -np.inf for j in range(7)])
            p = np.exp(s - s.max())
            np.testing.assert_allclose(out[0, h, i], (p / p.sum()) @ v[0, h // 2], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- check plumbing (CPU)

def _standin_kernel(torch, bug=None):
    """A CPU stand-in for the GPU kernel: the C reference in the same mode, rounded to the input
    dtype, written into the (NaN-poisoned) output. `bug` injects the faults the check must catch."""
    def kernel(q, k, v, out, layout, heads, causal, scale, pv):
        hq = heads if layout == "NHD_FLAT" else (q.shape[1] if layout == "HND" else q.shape[2])
        d = q.shape[-1] // hq if layout == "NHD_FLAT" else q.shape[-1]
        hkv = k.shape[-1] // d if layout == "NHD_FLAT" else (k.shape[1] if layout == "HND" else k.shape[2])
        qh, kh, vh = _check.to_hnd(q, layout, hq), _check.to_hnd(k, layout, hkv), _check.to_hnd(v, layout, hkv)
        o = _C.reference_attention(*(x.float().numpy() for x in (qh, kh, vh)), mode=_check.PV_MODE[pv],
                                   is_causal=causal, sm_scale=scale, **_check.FAMILY_NUMERICS["mma"]["ref"],
                                   pv_dtype="bf16" if q.dtype == torch.bfloat16 else "f16")
        o = torch.from_numpy(o)
        oh = _check.to_hnd(out, layout, hq)
        if bug == "tail":
            oh[:, :, :-3].copy_(o[:, :, :-3])
            return
        if bug == "scale":
            o = o * 1.05
        if bug == "inplace":
            k.add_(1)
        oh.copy_(o)
    return kernel


@pytest.mark.parametrize("bug,expect", [(None, "PASS"), ("tail", "non-finite"), ("scale", "above bound"),
                                        ("inplace", "inputs were modified")])
def test_check_kernel_section_catches_faults(bug, expect):
    torch = pytest.importorskip("torch")
    if _C is None:
        pytest.skip("no extension")
    cases = [_check.GpuCase("odd 77, HND", 1, 2, 2, 77, 77, 64, "HND", ref=True),
             _check.GpuCase("GQA NHD_FLAT causal", 1, 4, 2, 100, 130, 32, "NHD_FLAT", causal=True),
             _check.GpuCase("packed", 1, 2, 2, 70, 70, 64, packed=True)]
    results = []
    _check.check_kernel(torch, 5, results.append, cases, device="cpu", kernel_fn=_standin_kernel(torch, bug),
                        arch=90)
    assert len(results) == len(_check.FAMILY_NUMERICS["mma"]["pvs"]) * len(cases)  # fp16, fp8, fp8_f16acc
    if bug is None:
        assert all(r.status == "PASS" for r in results), [(r.case, r.mode, r.metric, r.note) for r in results]
        with_ref = [r for r in results if r.vs_ref is not None]
        assert with_ref and all(r.vs_ref < r.vs_ref_bound for r in with_ref)
    else:
        assert all(r.status == "FAIL" and expect in r.note for r in results), [(r.case, r.note) for r in results]
    # sm_80: fp8 P.V is skipped with a reason, not failed
    results = []
    _check.check_kernel(torch, 5, results.append, cases[:1], device="cpu", kernel_fn=_standin_kernel(torch),
                        arch=80)
    assert [r.status for r in results] == ["PASS", "SKIP", "SKIP"] and all("sm_89" in r.note for r in results[1:])


# ----------------------------------------------------------------------------- bench plumbing (CPU)

def test_parse_shape():
    s = _bench.parse_shape("2,8,1000,64,causal,Sk=300,Hkv=2")
    assert (s.b, s.h, s.s, s.d, s.causal, s.seq_k, s.heads_kv) == (2, 8, 1000, 64, True, 300, 2)
    assert s.flops() == 4 * 2 * 8 * 1000 * 300 * 64 / 2
    for bad in ("1,2,3", "a,b,c,d", "1,2,3,4,foo", "1,0,3,4", "1,4,3,4,Hkv=3", "1,2,3,4,Sk=0"):
        with pytest.raises(ValueError):
            _bench.parse_shape(bad)
    names = [s.name for s in _bench.DEFAULT_SHAPES]
    assert names == ["s1k", "flux", "16k", "16k-causal", "wan-832x480", "wan-832x1216", "hd64", "batch"]
    wan = _bench.DEFAULT_SHAPES[5]
    assert (wan.s, wan.h, wan.d) == (82992, 40, 128) and wan.min_runs >= 11
    assert _bench.default_layout(wan) == "NHD_FLAT" and _bench.default_layout(_bench.DEFAULT_SHAPES[0]) == "HND"
    assert _bench.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


@pytest.mark.skipif(_cuda(), reason="a real GPU runs the real thing (gpu tests)")
def test_bench_plumbing_with_a_fake_cuda(monkeypatch, tmp_path, capsys):
    """Runs the whole benchmark driver on CPU tensors with torch.cuda's timer/memory calls
    stood in, and the kernel replaced by SDPA: table, JSON, routes, ratios, accuracy rows."""
    torch = pytest.importorskip("torch")
    from bench_fakes import fake_cuda
    fake_cuda(monkeypatch)

    rc = _bench.main(["--shape", "1,2,300,64", "--shape", "1,4,200,32,causal,Sk=333,Hkv=2", "--layout", "NHD_FLAT",
                      "--runs", "2", "--warmup", "1", "--rest", "0", "--out", str(tmp_path), "--no-plot"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "xSDPA" in out and "custom-1x2x300x64" in out
    files = list(tmp_path.glob("*_fake-gpu-80gb.json"))
    assert len(files) == 1
    res = json.loads(files[0].read_text())
    assert res["env"]["card"] == "Fake GPU 80GB" and "git" in res["env"] and "torch" in res["env"]
    assert len(res["rows"]) == 2
    for row in res["rows"]:
        assert row["layout"] == "NHD_FLAT"
        for key in ("sdpa", "auto", "mma"):
            m = row[key]
            assert m["error"] is None, m
            assert m["runs"] == 2 and len(m["times_ms"]) == 2 and m["ms"] > 0 and m["tops"] > 0
            assert m["host_us"] > 0
            assert m["mem_x_out"] == pytest.approx(4096 / row["out_bytes"])
            assert 0 < m["rel_l1"] < 0.01  # SDPA stand-in, bf16
        assert row["auto"]["route"].startswith("SDPA: ")  # CPU tensors
        assert row["mma"]["route"].startswith("direct run_family('mma')")
        assert row["x_sdpa_auto"] > 0 and row["x_sdpa_mma"] > 0
        assert row["accuracy"]["rows"] == min(256, row["sq"])
    assert "geomean" in _bench.summary(res)


def test_time_steady_queues_timed_calls_behind_a_gpu_hold(monkeypatch):
    """The GPU rests first; the timed calls are queued while a spin kernel holds the GPU (so
    events time GPU work, not launch gaps), the hold covers the queuing, and the host time per
    call comes back."""
    log = []

    from bench_fakes import FakeEvent

    class Ev(FakeEvent):
        def record(self):
            log.append("event")
            super().record()

    cuda = types.SimpleNamespace(Event=Ev, synchronize=lambda *a: log.append("sync"),
                                 _sleep=lambda cycles: log.append(("hold", cycles)))
    monkeypatch.setattr(_bench, "DEVICE", "cuda")
    t0 = time.perf_counter()
    times, host_us = _bench.time_steady(types.SimpleNamespace(cuda=cuda), lambda: time.sleep(1e-4), 2, 5,
                                        warmup_s=0.01, rest_s=0.2)
    assert time.perf_counter() - t0 >= 0.2  # the rest before the warm-up
    holds = [x for x in log if isinstance(x, tuple)]
    assert len(holds) == 1 and log.index(holds[0]) < log.index("event")
    assert holds[0][1] >= 2e9 * 3 * 5 * 1e-4  # >= 3x the queuing time of 5 calls of >= 0.1 ms
    assert len(times) == 5 and all(t > 0 for t in times) and host_us >= 100


def test_plot_or_reason(tmp_path):
    rows = [{"name": "a", "layout": "HND", "sdpa": {"tops": 100.0}, "auto": {"tops": 120.0},
             "mma": {"tops": 90.0}, "x_sdpa_auto": 1.2, "x_sdpa_mma": 0.9}]
    env = {"sageattn3": "0", "card": "X", "torch": "t", "date": "d", "git": {"commit": None}}
    why = _bench.plot(rows, env, tmp_path / "p.png")
    if why is None:
        assert (tmp_path / "p.png").stat().st_size > 1000
    else:
        assert "matplotlib" in why


# ----------------------------------------------------------------------------- GPU

def _kernels_here() -> bool:
    return _C is not None and bool(_C.build_info().get("cuda"))


@pytest.mark.gpu
def test_check_on_gpu(tmp_path):
    if not _kernels_here():
        pytest.skip("this build has no CUDA kernels: " + str(_C.build_info().get("why_no_cuda") if _C else ""))
    out = tmp_path / "check.json"
    t0 = time.perf_counter()
    r = run_cli("check", "--json", str(out))
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    rep = json.loads(out.read_text())
    kernel = [x for x in rep["results"] if x["section"] == "kernel"]
    assert any(x["status"] == "PASS" for x in kernel), kernel
    assert any(x["status"] == "PASS" and x["section"] == "sdpa" and "cuda" in x["case"] for x in rep["results"])
    assert elapsed < 90, f"check took {elapsed:.0f} s (budget: 60 s on an H100)"


@pytest.mark.gpu
def test_bench_one_shape_on_gpu(tmp_path):
    r = run_cli("bench", "--only", "s1k", "--shape", "1,2,1000,64,causal", "--runs", "3", "--out", str(tmp_path),
                "--no-plot")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "s1k" in r.stdout and "xSDPA" in r.stdout
    (path,) = tmp_path.glob("*.json")
    res = json.loads(path.read_text())
    assert [row["name"] for row in res["rows"]] == ["s1k", "custom-1x2x1000x64-causal"]
    for row in res["rows"]:
        assert row["sdpa"]["tops"] > 0 and row["sdpa"]["rel_l1"] < 0.01
        if _kernels_here():
            assert row["mma"]["tops"] and row["mma"]["rel_l1"] < 0.05, row["mma"]


# ----------------------------------------------------------------------------- API fallbacks (CPU)

def test_sageattn_honours_attn_mask_and_returns_lse():
    torch = pytest.importorskip("torch")
    import sageattn3
    q, k, v = (torch.randn(1, 2, 33, 64) for _ in range(3))
    mask = torch.rand(33, 33) > 0.3
    mask[:, 0] = True
    F = torch.nn.functional
    assert torch.equal(sageattn3.sageattn(q, k, v, attn_mask=mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    out, lse = sageattn3.sageattn(q, k, v, return_lse=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    ref = torch.logsumexp((q.double() @ k.double().transpose(-1, -2)) / 8.0, dim=-1)
    assert lse.dtype == torch.float32 and lse.shape == (1, 2, 33) and lse.is_contiguous()
    torch.testing.assert_close(lse.double(), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="attn_mask"):
        sageattn3.sageattn(q, k, v, return_lse=True, attn_mask=mask)


@pytest.mark.parametrize("layout", ["HND", "NHD", "NHD_FLAT"])
def test_fallback_with_v_head_dim_different_and_gqa(layout):
    torch = pytest.importorskip("torch")
    import sageattn3
    from sageattn3 import _dispatch
    b, hq, hkv, s, d, dv = 1, 4, 2, 40, 64, 32
    q, k = torch.randn(b, hq, s, d), torch.randn(b, hkv, s, d)
    v = torch.randn(b, hkv, s, dv)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    if layout == "HND":
        out = sageattn3.sageattn(q, k, v)
        got = out
    else:
        qn, kn, vn = (t.transpose(1, 2).contiguous() for t in (q, k, v))
        if layout == "NHD_FLAT":
            qn, kn, vn = (t.flatten(2) for t in (qn, kn, vn))
        out = sageattn3.sageattn(qn, kn, vn, tensor_layout=layout, heads=hq)
        got = out.reshape(b, s, hq, dv).transpose(1, 2)
        assert tuple(out.shape) == _dispatch.out_shape(qn, kn, vn, layout, hq)
    assert torch.allclose(got, ref, atol=1e-6)


def test_nhd_flat_bad_heads_is_a_value_error():
    torch = pytest.importorskip("torch")
    import sageattn3
    q = torch.randn(1, 10, 96)
    with pytest.raises(ValueError, match=r"^q: last dim 96 is not heads \(7\) \* head dim"):
        sageattn3.sageattn(q, q, q, tensor_layout="NHD_FLAT", heads=7)


def test_nhd_flat_k_not_multiple_of_head_dim_is_a_value_error():
    torch = pytest.importorskip("torch")
    import sageattn3
    q, k = torch.randn(1, 10, 128), torch.randn(1, 10, 48)  # heads=2 -> D=64; 48 isn't a multiple
    with pytest.raises(ValueError, match="multiple of the head dim 64"):
        sageattn3.sageattn(q, k, k, tensor_layout="NHD_FLAT", heads=2)
