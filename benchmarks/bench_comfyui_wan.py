"""End to end in ComfyUI: one denoising step of ComfyUI's own `WanModel`, SDPA vs our node.

Builds ComfyUI's `comfy.ldm.wan.model.WanModel` at the Wan 2.2 14B configuration (40 layers,
dim 5120, 40 heads, FFN 13824, 36 input channels as in image-to-video) with random bf16
weights on the GPU, and runs one forward step on the latent of 81 frames at 832x1216
(21 x 76 x 52 = 82,992 tokens), in one process, same inputs:
  1. ComfyUI's default attention (SDPA through `attention_pytorch` on NVIDIA), then
  2. the same model through our `Sage3AttentionOnlySwitch` node (`apply_switch` on a real
     ComfyUI ModelPatcher; the override reaches the model via transformer_options exactly as
     in a ComfyUI run).
  3. each peer asked for with --peers (default: SageAttention2, when installed; see
     sageattn3/_peers.py) through the same mechanism: an `optimized_attention_override` that
     calls the peer (`PeerOverride`), as ComfyUI's own --use-sage-attention would.
Reports seconds per step (median of CUDA-event-timed runs after warm-up), the speedup, peak
device memory above the model and inputs, the output cosine similarity of the two runs and
which path served how many attention calls. JSON goes to benchmarks/results/.

`--small` builds a small config (4 layers, dim 1536, 12 heads of 128; 33 frames at 480x832 =
14,040 tokens) for quick cosine checks; it also measures the cosine of every block-schedule
setting in `--sweep` (how many first/last blocks keep SDPA), so the node's defaults can be
chosen from measurements. Random weights can't judge visual quality across a whole sampling
run; they only bound the per-step numerical error.

`--step-sweep N` (with --small/--tiny) runs a short N-step Euler loop on the same random model (sigmas
1 -> 0, the override sees `sigmas`/`sample_sigmas` as in a ComfyUI run) with SDPA and with
kernel="nvfp4" for each first,last count of 8-bit steps in `--edge-sweep` (the node's
nvfp4_8bit_first/last_steps), and reports the final latent's cosine vs SDPA's: how much the
schedule recovers of what NVFP4 loses (README). On Hopper nvfp4 runs with its MMA emulated:
correct, slow, so keep it small.

Usage (ComfyUI source in .comfyui/ or COMFYUI_PATH; the sageattn3 package importable):
    python benchmarks/bench_comfyui_wan.py --small
    python benchmarks/bench_comfyui_wan.py            # 14B, 82,992 tokens (~2-3 min on H100)
The functions here are reused by tests/test_comfyui_real.py.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import sageattn3  # noqa: F401
except ImportError:  # run from a source checkout without installing (the node is imported lazily)
    sys.path.insert(0, str(REPO))

WAN22_14B = dict(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=36, dim=5120,
                 ffn_dim=13824, freq_dim=256, text_dim=4096, out_dim=16, num_heads=40,
                 num_layers=40, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)
SMALL = dict(WAN22_14B, dim=1536, ffn_dim=8960, num_heads=12, num_layers=4)
TINY_CPU = dict(WAN22_14B, dim=128, ffn_dim=256, num_heads=4, num_layers=3, text_dim=64)

# first/last blocks kept on SDPA: (first_blocks, last_blocks)
DEFAULT_SWEEP = ((0, 0), (1, 0), (0, 1), (1, 1), (2, 2), (4, 4))


# --------------------------------------------------------------------------- ComfyUI setup
def find_comfyui(path=None) -> Path:
    for cand in (path, os.environ.get("COMFYUI_PATH"), REPO / ".comfyui"):
        if cand and (Path(cand) / "comfy" / "ldm" / "wan" / "model.py").is_file():
            return Path(cand).resolve()
    raise SystemExit("ComfyUI source not found: pass --comfyui PATH, set COMFYUI_PATH, or put a "
                     "checkout in .comfyui/ (see tests/test_comfyui_real.py)")


def import_comfy(comfy_path):
    """Import the ComfyUI modules a WanModel run needs; CPU mode when torch has no CUDA."""
    import torch
    comfy_path = str(comfy_path)
    if comfy_path not in sys.path:
        sys.path.insert(0, comfy_path)
    import comfy.cli_args
    if not torch.cuda.is_available() and "comfy.model_management" not in sys.modules:
        comfy.cli_args.args.cpu = True
    import comfy.ldm.wan.model
    import comfy.ldm.modules.attention
    import comfy.model_patcher
    import comfy.ops
    return comfy


def build_wan(comfy, cfg: dict, device, dtype, seed: int = 0):
    """ComfyUI's WanModel with random weights (scaled like a trained init, so activations stay
    finite through many blocks)."""
    import torch
    model = comfy.ldm.wan.model.WanModel(**cfg, device=device, dtype=dtype,
                                         operations=comfy.ops.disable_weight_init)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("modulation"):
                p.normal_(0.0, 0.02, generator=g)
            elif p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=g)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    return model.eval().requires_grad_(False)


def make_inputs(cfg: dict, frames: int, height: int, width: int, device, dtype, seed: int = 1):
    import torch
    g = torch.Generator(device=device).manual_seed(seed)
    t_lat = 1 + (frames - 1) // 4
    x = torch.randn(1, cfg["in_dim"], t_lat, height // 8, width // 8, generator=g, device=device).to(dtype)
    context = torch.randn(1, cfg["text_len"], cfg["text_dim"], generator=g, device=device).to(dtype)
    timestep = torch.tensor([500.0], device=device)
    return x, timestep, context


def tokens_of(cfg, x) -> int:
    p = cfg["patch_size"]
    return (x.shape[2] // p[0]) * (x.shape[3] // p[1]) * (x.shape[4] // p[2])


def block_index_patches(num_layers: int) -> dict:
    """For ComfyUI versions whose WanModel doesn't set block_index/total_blocks itself: set them
    through ComfyUI's own per-block replace hook, so block schedules can be measured there."""
    def make(i):
        def replace(args, extra):
            to = args["transformer_options"]
            to["block_index"], to["total_blocks"] = i, num_layers
            return extra["original_block"](args)
        return replace
    return {"dit": {("double_block", i): make(i) for i in range(num_layers)}}


def patched_options(comfy, model, device, **node_kwargs):
    """transformer_options of the model after our node, applied to a real ModelPatcher."""
    from sageattn3.comfyui.node import apply_switch
    mp = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)
    out = apply_switch(mp, **node_kwargs)
    return out.model_options["transformer_options"]


def forward(model, inputs, transformer_options):
    import torch
    x, t, ctx = inputs
    with torch.inference_mode():
        # a fresh dict per model call, as ComfyUI builds one per call
        return model(x, t, ctx, transformer_options=dict(transformer_options))


def sample(model, inputs, transformer_options, steps: int):
    """A plain Euler loop of `steps` model calls, sigma 1 -> 0, on the first out_dim channels of
    the latent; transformer_options gets this call's `sigmas` and the run's `sample_sigmas`, which
    is what the node's step schedule reads."""
    import torch
    x, _, ctx = inputs
    ss = torch.linspace(1.0, 0.0, steps + 1, device=x.device)
    x = x.clone()
    with torch.inference_mode():
        for i in range(steps):
            to = dict(transformer_options, sigmas=ss[i:i + 1], sample_sigmas=ss)
            out = model(x, (ss[i:i + 1] * 1000.0).float(), ctx, transformer_options=to)
            x[:, :out.shape[1]] += ((ss[i + 1] - ss[i]) * out).to(x.dtype)
    return x


def cosine(a, b) -> float:
    a = a.double().flatten()
    b = b.double().flatten()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


class PeerOverride:
    """ComfyUI's `optimized_attention_override` (contract: sageattn3/comfyui/override.py) that
    serves every call it can with one peer from sageattn3/_peers.py and hands the rest, with
    the original arguments, to ComfyUI's `func`, counted by reason."""
    KNOWN = frozenset({"mask", "attn_precision", "skip_reshape", "skip_output_reshape", "transformer_options",
                       "_inside_attn_wrapper"})

    def __init__(self, peer):
        import torch
        self.peer, self.torch = peer, torch
        self.served = 0
        self.fallback = {}

    def _back(self, reason, func, args, kwargs):
        self.fallback[reason] = self.fallback.get(reason, 0) + 1
        return func(*args, **kwargs)

    def __call__(self, func, *args, **kwargs):
        torch = self.torch
        # ComfyUI's models pass heads positionally or as a keyword (WanModel: heads=num_heads)
        pos, extra = args, kwargs
        if len(args) == 3 and "heads" in kwargs:
            pos, extra = (*args, kwargs["heads"]), {n: x for n, x in kwargs.items() if n != "heads"}
        if len(pos) != 4 or set(extra) - self.KNOWN:
            return self._back("unexpected arguments", func, args, kwargs)
        q, k, v, heads = pos
        kwargs = extra
        if kwargs.get("mask") is not None:
            return self._back("attention mask", func, args, kwargs)
        if q.dtype not in (torch.float16, torch.bfloat16):
            return self._back(f"dtype {q.dtype}", func, args, kwargs)
        if kwargs.get("skip_reshape"):  # (B, H, S, D)
            layout, (b, h, s, d), hk, sk = "HND", q.shape, k.shape[1], k.shape[2]
        else:  # (B, S, H*D)
            layout, (b, s, hd), h = "NHD_FLAT", q.shape, heads
            d = hd // heads
            hk, sk = k.shape[-1] // d, k.shape[1]
        shape = types.SimpleNamespace(b=b, h=h, heads_kv=hk, s=s, seq_k=sk, d=d)
        ok, why = self.peer.supports(shape, layout, False)
        if not ok:
            return self._back(why, func, args, kwargs)
        out = self.peer.call(torch, q, k, v, layout, heads, False)
        self.served += 1
        if layout == "HND" and not kwargs.get("skip_output_reshape"):
            return out.transpose(1, 2).reshape(b, s, h * d)
        if layout == "NHD_FLAT" and kwargs.get("skip_output_reshape"):
            return out.view(b, s, h, d).transpose(1, 2)
        return out


def find_peers(keys, device):
    """The peers named in `keys` that can run here; prints why the others can't."""
    import torch
    from sageattn3 import _peers
    arch = None
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        arch = 10 * major + minor
    found = []
    for p in _peers.discover(torch, arch):
        if p.key not in keys:
            continue
        if p.available:
            found.append(p)
        else:
            print(f"peer {p.label} skipped: {p.reason}", flush=True)
    return found


# --------------------------------------------------------------------------- measuring
def timed(fn, warmup: int, iters: int, device):
    """(median seconds, all seconds, last output, peak bytes above the start or None on CPU)."""
    import torch
    cuda = device.type == "cuda"
    out = None
    for _ in range(warmup):
        out = fn()
    del out
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = []
    out = None
    for _ in range(iters):
        out = None
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() - base if cuda else None
    return statistics.median(times), times, out, peak


def _gib(nbytes):
    return None if nbytes is None else nbytes / 2**30


def _fmt_gib(nbytes):
    return "n/a" if nbytes is None else f"+{nbytes / 2**30:.2f} GiB"


def environment(comfy_path) -> dict:
    import torch
    import sageattn3
    from sageattn3 import _dispatch
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "sageattn3": sageattn3.__version__, "kernels_unavailable_reason": _dispatch._STATIC_REASON}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
        env["cudnn"] = torch.backends.cudnn.version()
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        env["driver"] = None
    for key, cwd in (("git_commit", REPO), ("comfyui_commit", comfy_path)):
        env[key] = os.environ.get("SAGEATTN3_GIT_COMMIT") if key == "git_commit" else None
        if env[key]:  # set by whoever copied the tree (its .git, if any, may be stale)
            continue
        try:  # only a repository of its own (.comfyui/ inside this repo is an exported tree)
            top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True,
                                 text=True, timeout=20).stdout.strip()
            if top and Path(top).resolve() == Path(cwd).resolve():
                r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=20)
                env[key] = r.stdout.strip() if r.returncode == 0 else None
        except Exception:
            pass
    try:
        ns = {}
        exec((Path(comfy_path) / "comfyui_version.py").read_text(), ns)
        env["comfyui_version"] = ns.get("__version__")
    except Exception:
        env["comfyui_version"] = None
    return env


def run(args) -> dict:
    import torch
    comfy_path = find_comfyui(args.comfyui)
    comfy = import_comfy(comfy_path)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here (--device cpu with --tiny runs a smoke test)")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.tiny:
        cfg, (frames, height, width), name = TINY_CPU, (9, 64, 64), "tiny"
    elif args.small:
        cfg, (frames, height, width), name = SMALL, (33, 480, 832), "small"
    else:
        cfg, (frames, height, width), name = WAN22_14B, (args.frames, args.height, args.width), "wan2.2-14B"
    quick = args.small or args.tiny
    warmup = args.warmup if args.warmup is not None else (2 if quick else 1)
    # 14B: 1 warm-up + 3 timed steps per side keeps the whole run under 4 minutes on an H100
    iters = args.iters if args.iters is not None else (10 if quick else 3)

    t0 = time.time()
    model = build_wan(comfy, cfg, device, dtype)
    inputs = make_inputs(cfg, frames, height, width, device, dtype)
    n_tok = tokens_of(cfg, inputs[0])
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    print(f"built WanModel ({cfg['num_layers']} layers, dim {cfg['dim']}, {cfg['num_heads']} heads; "
          f"{weights_gib:.1f} GiB) and a {frames}x{height}x{width} latent = {n_tok} tokens "
          f"in {time.time() - t0:.1f} s", flush=True)

    blocks = block_index_patches(cfg["num_layers"])
    attn_fn = comfy.ldm.modules.attention.optimized_attention.__name__
    base_to = {"patches_replace": blocks}

    s_sdpa, t_sdpa, out_sdpa, m_sdpa = timed(lambda: forward(model, inputs, base_to), warmup, iters, device)
    print(f"ComfyUI attention ({attn_fn}): {s_sdpa:.3f} s/step, peak {_fmt_gib(m_sdpa)}", flush=True)

    node_to = patched_options(comfy, model, device, kernel=args.kernel, print_backend=False)
    node_to["patches_replace"] = blocks
    override = node_to["optimized_attention_override"]
    override.reset()
    s_node, t_node, out_node, m_node = timed(lambda: forward(model, inputs, node_to), warmup, iters, device)
    calls = override.stats()
    n_runs = warmup + iters
    print(f"Sage3AttentionOnlySwitch (kernel={args.kernel}): {s_node:.3f} s/step, peak {_fmt_gib(m_node)}",
          flush=True)
    cos = cosine(out_sdpa, out_node)
    print(f"speedup {s_sdpa / s_node:.3f}x, output cosine vs SDPA {cos:.6f}", flush=True)
    per_step = {"served": calls["served"] // n_runs,
                "served_by_kernel": {k: v // n_runs for k, v in calls["served_by_kernel"].items()},
                "fallback": {k: v // n_runs for k, v in calls["fallback"].items()}}
    print(f"per step: {per_step['served']} calls on sageattn3 {per_step['served_by_kernel']}, "
          f"fallback {{{', '.join(f'{r}: {n}' for r, n in per_step['fallback'].items())}}}", flush=True)
    if calls["served"] == 0:
        print("WARNING: no attention call was served by sageattn3: the node run measured ComfyUI's "
              "attention", flush=True)

    result = {
        "benchmark": "comfyui_wan_step", "config": name, "device_kind": device.type,
        "model": {k: v for k, v in cfg.items()}, "weights_gib": weights_gib,
        "latent": {"frames": frames, "height": height, "width": width, "tokens": n_tok},
        "comfy_attention": attn_fn, "kernel": args.kernel, "warmup": warmup, "iters": iters,
        "sdpa": {"s_per_step": s_sdpa, "runs_s": t_sdpa, "peak_above_inputs_gib": _gib(m_sdpa)},
        "node": {"s_per_step": s_node, "runs_s": t_node, "peak_above_inputs_gib": _gib(m_node),
                 "calls_per_step": per_step},
        "speedup": s_sdpa / s_node, "cosine_vs_sdpa": cos,
        "env": environment(comfy_path),
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }

    result["peers"] = {}
    for peer in find_peers(args.peers, device):
        ov = PeerOverride(peer)
        peer_to = dict(base_to, optimized_attention_override=ov)
        s_p, t_p, out_p, m_p = timed(lambda: forward(model, inputs, peer_to), warmup, iters, device)
        cos_p = cosine(out_sdpa, out_p)
        del out_p
        print(f"{peer.label} {peer.version} (override): {s_p:.3f} s/step, peak {_fmt_gib(m_p)}, speedup "
              f"{s_sdpa / s_p:.3f}x, cosine vs SDPA {cos_p:.6f}; per step {ov.served // n_runs} calls served, "
              f"fallback {{{', '.join(f'{r}: {n // n_runs}' for r, n in ov.fallback.items())}}}", flush=True)
        result["peers"][peer.key] = {
            "label": peer.label, "version": peer.version, "where": peer.where, "s_per_step": s_p, "runs_s": t_p,
            "peak_above_inputs_gib": _gib(m_p), "speedup": s_sdpa / s_p, "cosine_vs_sdpa": cos_p,
            "calls_per_step": {"served": ov.served // n_runs,
                               "fallback": {k: v // n_runs for k, v in ov.fallback.items()}}}

    if quick:
        sweep = []
        for fb, lb in args.sweep:
            to = patched_options(comfy, model, device, kernel=args.kernel, print_backend=False,
                                 full_precision_first_blocks=fb, full_precision_last_blocks=lb)
            to["patches_replace"] = blocks
            c = cosine(out_sdpa, forward(model, inputs, to))
            sweep.append({"first_blocks": fb, "last_blocks": lb, "cosine_vs_sdpa": c})
            print(f"  blocks kept on SDPA: first {fb}, last {lb}: cosine {c:.6f}", flush=True)
        result["block_schedule_sweep"] = sweep
        if args.step_sweep:
            ref = sample(model, inputs, base_to, args.step_sweep)
            steps_out = []
            for first, last in args.edge_sweep:
                to = patched_options(comfy, model, device, kernel="nvfp4", print_backend=False,
                                     nvfp4_8bit_first_steps=first, nvfp4_8bit_last_steps=last)
                to["patches_replace"] = blocks
                ov = to["optimized_attention_override"]
                ov.reset()
                c = cosine(ref, sample(model, inputs, to, args.step_sweep))
                st = ov.stats()
                steps_out.append({"eight_bit_first_steps": first, "eight_bit_last_steps": last,
                                  "cosine_vs_sdpa": c, "served_by_kernel": st["served_by_kernel"],
                                  "fallback": st["fallback"]})
                print(f"  {args.step_sweep} Euler steps, kernel nvfp4, 8-bit steps first {first}, last {last}: "
                      f"final latent cosine vs SDPA {c:.6f} (served {st['served_by_kernel']}, "
                      f"fallback {st['fallback']})", flush=True)
            result["nvfp4_step_schedule_sweep"] = {"steps": args.step_sweep, "runs": steps_out}

    out = out_path(args.out, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    print(f"| {result['env'].get('device')} | {result['config']} | {n_tok} tokens | SDPA {s_sdpa:.2f} s | "
          f"node {s_node:.2f} s | {s_sdpa / s_node:.2f}x | peak {_fmt_gib(m_sdpa)} / {_fmt_gib(m_node)} | "
          f"cos {cos:.5f} |" + "".join(f" {p['label']} {p['s_per_step']:.2f} s ({p['speedup']:.2f}x, cos "
                                         f"{p['cosine_vs_sdpa']:.5f}) |" for p in result["peers"].values()))
    return result


def _pair(text):
    a, b = text.split(",")
    return int(a), int(b)


def out_path(arg, name: str) -> Path:
    """Where the JSON goes: --out as a file path, or a directory (existing, or written with a
    trailing slash) that gets the default name, as `python -m sageattn3 bench --out DIR` does."""
    default = f"comfyui_wan_{name}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    if not arg:
        return REPO / "benchmarks" / "results" / default
    p = Path(arg)
    return p / default if p.is_dir() or str(arg).endswith(("/", "\\")) else p


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--comfyui", help="ComfyUI source folder (default: $COMFYUI_PATH or .comfyui/)")
    p.add_argument("--small", action="store_true", help="small config for quick cosine checks")
    p.add_argument("--tiny", action="store_true", help="3-layer toy config (a smoke test, e.g. --device cpu)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--height", type=int, default=1216)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--kernel", default="auto", help="the node's kernel input (auto, a family, sdpa)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--sweep", type=_pair, nargs="*", default=list(DEFAULT_SWEEP),
                   help="--small/--tiny: first,last block counts kept on SDPA, e.g. 0,0 1,1")
    p.add_argument("--step-sweep", type=int, default=0, metavar="N",
                   help="--small/--tiny: also run an N-step Euler loop per --edge-sweep setting (kernel nvfp4)")
    p.add_argument("--edge-sweep", type=_pair, nargs="*", default=[(0, 0), (1, 1), (2, 2)],
                   help="with --step-sweep: first,last sampling steps on the 8-bit kernel, e.g. 0,0 1,1")
    p.add_argument("--out", help="JSON path, or a directory for the default name (default benchmarks/results/comfyui_wan_*.json)")
    p.add_argument("--peers", type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                   default=["sageattention"], help="comma-separated peers to run through the same override "
                   "mechanism when installed (sageattention, comfy_kitchen; '' for none; default sageattention)")
    args = p.parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
