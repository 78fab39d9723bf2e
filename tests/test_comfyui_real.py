"""The node inside a real ComfyUI (source checkout; skipped unless COMFYUI_PATH points to one).

Getting a checkout (into a folder of this repo that git ignores; it must never be committed):

    echo '/.comfyui/' >> .git/info/exclude
    git clone --depth 1 <ComfyUI repository: comfyanonymous/ComfyUI on GitHub, or a recent
                         mirror such as contentis/ComfyUI> .comfyui
    # or, from a bare mirror:  mkdir .comfyui && git --git-dir=MIRROR archive HEAD | tar -x -C .comfyui
    python -m venv --system-site-packages .venv-comfy      # keeps this Python's torch
    .venv-comfy/bin/pip install einops psutil pillow pyyaml safetensors tqdm scipy torchsde \
        transformers tokenizers sentencepiece av torchvision    # torchvision matching your torch
    COMFYUI_PATH=$PWD/.comfyui .venv-comfy/bin/python -m pytest tests/test_comfyui_real.py -v

What each test needs (missing modules make it skip, naming them):
- WanModel runs: torch, einops, psutil, Pillow, pyyaml, safetensors (comfy.ldm.wan.model,
  comfy.model_patcher). The GPU test additionally a CUDA GPU and a CUDA build of sageattn3.
- Sampling runs: + scipy, torchsde, tqdm (comfy.samplers).
- Node definitions and workflow validation: ComfyUI's `nodes` module and its extras
  (+ torchvision, transformers, tokenizers, sentencepiece, av, ...).
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import logging
import os
import uuid
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from sageattn3 import _dispatch  # noqa: E402
from sageattn3.comfyui import install  # noqa: E402
from sageattn3.comfyui.node import apply_switch  # noqa: E402
from sageattn3.comfyui.override import R_FIRST_STEPS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
EXAMPLE = REPO / "examples" / "wan22_i2v_two_experts_sage3.json"

pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH not set (no ComfyUI checkout)")


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def _need(*modules):
    missing = [m for m in modules if _missing(m)]
    if missing:
        pytest.skip(f"ComfyUI dependencies missing: {', '.join(missing)}")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_comfyui_wan",
                                                  REPO / "benchmarks" / "bench_comfyui_wan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def comfy(bench):
    _need("einops", "psutil", "PIL", "yaml", "safetensors")
    path = Path(COMFYUI_PATH)
    if not (path / "comfy" / "ldm" / "wan" / "model.py").is_file():
        pytest.skip(f"COMFYUI_PATH={COMFYUI_PATH} holds no ComfyUI source")
    try:
        return bench.import_comfy(path)
    except ImportError as exc:
        pytest.skip(f"ComfyUI could not be imported: {exc}")


@pytest.fixture(scope="module")
def comfy_sampling(comfy):
    _need("scipy", "torchsde", "tqdm")
    try:
        import comfy.sample
        import comfy.supported_models
    except ImportError as exc:
        pytest.skip(f"ComfyUI sampling could not be imported: {exc}")
    return comfy


@pytest.fixture(scope="module")
def comfy_nodes(comfy, tmp_path_factory):
    """ComfyUI's node registry with its extras, and our node loaded through ComfyUI's own
    custom-node loader from a folder written by the install command."""
    _need("torchvision", "transformers", "av", "tqdm", "torchsde", "scipy")
    try:
        import nodes
        import execution
    except ImportError as exc:
        pytest.skip(f"ComfyUI's nodes could not be imported: {exc}")
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    root = tmp_path_factory.mktemp("comfy_root")
    (root / "custom_nodes").mkdir()
    assert install.main([str(root)]) == 0
    loaded = asyncio.run(nodes.load_custom_node(str(root / "custom_nodes" / install.FOLDER_NAME)))
    assert loaded, "ComfyUI failed to load the custom-node folder written by comfyui-install"
    return nodes, execution


# --------------------------------------------------------------------------- node definitions
def test_node_loads_through_comfyui(comfy_nodes):
    nodes, _ = comfy_nodes
    cls = nodes.NODE_CLASS_MAPPINGS["Sage3AttentionOnlySwitch"]
    it = cls.INPUT_TYPES()
    assert list(it["required"]) == ["model", "enable", "print_backend"]
    assert it["required"]["enable"][1]["default"] is True
    assert it["required"]["print_backend"][1]["default"] is True
    assert "kernel" in it["optional"]
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["Sage3AttentionOnlySwitch"]
    try:
        from comfy_api.latest import io
    except ImportError:
        io = None
    if io is not None:  # this ComfyUI has the extension API: the node came through it
        assert issubclass(cls, io.ComfyNode)
        assert cls.GET_SCHEMA().category == "attention/Sage3"
    else:
        assert cls.CATEGORY == "attention/Sage3"


def _execute_node(execution, cls, node_id, inputs):
    """Run one node the way ComfyUI's executor does (input gathering, hidden inputs, V1/V3 call)."""
    widgets = {k: v for k, v in inputs.items() if k != "model"}
    got = execution.get_input_data(widgets, cls, node_id)
    data, hidden = got[0], (got[2] if len(got) > 2 else None)
    data["model"] = [inputs["model"]]
    kwargs = {}
    if "hidden_inputs" in inspect.signature(execution.get_output_data).parameters:
        kwargs["hidden_inputs"] = hidden
    out = execution.get_output_data("test-prompt", node_id, cls, data, **kwargs)
    if inspect.isawaitable(out):
        out = asyncio.run(out)
    return out[0][0][0]


def test_node_executes_through_comfyui(comfy_nodes, bench, comfy):
    nodes, execution = comfy_nodes
    import comfy.model_patcher
    cls = nodes.NODE_CLASS_MAPPINGS["Sage3AttentionOnlySwitch"]
    _, model, _ = _tiny(bench, comfy)
    mp = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                         offload_device=torch.device("cpu"))
    # an old workflow's node: only the three original inputs
    out = _execute_node(execution, cls, "117", {"model": mp, "enable": True, "print_backend": True})
    ov = out.model_options["transformer_options"]["optimized_attention_override"]
    assert out is not mp and "node 117" in ov.label and ov.kernel == "auto"
    assert "optimized_attention_override" not in mp.model_options["transformer_options"]
    out = _execute_node(execution, cls, "118", {"model": mp, "enable": True, "print_backend": False,
                                                "kernel": "sdpa", "full_precision_first_steps": 2})
    ov = out.model_options["transformer_options"]["optimized_attention_override"]
    assert ov.kernel == "sdpa" and ov.schedule.first_steps == 2 and not ov.print_backend
    assert _execute_node(execution, cls, "119", {"model": mp, "enable": False, "print_backend": True}) is mp


def _widget_inputs(class_def):
    """(name, spec) of the inputs that are widgets, in the order the frontend lays them out."""
    it = class_def.INPUT_TYPES()
    out = []
    for sect in ("required", "optional"):
        for name, spec in it.get(sect, {}).items():
            kind = spec[0]
            if isinstance(kind, (list, tuple)) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                out.append((name, spec[1] if len(spec) > 1 else {}))
    return out


def ui_to_api(workflow: dict, registry: dict) -> dict:
    """A UI workflow (what ComfyUI's frontend saves) to the API prompt the server executes:
    links become [node_id, slot], widgets_values are assigned to widget inputs in order
    (seed-like INTs carry an extra 'control after generate' value, image uploads an extra
    'upload' value)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        assert node.get("mode", 0) == 0, f"node {node['id']} is muted/bypassed"
        cls = registry[node["type"]]
        inputs = {}
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        values = list(node.get("widgets_values") or [])
        i = 0
        for name, opts in _widget_inputs(cls):
            if i >= len(values):
                break
            if name not in inputs:
                inputs[name] = values[i]
            i += 1
            if opts.get("control_after_generate") or name in ("seed", "noise_seed"):
                i += 1
            if opts.get("image_upload"):
                i += 1
        assert i == len(values), f"node {node['id']} ({node['type']}): {len(values)} widget values, {i} used"
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def test_example_workflow_validates(comfy_nodes, tmp_path):
    nodes, execution = comfy_nodes
    import folder_paths
    wf = json.loads(EXAMPLE.read_text())
    # placeholder model files named as in the workflow, so loader choices validate
    wanted = {"UNETLoader": "diffusion_models", "CLIPLoader": "text_encoders", "VAELoader": "vae"}
    for node in wf["nodes"]:
        if node["type"] in wanted:
            folder = tmp_path / "models" / wanted[node["type"]]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / node["widgets_values"][0]).write_bytes(b"")
            folder_paths.add_model_folder_path(wanted[node["type"]], str(folder), is_default=True)
    (tmp_path / "input").mkdir()
    import PIL.Image
    PIL.Image.new("RGB", (64, 64)).save(tmp_path / "input" / "example.png")
    folder_paths.set_input_directory(str(tmp_path / "input"))

    prompt = ui_to_api(wf, nodes.NODE_CLASS_MAPPINGS)
    switches = [nid for nid, n in prompt.items() if n["class_type"] == "Sage3AttentionOnlySwitch"]
    samplers = [n for n in prompt.values() if n["class_type"] == "KSamplerAdvanced"]
    assert len(switches) == 2 and len(samplers) == 2
    assert sorted(s["inputs"]["model"][0] for s in samplers) == sorted(switches)  # one switch per expert

    fn = execution.validate_prompt
    params = inspect.signature(fn).parameters
    result = fn(str(uuid.uuid4()), prompt, None) if len(params) >= 3 else fn(prompt)
    if inspect.isawaitable(result):
        result = asyncio.run(result)
    valid, error, outputs, node_errors = result[:4]
    assert valid, json.dumps({"error": error, "node_errors": node_errors}, indent=1, default=str)
    assert outputs


# --------------------------------------------------------------------------- WanModel on CPU
def _tiny(bench, comfy, seed=0):
    cfg = dict(bench.TINY_CPU)
    model = bench.build_wan(comfy, cfg, torch.device("cpu"), torch.float32, seed=seed)
    inputs = bench.make_inputs(cfg, 9, 64, 64, torch.device("cpu"), torch.float32)
    return cfg, model, inputs


def test_wan_cpu_node_equals_comfyui(bench, comfy):
    """CPU: our kernels can't serve, so every call goes to ComfyUI's attention: outputs equal."""
    sdpa_before = torch.nn.functional.scaled_dot_product_attention
    cfg, model, inputs = _tiny(bench, comfy)
    ref = bench.forward(model, inputs, {})
    to = bench.patched_options(comfy, model, torch.device("cpu"), print_backend=False)
    out = bench.forward(model, inputs, to)
    assert torch.isfinite(ref).all()
    assert torch.equal(out, ref)
    st = to["optimized_attention_override"].stats()
    assert st["served"] == 0 and sum(st["fallback"].values()) == 2 * cfg["num_layers"]
    assert torch.nn.functional.scaled_dot_product_attention is sdpa_before


def test_wan_cpu_served_path_matches(bench, comfy, monkeypatch):
    """Same model with a stand-in kernel (SDPA in the handed layout): the override's layouts
    and heads are right for ComfyUI's real WanModel (self- and cross-attention)."""
    seen = []

    def fake(q, k, v, *, layout="HND", heads=None, kernel="auto", pv="auto", **kw):
        seen.append((layout, heads, tuple(q.shape), tuple(k.shape)))
        return _dispatch.sdpa(q, k, v, layout=layout, heads=heads), None

    monkeypatch.setattr(_dispatch, "try_attention", fake)
    cfg, model, inputs = _tiny(bench, comfy)
    ref = bench.forward(model, inputs, {})
    to = bench.patched_options(comfy, model, torch.device("cpu"), print_backend=False)
    out = bench.forward(model, inputs, to)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert len(seen) == 2 * cfg["num_layers"]
    assert all(s[0] == "NHD_FLAT" and s[1] == cfg["num_heads"] for s in seen)


def test_bench_script_smoke(bench, comfy, tmp_path):
    """benchmarks/bench_comfyui_wan.py end to end on a toy config on CPU (before GPU time is spent)."""
    out = tmp_path / "r.json"
    assert bench.main(["--tiny", "--device", "cpu", "--warmup", "0", "--iters", "1",
                       "--sweep", "0,0", "1,1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["config"] == "tiny" and r["latent"]["tokens"] == 3 * 4 * 4
    assert r["cosine_vs_sdpa"] > 0.9999 and len(r["block_schedule_sweep"]) == 2
    assert r["node"]["calls_per_step"]["served"] + sum(r["node"]["calls_per_step"]["fallback"].values()) \
        == 2 * bench.TINY_CPU["num_layers"]


# --------------------------------------------------------------------------- real sampling runs
def _wan21(comfy, bench, seed=0):
    import comfy.model_patcher
    import comfy.supported_models
    cfg = {k: v for k, v in bench.TINY_CPU.items() if k != "window_size"}
    cfg.update(in_dim=16, image_model="wan2.1")
    mc = comfy.supported_models.WAN21_T2V(cfg)
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model({}, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.diffusion_model.named_parameters():
            p.normal_(0.0, 0.02 if p.ndim < 2 else p[0].numel() ** -0.5, generator=g)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                            offload_device=torch.device("cpu"))


def test_two_experts_sampling_runs(bench, comfy_sampling, monkeypatch, caplog):
    """Wan 2.2 style: two models, two KSamplerAdvanced-like runs (steps 0-2, 2-4), one switch
    each with different settings. Each run logs one line for its model; the step schedule is
    derived from ComfyUI's real sigmas; the plain models are untouched."""
    import comfy.sample
    served = []

    def fake(q, k, v, *, layout="HND", heads=None, kernel="auto", pv="auto", **kw):
        served.append(layout)
        return _dispatch.sdpa(q, k, v, layout=layout, heads=heads), None

    monkeypatch.setattr(_dispatch, "try_attention", fake)
    high, low = _wan21(comfy_sampling, bench, 0), _wan21(comfy_sampling, bench, 1)
    high_s = apply_switch(high, full_precision_first_steps=1, node_id="11")
    low_s = apply_switch(low, kernel="sdpa", node_id="12")
    assert "optimized_attention_override" not in high.model_options["transformer_options"]

    g = torch.Generator().manual_seed(3)
    lat = torch.zeros(1, 16, 3, 8, 8)
    noise = torch.randn(lat.shape, generator=g)
    ctx = torch.randn(1, 8, bench.TINY_CPU["text_dim"], generator=g)
    pos, neg = [[ctx, {}]], [[ctx * 0.5, {}]]

    def two_experts(m_high, m_low):
        x = comfy.sample.sample(m_high, noise, 4, 2.0, "euler", "simple", pos, neg, lat, start_step=0,
                                last_step=2, force_full_denoise=False, seed=0, disable_pbar=True)
        return comfy.sample.sample(m_low, noise, 4, 2.0, "euler", "simple", pos, neg, x, disable_noise=True,
                                   start_step=2, last_step=10000, seed=0, disable_pbar=True)

    with caplog.at_level(logging.INFO, logger="sageattn3.comfyui"):
        out = two_experts(high_s, low_s)
    lines = [r.getMessage() for r in caplog.records if r.name == "sageattn3.comfyui"
             and "attention calls" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "node 11" in lines[0] and "node 12" in lines[1]
    per_step = 2 * bench.TINY_CPU["num_layers"]  # self + cross attention per block, cond+uncond batched
    ov_high = high_s.model_options["transformer_options"]["optimized_attention_override"]
    ov_low = low_s.model_options["transformer_options"]["optimized_attention_override"]
    assert ov_high.stats()["fallback"] == {R_FIRST_STEPS: per_step}   # step 0 of its run
    assert ov_high.served == per_step                                   # step 1
    assert ov_high.sigma_reads == 2                                     # once per model call
    assert ov_low.served == 0 and sum(ov_low.fallback.values()) == 2 * per_step
    assert len(served) == per_step

    monkeypatch.setattr(_dispatch, "try_attention", lambda *a, **kw: (None, "off"))
    ref = two_experts(high, low)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- on the GPU
@pytest.mark.gpu
def test_wan_gpu_cosine_small(bench, comfy):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if _dispatch._STATIC_REASON is not None:
        pytest.skip(f"no sageattn3 kernels: {_dispatch._STATIC_REASON}")
    dev = torch.device("cuda")
    cfg = bench.SMALL
    model = bench.build_wan(comfy, cfg, dev, torch.bfloat16)
    inputs = bench.make_inputs(cfg, 33, 480, 832, dev, torch.bfloat16)
    ref = bench.forward(model, inputs, {})
    to = bench.patched_options(comfy, model, dev, print_backend=False, kernel="mma")  # "auto" keeps cuDNN SDPA on H100
    out = bench.forward(model, inputs, to)
    st = to["optimized_attention_override"].stats()
    assert st["served"] > 0, st
    cos = bench.cosine(ref, out)
    print(f"cosine vs SDPA {cos:.6f}, calls {st}")
    assert cos >= 0.999
