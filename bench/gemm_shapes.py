#!/usr/bin/env python3
"""Matrix-product efficiency of the DiT's linear layers, shape by shape (run on the GPU machine).

For each width, the block's linears (qkv, attention/cross projections, q_cross, MLP in/out, the text's kv)
are timed as the training step runs them: forward y = x W^T, input gradient dy W, weight gradient dy^T x,
bf16 operands with fp32 accumulation, CUDA events, median of --iters after warm-up. Prints TFLOP/s per
product and the block's total, so a slow shape stands out from the trace's kernel names.

  python3 bench/gemm_shapes.py --widths 1024 2048 4096 --tokens 16416 --text_tokens 1024

--layouts also times each gradient product with its operands copied beforehand into the forward's layout
(both operands contiguous along the reduced dimension, "TN" in cuBLAS's terms) and the weight's transpose
itself, to tell a slow layout from a slow shape.
"""
import argparse

import torch

from cuda_timing import time_ms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--tokens", type=int, default=16416, help="rows of the activations (batch x sequence)")
    p.add_argument("--text_tokens", type=int, default=1024)
    p.add_argument("--text_dim", type=int, default=4096)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--layouts", action="store_true", help="also the gradient products from pre-transposed operands")
    a = p.parse_args()
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    print("| width | linear | rows | in | out | fwd TF/s | dgrad TF/s | wgrad TF/s | ms (3 products) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for d in a.widths:
        linears = [("qkv", a.tokens, d, 3 * d), ("attn_proj", a.tokens, d, d), ("q_cross", a.tokens, d, d),
                   ("cross_proj", a.tokens, d, d), ("mlp.0", a.tokens, d, 4 * d), ("mlp.2", a.tokens, 4 * d, d),
                   ("context_kv", a.text_tokens, a.text_dim, 2 * d)]
        total_ms = total_flop = 0.0
        for name, n, k, m in linears:
            x = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
            w = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            dy = torch.randn(n, m, device=dev, dtype=torch.bfloat16)
            flop = 2.0 * n * k * m
            ms = [time_ms(lambda: x @ w.t(), a.iters), time_ms(lambda: dy @ w, a.iters), time_ms(lambda: dy.t() @ x, a.iters)]
            tf = [flop / (t * 1e-3) / 1e12 for t in ms]
            total_ms += sum(ms)
            total_flop += 3 * flop
            print(f"| {d} | {name} | {n} | {k} | {m} | {tf[0]:.0f} | {tf[1]:.0f} | {tf[2]:.0f} | {sum(ms):.3f} |")
            if a.layouts:
                wt, xt, dyt = w.t().contiguous(), x.t().contiguous(), dy.t().contiguous()
                tn = [time_ms(lambda: dy @ wt.t(), a.iters), time_ms(lambda: dyt @ xt.t(), a.iters)]
                transpose = time_ms(lambda: w.t().contiguous(), a.iters)
                print(f"|   | {name}, pre-transposed | | | | | {flop / (tn[0] * 1e-3) / 1e12:.0f} | {flop / (tn[1] * 1e-3) / 1e12:.0f} "
                      f"| transposing the weight: {transpose:.3f} |")
                del wt, xt, dyt
            del x, w, dy
        print(f"| {d} | block total | | | | | | {total_flop / (total_ms * 1e-3) / 1e12:.0f} TF/s | {total_ms:.3f} |")


if __name__ == "__main__":
    main()
