#!/usr/bin/env python3
"""Float8 recipes compared product by product at the DiT's linear shapes: does the row-wise recipe earn its place?

For each width, the block's linears (as bench/gemm_shapes.py lists them) run their three products (forward
y = x W^T, input gradient dy W, weight gradient dy^T x) as
  bf16        bf16 operands (the bf16 step's products),
  tensorwise  e4m3 operands with one scale per tensor (openvid's --fp8_recipe tensorwise),
  rowwise     e4m3 operands with one scale per row of each operand along the contracted dimension (torchao's
              "rowwise" recipe: x and W per row for the forward, dy per row and W per column for the input
              gradient, dy and x per column for the weight gradient, so every tensor is cast twice),
through at::_scaled_mm (cuBLASLt), fp32 accumulation, bf16 out. Printed per linear: each recipe's product time
(CUDA events, median of --iters; the casts are not included, openvid fuses them into its own kernels), its speed
over bf16, and the relative error (Frobenius) of each product against fp32 on the same operands.

Operands: activations and gradients of unit variance with per-token magnitudes spread log-normally (sigma 1; a
DiT's tokens differ in norm by timestep and position) and a few outlier channels (x20 on 0.5% of the columns
of x), which is where per-row scales help; weights normal at 1/sqrt(in). Synthetic, so the errors rank the
recipes; the step's own accuracy is the model's (tests/test_float8.cpp measures it per layer).

  python3 bench/float8_recipes.py --widths 2048 4096          (GPU: times and errors)
  python3 bench/float8_recipes.py --device cpu --tokens 512    (errors only; ATen's _scaled_mm runs on CPUs)
"""
import argparse

import torch

E4M3_MAX = 448.0


def cast(t, dim=None):
    """e4m3 copy of t and its dequantisation scale: one per tensor (dim None) or one per slice along `dim`."""
    t = t.float()
    amax = t.abs().amax() if dim is None else t.abs().amax(dim=dim, keepdim=True)
    s = E4M3_MAX / amax.clamp_min(1e-12)
    return (t * s).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), (1.0 / s).float()


def operands(a, b, recipe):
    """a [m, k] @ b^T (b [n, k]) as _scaled_mm's arguments: a row-major, b column-major, scales per recipe."""
    if recipe == "tensorwise":
        qa, sa = cast(a)
        qb, sb = cast(b)
        return qa, qb.t(), sa.reshape(()), sb.reshape(())
    qa, sa = cast(a, dim=1)  # [m, 1]
    qb, sb = cast(b, dim=1)  # [n, 1]
    return qa, qb.t(), sa, sb.reshape(1, -1)


def scaled(args):
    qa, qb, sa, sb = args
    return torch._scaled_mm(qa, qb, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)


def rel_error(y, ref):
    return ((y.float() - ref).norm() / ref.norm()).item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--widths", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--tokens", type=int, default=16416, help="rows of the activations (batch x sequence)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    dev = torch.device(a.device)
    timed = dev.type == "cuda"
    if timed:
        from cuda_timing import time_ms
        print(torch.cuda.get_device_name(), "torch", torch.__version__)
    g = torch.Generator(device="cpu").manual_seed(0)

    def activations(n, k, outliers):
        t = torch.randn(n, k, generator=g) * torch.exp(torch.randn(n, 1, generator=g))
        if outliers:
            t[:, torch.randperm(k, generator=g)[: max(1, k // 200)]] *= 20.0
        return t.to(dev, torch.bfloat16)

    recipes = ("tensorwise", "rowwise")
    print("| width | linear | rows x in x out | bf16 ms | tensorwise ms (x bf16) | rowwise ms (x bf16) "
          "| tensorwise error fwd / dgrad / wgrad | rowwise error fwd / dgrad / wgrad |")
    print("|---|---|---|---|---|---|---|---|")
    for d in a.widths:
        n = a.tokens
        linears = [("qkv", d, 3 * d), ("attn_proj", d, d), ("mlp.0", d, 4 * d), ("mlp.2", 4 * d, d)]
        totals = dict.fromkeys(("bf16",) + recipes, 0.0)
        for name, k, m in linears:
            x = activations(n, k, outliers=True)
            w = (torch.randn(m, k, generator=g) / k ** 0.5).to(dev, torch.bfloat16)
            dy = activations(n, m, outliers=False) * 1e-3
            # the three products, each as (left [rows, contracted], right^T [cols, contracted]) pairs
            pairs = [(x, w), (dy, w.t().contiguous()), (dy.t().contiguous(), x.t().contiguous())]
            refs = [l.float() @ r.float().t() for l, r in pairs]
            row = {}
            for recipe in recipes:
                args = [operands(l, r, recipe) for l, r in pairs]
                errors = [rel_error(scaled(ar), ref) for ar, ref in zip(args, refs)]
                ms = sum(time_ms(lambda ar=ar: scaled(ar), a.iters) for ar in args) if timed else float("nan")
                row[recipe] = (ms, errors)
                totals[recipe] += ms
            bf16_ms = sum(time_ms(lambda l=l, r=r: l @ r.t(), a.iters) for l, r in pairs) if timed else float("nan")
            totals["bf16"] += bf16_ms
            cells = [f"{row[r][0]:.3f} ({bf16_ms / row[r][0]:.2f}x)" for r in recipes]
            errs = [" / ".join(f"{100 * e:.2f}%" for e in row[r][1]) for r in recipes]
            print(f"| {d} | {name} | {n} x {k} x {m} | {bf16_ms:.3f} | {cells[0]} | {cells[1]} | {errs[0]} | {errs[1]} |")
            del x, w, dy, pairs, refs
        if timed:
            print(f"| {d} | these four linears | | {totals['bf16']:.3f} | {totals['tensorwise']:.3f} ({totals['bf16'] / totals['tensorwise']:.2f}x) "
                  f"| {totals['rowwise']:.3f} ({totals['bf16'] / totals['rowwise']:.2f}x) | | |")


if __name__ == "__main__":
    main()
