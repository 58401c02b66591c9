#!/usr/bin/env python3
"""Attention's forward and backward as the DiT runs them, by SDPA backend (run on the GPU machine).

Self-attention over the video tokens and cross-attention to the text states, bf16, q/k/v laid out as the
model makes them ([B, L, H, Dh] memory viewed as [B, H, L, Dh]); CUDA events, medians. Also times the
cross-attention with its queries split into C chunks that share the keys (the chunks go in the batch
dimension, the keys/values are repeated, their gradients summed): the backward parallelises over key
blocks, of which 512 text tokens give few. And the self-attention in G calls over groups of heads (--head_groups), and q/k/v/dO in either memory layout
(--layouts: bshd = [B, L, H, Dh] memory, bhsd = [B, H, L, Dh] memory).

  python3 bench/attention_shapes.py --widths 1024 2048 4096 --tokens 8208 --text_tokens 512 --batch 2
"""
import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cuda_timing import time_ms


def heads(b, l, h, d, dev, layout="bshd"):
    """[B, H, L, Dh] for SDPA, in memory as [B, L, H, Dh] (what the model makes) or [B, H, L, Dh]."""
    if layout == "bhsd":
        return torch.randn(b, h, l, d, device=dev, dtype=torch.bfloat16).requires_grad_()
    return torch.randn(b, l, h, d, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()


def chunked_cross(q, k, v, c):
    if c == 1:
        return F.scaled_dot_product_attention(q, k, v)
    b, h, l, d = q.shape
    qc = q.transpose(1, 2).reshape(b * c, l // c, h, d).transpose(1, 2)
    kc = k.unsqueeze(1).expand(b, c, *k.shape[1:]).reshape(b * c, *k.shape[1:])
    vc = v.unsqueeze(1).expand(b, c, *v.shape[1:]).reshape(b * c, *v.shape[1:])
    o = F.scaled_dot_product_attention(qc, kc, vc)
    return o.transpose(1, 2).reshape(b, l, h, d).transpose(1, 2)


def grouped_self(q, k, v, g):
    if g == 1:
        return F.scaled_dot_product_attention(q, k, v)
    return torch.cat([F.scaled_dot_product_attention(*t) for t in zip(q.chunk(g, 1), k.chunk(g, 1), v.chunk(g, 1))], 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--tokens", type=int, default=8208)
    p.add_argument("--text_tokens", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--head_dim", type=int, default=128)
    p.add_argument("--backends", nargs="+", default=["cudnn", "flash", "efficient"])
    p.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8], help="cross-attention query chunks")
    p.add_argument("--head_groups", type=int, nargs="+", default=[1], help="self-attention in G calls over head groups")
    p.add_argument("--layouts", nargs="+", default=["bshd"], choices=["bshd", "bhsd"], help="memory layout of q, k, v, dO")
    p.add_argument("--kinds", nargs="+", default=["self", "cross"], choices=["self", "cross"])
    a = p.parse_args()
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "cudnn", torch.backends.cudnn.version())
    print("| width | attention | layout | backend | chunks / head groups | fwd ms | fwd+bwd ms | bwd TF/s |")
    print("|---|---|---|---|---|---|---|---|")
    all_backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}
    backends = {n: all_backends[n] for n in a.backends}
    for w in a.widths:
        h, d, b, l = w // a.head_dim, a.head_dim, a.batch, a.tokens
        for kind, lk, lay in ((k_, lk_, y) for k_, lk_ in (("self", l), ("cross", a.text_tokens)) if k_ in a.kinds for y in a.layouts):
            q, k, v = heads(b, l, h, d, dev, lay), heads(b, lk, h, d, dev, lay), heads(b, lk, h, d, dev, lay)
            go = heads(b, l, h, d, dev, lay).detach()
            flop = 4.0 * b * h * l * lk * d
            for name, be in backends.items():
                for c in (a.chunks if kind == "cross" else a.head_groups):
                    fn = chunked_cross if kind == "cross" else grouped_self
                    try:
                        with sdpa_kernel(be):
                            f = time_ms(lambda: fn(q, k, v, c))
                            fb = time_ms(lambda: torch.autograd.grad(fn(q, k, v, c), (q, k, v), go))
                        print(f"| {w} | {kind} | {lay} | {name} | {c} | {f:.3f} | {fb:.3f} | {2.5 * flop / ((fb - f) * 1e-3) / 1e12:.0f} |")
                    except RuntimeError as e:
                        print(f"| {w} | {kind} | {lay} | {name} | {c} | n/a: {str(e).splitlines()[0][:60]} | | |")


if __name__ == "__main__":
    main()
