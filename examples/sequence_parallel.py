#!/usr/bin/env python3
"""A Wan-style attention layer under yunchang sequence parallelism, sageattn3 as its kernel.

Wan 2.x self-attention: 40 heads of 128 dims over the video tokens, no mask. Each rank
holds S/N tokens; yunchang's LongContextAttention does the Ulysses all-to-all over
`--ulysses` ranks and ring attention over `--ring` ranks (ulysses * ring = world size),
calling sageattn3 for every local attention (once per ring step) through

    LongContextAttention(attn_type=None, attn_processor=sageattn3.parallel.yunchang_attn_processor)

and merging ring steps by the LSE the processor returns. Rank 0 prints the largest error
against one process attending over the whole sequence.

    pip install --no-deps yunchang einops           # yunchang needs only torch and einops
    # CPU, gloo (a few hundred tokens, seconds):
    torchrun --nproc-per-node 4 examples/sequence_parallel.py --ulysses 2 --ring 2
    # GPUs, NCCL (one rank per GPU; the default size is one 480p Wan frame chunk):
    torchrun --nproc-per-node 8 examples/sequence_parallel.py --ulysses 4 --ring 2 --tokens 32760

Under xDiT (`xfuser`) instead: call `sageattn3.parallel.register_xdit_backend()` in every
rank and run with `--attention_backend SDPA_FLASH` (see sageattn3/parallel/xdit.py).

Where sageattn3's kernels don't serve a call yet (today every call that needs the LSE, and
any CPU tensor), `attention_with_lse` runs torch's SDPA kernels with their exact LSE, so
the numbers printed here are those of exact attention.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

try:
    import sageattn3  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sageattn3.parallel import yunchang_attn_processor  # noqa: E402


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ulysses", type=int, default=None, help="Ulysses degree (default: world size)")
    ap.add_argument("--ring", type=int, default=None, help="ring degree (default: world size / ulysses)")
    ap.add_argument("--tokens", type=int, default=None,
                    help="sequence length, a multiple of the world size (default: 264 on CPU, 32760 on GPU)")
    ap.add_argument("--heads", type=int, default=40)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                    help="default: bf16 on GPU, fp32 on CPU")
    ap.add_argument("--causal", action="store_true", help="causal attention (Wan is not causal)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    ulysses = args.ulysses or (world // args.ring if args.ring else world)
    ring = args.ring or world // ulysses
    if ulysses * ring != world:
        raise SystemExit(f"--ulysses {ulysses} x --ring {ring} must equal the world size {world}")
    if args.heads % ulysses:
        raise SystemExit(f"--heads {args.heads} must be a multiple of --ulysses {ulysses}")
    tokens = args.tokens or (32760 if cuda else 264)
    if tokens % world:
        raise SystemExit(f"--tokens {tokens} must be a multiple of the world size {world}")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if cuda else "fp32")]

    from yunchang import LongContextAttention, set_seq_parallel_pg

    set_seq_parallel_pg(ulysses, ring, rank, world)
    attn = LongContextAttention(attn_type=None, attn_processor=yunchang_attn_processor)

    # Every rank draws the same full tensors (one seed) and keeps its contiguous shard, as
    # a DiT would after splitting its token sequence; (B, S, H, D), i.e. layout "NHD".
    gen = torch.Generator(device=device).manual_seed(args.seed)
    shape = (1, tokens, args.heads, args.head_dim)
    q, k, v = (torch.randn(shape, generator=gen, device=device, dtype=dtype) for _ in range(3))
    shard = tokens // world
    sl = slice(rank * shard, (rank + 1) * shard)
    ql, kl, vl = (t[:, sl].contiguous() for t in (q, k, v))

    with torch.no_grad():
        out = attn(ql, kl, vl, causal=args.causal)  # warm-up (and the result)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = attn(ql, kl, vl, causal=args.causal)
        if cuda:
            torch.cuda.synchronize()
        step_ms = (time.perf_counter() - t0) * 1e3
        # single-process reference on this rank's rows: torch SDPA (fp32 math on CPU)
        qh, kh, vh = (t.transpose(1, 2) for t in (q[:, sl], k, v))
        if not cuda:
            qh, kh, vh = qh.double(), kh.double(), vh.double()
        # top-left causal with the shard's query offset: key j visible to global row i iff j <= i
        mask = None
        if args.causal:
            rows = torch.arange(sl.start, sl.stop, device=device)[:, None]
            mask = torch.arange(tokens, device=device)[None, :] <= rows
        ref = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask).transpose(1, 2)
    err = (out.double() - ref.double()).abs().max()
    rel = err / ref.double().abs().max()
    stats = torch.tensor([err.item(), rel.item(), step_ms], dtype=torch.float64, device=device)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    if rank == 0:
        print(f"sageattn3 under yunchang: world {world} (ulysses {ulysses} x ring {ring}), "
              f"{tokens} tokens x {args.heads} heads x {args.head_dim}, {str(dtype).split('.')[-1]}, "
              f"causal={args.causal}, {device.type}")
        print(f"max |error| vs single-process attention: {stats[0].item():.3e} "
              f"(relative to max |ref|: {stats[1].item():.3e}); slowest rank's layer call {stats[2].item():.1f} ms")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
