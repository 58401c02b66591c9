#!/usr/bin/env python3
"""Makes the optimizer parity fixture (tests/fixtures/mup_adam.safetensors) with torch.optim.AdamW and the
reference's per-parameter muP rules (listed in include/openvid/train/optimizer.h), written here independently of openvid's C++ code.

One parameter per rule kind with random values and three steps of random gradients under the linear
schedule (warm-up 20, max_steps 25: multipliers 0, 0.05, 0.1 -- the first update uses 0), base lr 1e-3,
base weight decay 0.1, betas (0.95, 0.99), eps 1e-8. Stored: "init.<name>", "grad<s>.<name>",
"final.<name>", and "rule.<name>" = [lr_mult, weight_decay].

    python3 tools/reference_optimizer.py tests/fixtures/mup_adam.safetensors
"""
import math
import sys

import torch

SHAPES = {
    "patch_embed.weight": [8, 4, 2, 2, 2], "patch_embed.bias": [8], "register_tokens": [1, 4, 8],
    "time_embed.0.weight": [32, 8], "time_embed.2.bias": [8], "blocks.0.qkv.weight": [24, 8],
    "blocks.0.qkv.bias": [24], "blocks.0.norm1.weight": [8], "blocks.1.lambda_param": [1],
    "blocks.0.context_kv.weight": [16, 12], "blocks.0.adaLN_modulation.1.weight": [72, 8],
    "blocks.0.adaLN_modulation.1.bias": [72], "final_modulation.1.weight": [16, 8], "final_norm.weight": [8],
    "final_proj.weight": [32, 8], "blocks.0.mlp.0.weight": [32, 8],
}


def rule(name, shape, base_wd=0.1):
    """(lr multiplier, weight decay) of a parameter; bench/torch_baseline.py uses it too."""
    if any(s in name for s in ("bias", "norm", "lambda")):
        lr, wd = 0.01, 0.0
    else:
        k = shape[-1]
        lr, wd = 32.0 / k, base_wd * k / 1024
    if any(s in name for s in ("patch_embed", "context_kv", "positional_embedding")):
        lr, wd = 0.01, 0.0
    if "time" in name:
        lr *= 0.1
    if "modulation" in name:
        lr *= 0.1
    return lr, wd


def linear(step, max_steps=25, warmup=20):
    return step / warmup if step < warmup else max(0.0, (max_steps - step) / (max_steps - warmup))


def main():
    from safetensors.torch import save_file  # only for writing the fixture: rule() imports without it

    torch.manual_seed(0)
    out = {}
    params, groups = {}, []
    for name, shape in SHAPES.items():
        p = torch.nn.Parameter(torch.randn(shape))
        params[name] = p
        lr_mult, wd = rule(name, shape)
        groups.append({"params": [p], "lr": 1e-3 * lr_mult, "weight_decay": wd, "lr_mult": lr_mult})
        out["init." + name] = p.detach().clone()
        out["rule." + name] = torch.tensor([lr_mult, wd], dtype=torch.float64)
    opt = torch.optim.AdamW(groups, betas=(0.95, 0.99), eps=1e-8)
    for step in range(3):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * linear(step) * g["lr_mult"]
        for name, p in params.items():
            p.grad = torch.randn_like(p)
            out[f"grad{step}.{name}"] = p.grad.clone()
        opt.step()
    for name, p in params.items():
        out["final." + name] = p.detach().clone()
    save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[1] if len(sys.argv) > 1 else "mup_adam.safetensors")
    print("wrote", len(out), "tensors")


if __name__ == "__main__":
    main()
