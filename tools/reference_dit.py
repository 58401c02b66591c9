#!/usr/bin/env python3
"""An independent implementation of the reference trainer's DiT (docs/model.md) in PyTorch, used to make the parity fixtures
that openvid's C++ model is tested against (tests/fixtures/dit_*/).

Written from docs/model.md alone and on purpose differently from the C++ code: float64 throughout, attention
as an explicit softmax(q k^T) v, RoPE tables from a meshgrid of the window flattened in (t, h, w) order,
modulation as one big Linear chunked by hand. Weights are random (also the zero-initialised ones, so
every path carries signal) and stored as fp32; the reference computes in float64 from those exact values.

    python3 tools/reference_dit.py --out tests/fixtures

needs torch and safetensors (pip install safetensors).
"""
import argparse
import math
import os

import torch
from safetensors.torch import save_file

torch.set_default_dtype(torch.float64)


# ---- RoPE: base 100 on a 128^3 grid, r = head_dim/2 angles (t: r/2, h: r/4, w: r/4) -------------------
def axis_freqs(dim):
    # fp32, as the reference trainer computes its tables
    return 1.0 / (100.0 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))


def rope_cos_sin(head_dim, registers, grid, offset, layout):
    r = head_dim // 2
    T, H, W = grid
    st, sh, sw = offset
    ft, fs = axis_freqs(r), axis_freqs(r // 2)
    tt, hh, ww = torch.meshgrid(torch.arange(st, st + T), torch.arange(sh, sh + H), torch.arange(sw, sw + W),
                                indexing="ij")  # window in (t, h, w) order
    ang = torch.cat([tt.float()[..., None] * ft, hh.float()[..., None] * fs, ww.float()[..., None] * fs], -1)
    if layout == "aligned":
        ang = ang.permute(1, 2, 0, 3)  # to the tokens' (h, w, t) order
    ang = ang.reshape(T * H * W, r)  # seed: token i takes the i-th position in (t, h, w) order
    cos, sin = torch.cos(ang), torch.sin(ang)
    reg_cos = torch.ones(registers, r, dtype=torch.float32)
    reg_sin = (torch.ones if layout == "seed" else torch.zeros)(registers, r, dtype=torch.float32)
    return torch.cat([reg_cos, cos]).double(), torch.cat([reg_sin, sin]).double()


def rotate(x, cos, sin):
    r = x.shape[-1] // 2
    x1, x2 = x[..., :r], x[..., r:]
    return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], -1)


def rms(x, weight=None):
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)
    return y if weight is None else y * weight


def attention(q, k, v):  # [B, h, L, d]
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v


class Holder(torch.nn.Module):
    """Lets parameters carry the reference names (norm1.weight, mlp.0.weight, ...)."""


def linear(d_in, d_out, bias):
    return torch.nn.Linear(d_in, d_out, bias=bias)


class Block(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D, aff = cfg["width"], cfg["affine"]
        self.h, self.hd, self.D = D // cfg["head_dim"], cfg["head_dim"], D
        for name in ("norm1", "norm2", "norm3"):
            holder = Holder()
            if aff:
                holder.weight = torch.nn.Parameter(torch.ones(D))
            setattr(self, name, holder)
        self.qkv = linear(D, 3 * D, aff)
        self.attn_proj = linear(D, D, False)
        self.lambda_param = torch.nn.Parameter(torch.tensor([0.5]))
        self.q_cross = linear(D, D, aff)
        self.context_kv = linear(cfg["text_dim"], 2 * D, aff)
        self.cross_proj = linear(D, D, False)
        self.mlp = torch.nn.Sequential(linear(D, cfg["mlp_ratio"] * D, True), torch.nn.GELU(),
                                       linear(cfg["mlp_ratio"] * D, D, True))
        self.adaLN_modulation = torch.nn.Sequential(torch.nn.SiLU(), linear(D, 9 * D, True))

    def modnorm(self, x, norm, shift, scale):
        return rms(x, getattr(norm, "weight", None)) * (1 + scale) + shift

    def forward(self, x, c, text, v0, cos, sin, index, residual_v):
        B, L, D = x.shape
        m = self.adaLN_modulation(c)[:, None, :]
        (shift_sa, scale_sa, gate_sa, shift_ca, scale_ca, gate_ca, shift_mlp, scale_mlp,
         gate_mlp) = [m[..., i * D:(i + 1) * D] for i in range(9)]
        qkv = self.qkv(self.modnorm(x, self.norm1, shift_sa, scale_sa)).reshape(B, L, 3, self.h, self.hd)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        if residual_v and index > 0:
            v = self.lambda_param * v + (1 - self.lambda_param) * v0
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        x = x + self.attn_proj(attention(q, k, v).transpose(1, 2).reshape(B, L, D)) * gate_sa
        qc = self.q_cross(self.modnorm(x, self.norm2, shift_ca, scale_ca)).reshape(B, L, self.h, self.hd).transpose(1, 2)
        kv = self.context_kv(text).reshape(B, text.shape[1], 2, self.h, self.hd)
        kc, vc = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        x = x + self.cross_proj(attention(qc, kc, vc).transpose(1, 2).reshape(B, L, D)) * gate_ca
        x = x + self.mlp(self.modnorm(x, self.norm3, shift_mlp, scale_mlp)) * gate_mlp
        return x, v


class DiT(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        D, C, p, tp = cfg["width"], cfg["in_channels"], cfg["patch"], cfg["time_patch"]
        self.patch_embed = torch.nn.Conv3d(C, D, (tp, p, p), stride=(tp, p, p))
        self.register_tokens = torch.nn.Parameter(torch.randn(1, cfg["registers"], D))
        self.time_embed = torch.nn.Sequential(linear(D, 4 * D, True), torch.nn.SiLU(), linear(4 * D, D, True))
        self.blocks = torch.nn.ModuleList([Block(cfg) for _ in range(cfg["depth"])])
        self.final_modulation = torch.nn.Sequential(torch.nn.SiLU(), linear(D, 2 * D, True))
        self.final_norm = Holder()  # a learnable weight only with train_bias_and_rms, as the block norms
        if cfg["affine"]:
            self.final_norm.weight = torch.nn.Parameter(torch.ones(D))
        self.final_proj = linear(D, p * p * tp * C, True)

    def forward(self, x, text, t, offset):
        cfg = self.cfg
        B, C, T, H, W = x.shape
        p, tp, R, D = cfg["patch"], cfg["time_patch"], cfg["registers"], cfg["width"]
        Tp, Hp, Wp = T // tp, H // p, W // p
        tok = self.patch_embed(x).permute(0, 3, 4, 2, 1).reshape(B, Hp * Wp * Tp, D)
        seq = torch.cat([self.register_tokens.expand(B, -1, -1), tok], 1)
        half = D // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], -1).double()
        c = self.time_embed(emb)
        cos, sin = rope_cos_sin(cfg["head_dim"], R, (Tp, Hp, Wp), offset, cfg["rope_layout"])
        v0 = None
        for i, blk in enumerate(self.blocks):
            seq, v = blk(seq, c, text, v0, cos, sin, i, cfg["residual_v"])
            if i == 0:
                v0 = v
        x = seq[:, R:]
        fm = self.final_modulation(c)[:, None, :]
        shift, scale = fm[..., :D], fm[..., D:]
        y = self.final_proj(rms(x, getattr(self.final_norm, "weight", None)) * (1 + scale) + shift)
        y = y.reshape(B, Hp, Wp, Tp, p, p, tp, C)  # features (p_h, p_w, p_t, c)
        return torch.einsum("bhwtijkc->bctkhiwj", y).reshape(B, C, T, H, W)


def make_fixture(out_dir, name, cfg, shape, text_len, offset, seed):
    torch.manual_seed(seed)
    model = DiT(cfg)
    with torch.no_grad():
        for pname, prm in model.named_parameters():
            if pname.endswith("lambda_param"):
                prm.copy_(torch.rand(1) * 0.8 + 0.1)
            elif "norm" in pname:
                prm.copy_(1 + 0.1 * torch.randn_like(prm))
            else:
                prm.copy_(0.2 * torch.randn_like(prm))
            prm.copy_(prm.float().double())  # exactly representable in the fp32 file
    B, C, T, H, W = shape
    x = torch.randn(B, C, T, H, W).float().double()
    text = torch.randn(B, text_len, cfg["text_dim"]).float().double()
    t = torch.rand(B).float().double()
    probe = torch.randn(B, C, T, H, W).float().double()
    v = model(x, text, t, offset)
    (v * probe).sum().backward()

    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    weights = {k: p.detach().float().contiguous() for k, p in model.named_parameters()}
    weights["rope.freqs_hwt_cos"] = torch.ones(4, 2, dtype=torch.float32)  # stored by the reference; ignored
    save_file(weights, os.path.join(d, "weights.safetensors"))
    save_file({"x": x.float(), "text": text.float(), "t": t.float(), "probe": probe.float(),
               "rope_offset": torch.tensor(offset, dtype=torch.int64)}, os.path.join(d, "inputs.safetensors"))
    expected = {"v": v.detach()}
    for k, p in model.named_parameters():
        expected[k] = p.grad.detach() if p.grad is not None else torch.zeros_like(p)
    save_file({k: e.contiguous() for k, e in expected.items()}, os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "model.ini"), "w") as f:
        f.write(f"# written by tools/reference_dit.py\n[model]\nwidth = {cfg['width']}\ndepth = {cfg['depth']}\n"
                f"head_dim = {cfg['head_dim']}\nmlp_ratio = {cfg['mlp_ratio']}\npatch = {cfg['patch']}\n"
                f"time_patch = {cfg['time_patch']}\nregisters = {cfg['registers']}\nin_channels = {cfg['in_channels']}\n"
                f"text_dim = {cfg['text_dim']}\nresidual_v = {str(cfg['residual_v']).lower()}\n"
                f"bias_and_norm_affine = {str(cfg['affine']).lower()}\nrope_layout = {cfg['rope_layout']}\n")
    print(f"{d}: {sum(p.numel() for p in model.parameters())} parameters, |v| = {v.norm().item():.6f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    base = dict(width=32, depth=3, head_dim=16, mlp_ratio=4, patch=2, time_patch=2, registers=4, in_channels=4,
                text_dim=24, residual_v=True)
    make_fixture(args.out, "dit_aligned", dict(base, affine=False, rope_layout="aligned"),
                 (2, 4, 4, 4, 6), 6, (3, 5, 7), seed=1)
    make_fixture(args.out, "dit_seed", dict(base, affine=True, rope_layout="seed"),
                 (2, 4, 4, 4, 6), 6, (1, 0, 2), seed=2)


if __name__ == "__main__":
    main()
