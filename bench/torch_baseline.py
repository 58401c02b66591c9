#!/usr/bin/env python3
"""The PyTorch baseline of bench/step_bench.sh: the same DiT, objective and optimizer as openvid, written
the way the reference trainer runs them on one GPU: fp32 master weights sharded with FSDP2 (one rank)
computing in bf16 (MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)), each block compiled with
torch.compile, SDPA attention, fused AdamW with the muP groups. Times whole steps, forward+backward and
the optimizer with CUDA events (medians after warm-up) and the peak memory, and writes them as JSON.

    python3 bench/torch_baseline.py --configs 1024x16 2048x8 4096x4 --json out.json

The model follows docs/model.md (aligned RoPE layout, value residual, no biases on qkv/q_cross/context_kv,
no norm weights); it is a baseline for speed, not a second reference for values.
"""
import argparse
import contextlib
import json
import math
import os
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from reference_optimizer import rule as mup_rule  # noqa: E402  (the muP rules, one copy)

C, PATCH, TPATCH, REGISTERS, TEXT_DIM, HEAD_DIM, MLP = 16, 2, 2, 16, 4096, 128, 4


def rope_axis(dim):
    freqs = 1.0 / (100.0 ** (torch.arange(0, dim, 2).float() / dim))
    return torch.outer(torch.arange(128).float(), freqs)


class Block(torch.nn.Module):
    def __init__(self, d, index):
        super().__init__()
        self.h, self.index = d // HEAD_DIM, index
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.attn_proj = torch.nn.Linear(d, d, bias=False)
        self.lambda_param = torch.nn.Parameter(torch.full((1,), 0.5))
        self.q_cross = torch.nn.Linear(d, d, bias=False)
        self.context_kv = torch.nn.Linear(TEXT_DIM, 2 * d, bias=False)
        self.cross_proj = torch.nn.Linear(d, d, bias=False)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, MLP * d), torch.nn.GELU(), torch.nn.Linear(MLP * d, d))
        self.adaLN_modulation = torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Linear(d, 9 * d))

    @staticmethod
    def mod_norm(x, shift, scale):
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)
        return (y * (1 + scale.float()) + shift.float()).to(x.dtype)

    @staticmethod
    def rope(x, cos, sin):
        r = x.shape[-1] // 2
        x32 = x.float()
        x1, x2 = x32[..., :r], x32[..., r:]
        return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], -1).to(x.dtype)

    def forward(self, x, c, text, v0, cos, sin):
        b, l, d = x.shape
        mod = self.adaLN_modulation(c).unsqueeze(1).chunk(9, -1)
        qkv = self.qkv(self.mod_norm(x, mod[0], mod[1])).view(b, l, 3, self.h, HEAD_DIM).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.index > 0:
            v = self.lambda_param * v + (1 - self.lambda_param) * v0
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        sa = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, l, d)
        x = x + self.attn_proj(sa) * mod[2]
        qc = self.q_cross(self.mod_norm(x, mod[3], mod[4])).view(b, l, self.h, HEAD_DIM).transpose(1, 2)
        kv = self.context_kv(text).view(b, text.shape[1], 2, self.h, HEAD_DIM).permute(2, 0, 3, 1, 4)
        ca = F.scaled_dot_product_attention(qc, kv[0], kv[1]).transpose(1, 2).reshape(b, l, d)
        x = x + self.cross_proj(ca) * mod[5]
        x = x + self.mlp(self.mod_norm(x, mod[6], mod[7])) * mod[8]
        return x, v


class DiT(torch.nn.Module):
    def __init__(self, d, depth):
        super().__init__()
        self.d = d
        self.patch_embed = torch.nn.Conv3d(C, d, (TPATCH, PATCH, PATCH), stride=(TPATCH, PATCH, PATCH))
        self.register_tokens = torch.nn.Parameter(torch.randn(1, REGISTERS, d))
        self.time_embed = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.SiLU(), torch.nn.Linear(4 * d, d))
        self.blocks = torch.nn.ModuleList(Block(d, i) for i in range(depth))
        self.final_modulation = torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Linear(d, 2 * d))
        self.final_proj = torch.nn.Linear(d, PATCH * PATCH * TPATCH * C)
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() == 2:
                    p.mul_(0.1)

    def forward(self, x, text, t, cos, sin):
        b, _, T, H, W = x.shape
        tok = self.patch_embed(x).permute(0, 3, 4, 2, 1).reshape(b, -1, self.d)
        seq = torch.cat([self.register_tokens.expand(b, -1, -1).to(tok.dtype), tok], 1)
        half = self.d // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device).float() / half)
        args = t.float()[:, None] * freqs[None]
        c = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], -1).to(tok.dtype))
        v0 = None
        for blk in self.blocks:
            seq, v = blk(seq, c, text, v0, cos, sin)
            if v0 is None:
                v0 = v
        video = seq[:, REGISTERS:]
        shift, scale = self.final_modulation(c).unsqueeze(1).chunk(2, -1)
        y = Block.mod_norm(video, shift, scale)
        out = self.final_proj(y)
        hh, ww, tt = H // PATCH, W // PATCH, T // TPATCH
        return out.view(b, hh, ww, tt, PATCH, PATCH, TPATCH, C).permute(0, 7, 3, 6, 1, 4, 2, 5).reshape(b, C, T, H, W)


def mup_groups(model, lr, wd=0.1):
    groups = []
    for name, p in model.named_parameters():
        m, w = mup_rule(name, p.shape, wd)
        groups.append({"params": [p], "lr": lr * m, "weight_decay": w})
    return groups


def forward_flops(d, depth, frames, height, width, lc=512):
    n = (frames // TPATCH) * (height // PATCH) * (width // PATCH)
    l, p, dc, m = REGISTERS + n, PATCH * PATCH * TPATCH * C, TEXT_DIM, MLP
    block = (6 * l * d * d + 4 * l * l * d + 2 * l * d * d + 2 * l * d * d + 4 * lc * dc * d + 4 * l * lc * d + 2 * l * d * d
             + 4 * m * l * d * d + 18 * d * d)
    return 2 * n * p * d + 16 * d * d + 4 * d * d + 2 * n * d * p + depth * block


def run(width, depth, args, dev):
    torch.manual_seed(0)
    model = DiT(width, depth).to(dev)
    mode = "fsdp2"
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for blk in model.blocks:
            fully_shard(blk, mp_policy=mp, reshard_after_forward=False)
        fully_shard(model, mp_policy=mp, reshard_after_forward=False)
    except Exception as e:  # noqa: BLE001 - the baseline must still run: plain autocast then
        print(f"FSDP2 unavailable ({e}); using autocast", flush=True)
        mode = "autocast"
    if not args.eager:
        for blk in model.blocks:
            blk.compile()
    try:
        opt = torch.optim.AdamW(mup_groups(model, 1e-4), betas=(0.95, 0.99), eps=1e-8, fused=True)
    except Exception as e:  # noqa: BLE001
        print(f"fused AdamW unavailable ({e}); using foreach", flush=True)
        opt = torch.optim.AdamW(mup_groups(model, 1e-4), betas=(0.95, 0.99), eps=1e-8, foreach=True)
    B, T, H, W = args.batch, 16, 64, 64
    x = torch.randn(B, C, T, H, W, device=dev)
    text = torch.randn(B, 512, TEXT_DIM, device=dev, dtype=torch.bfloat16)
    ta, sa = rope_axis(HEAD_DIM // 2).to(dev), rope_axis(HEAD_DIM // 4).to(dev)
    ev = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
    rng = random.Random(0)
    steps, fb, op = [], [], []
    measured = args.warmup + args.steps
    total = measured + (2 if args.profile_dir else 0)  # two more steps, traced and left out of the medians
    profiler = None
    for i in range(total):
        if i == measured and args.profile_dir:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
            profiler.__enter__()
        step_range = torch.profiler.record_function(f"step {i + 1}") if profiler else contextlib.nullcontext()
        step_range.__enter__()
        e0, e1, e2 = ev(), ev(), ev()
        e0.record()
        # The objective, drawn on the device: timesteps, noise, a RoPE window.
        z = torch.randn(B, device=dev)
        t = torch.sigmoid(z)
        t = 8 * t / (1 + 7 * t)
        noise = torch.randn_like(x)
        tt = t.view(-1, 1, 1, 1, 1)
        x_t, target = (1 - tt) * x + tt * noise, x - noise
        off = rng.randint(0, 128 - 8), rng.randint(0, 128 - 32), rng.randint(0, 128 - 32)
        tg, hg, wg = torch.meshgrid(torch.arange(8, device=dev) + off[0], torch.arange(32, device=dev) + off[1],
                                    torch.arange(32, device=dev) + off[2], indexing="ij")
        ang = torch.cat([ta[tg], sa[hg], sa[wg]], -1).permute(1, 2, 0, 3).reshape(-1, HEAD_DIM // 2)
        ang = torch.cat([torch.zeros(REGISTERS, HEAD_DIM // 2, device=dev), ang])
        cos, sin = torch.cos(ang), torch.sin(ang)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode == "autocast"):
            pred = model(x_t.to(torch.bfloat16) if mode == "fsdp2" else x_t, text, t, cos, sin)
            loss = F.mse_loss(pred.float(), target)
        loss.backward()
        e1.record()
        opt.step()
        opt.zero_grad(set_to_none=True)
        e2.record()
        step_range.__exit__(None, None, None)
        torch.cuda.synchronize()
        if args.warmup <= i < measured:
            steps.append(e0.elapsed_time(e2))
            fb.append(e0.elapsed_time(e1))
            op.append(e1.elapsed_time(e2))
    if profiler:
        profiler.__exit__(None, None, None)
        os.makedirs(args.profile_dir, exist_ok=True)
        profiler.export_chrome_trace(os.path.join(args.profile_dir, f"baseline_{width}x{depth}.json"))
    flops = 3 * forward_flops(width, depth, T, H, W) * B
    step = statistics.median(steps)
    result = {"config": f"{width}x{depth}", "mode": mode + ("" if args.eager else "+compile"), "step_ms": step,
              "forward_backward_ms": statistics.median(fb), "optimizer_ms": statistics.median(op),
              "tokens_per_s": B * (T // 2) * (H // 2) * (W // 2) / (step / 1000), "tflops": flops / (step / 1000) / 1e12,
              "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "parameters": sum(p.numel() for p in model.parameters())}
    del model, opt
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["1024x16", "2048x8", "4096x4"], help="WIDTHxDEPTH")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eager", action="store_true", help="no torch.compile")
    ap.add_argument("--json", required=True)
    ap.add_argument("--profile_dir", help="also trace two more steps of each configuration (after the timed ones, left out of the medians) "
                    "into baseline_WxD.json here: a Kineto trace whose \"step N\" ranges bench/trace_breakdown.py reads")
    args = ap.parse_args()
    torch._dynamo.config.cache_size_limit = 64  # one compiled block per block, however deep the model
    dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    for k, v in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29533"), ("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(k, v)
    try:
        import torch.distributed as dist
        dist.init_process_group("nccl", rank=0, world_size=1, device_id=dev)
    except Exception as e:  # noqa: BLE001
        print(f"no process group ({e})", flush=True)
    results = []
    for cfg in args.configs:
        w, d = (int(v) for v in cfg.split("x"))
        t0 = time.time()
        r = run(w, d, args, dev)
        r["wall_s"] = time.time() - t0
        print(json.dumps(r), flush=True)
        results.append(r)
    json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
