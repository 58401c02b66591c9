#!/usr/bin/env python3
"""Writes a small openvid dataset with h5py alone, following docs/dataset.md (not openvid's writer), with
values given by formulas the C++ test recomputes:
  latents[i, c, t, h, w] = ((i*7 + c*3 + t*5 + h*11 + w*13) % 17 - 8) / 4
  text[i, l, d]          = ((i + l*3 + d*5) % 13 - 6) / 2
  captions[i]            = "h5py sample <i>"
Usage: write_h5py_dataset.py OUT_DIR"""
import json
import os
import sys

import h5py
import numpy as np

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
N, C, T, H, W, Lc, Dc = 6, 3, 4, 2, 3, 5, 7
i, c, t, h, w = np.meshgrid(*[np.arange(n) for n in (N, C, T, H, W)], indexing="ij")
latents = (((i * 7 + c * 3 + t * 5 + h * 11 + w * 13) % 17 - 8) / 4).astype(np.float16)
i, l, d = np.meshgrid(np.arange(N), np.arange(Lc), np.arange(Dc), indexing="ij")
text = (((i + l * 3 + d * 5) % 13 - 6) / 2).astype(np.float16)
with h5py.File(os.path.join(out, "part-a.h5"), "w") as f:
    f.attrs["format"] = "openvid-latents"
    f.attrs["format_version"] = 1
    f.attrs["latent_encoder"] = "formula"
    f.attrs["text_encoder"] = "formula"
    f.attrs["latent_scale"] = 1.0
    f.attrs["latent_shift"] = 0.0
    g = f.create_group("buckets/t4_h2_w3")
    g.attrs["frames"], g.attrs["height"], g.attrs["width"] = T, H, W
    g["latents"] = latents
    g["text"] = text
    g["captions"] = np.array([b"h5py sample %d" % k for k in range(N)], dtype="S40")
    g["source_ids"] = np.array([b"formula:%d" % k for k in range(N)], dtype="S16")
json.dump({"format": "openvid-latents", "format_version": 1, "latent_channels": C, "text_tokens": Lc, "text_dim": Dc,
           "caption_bytes": 40, "latent_encoder": "formula", "text_encoder": "formula", "latent_scale": 1.0,
           "latent_shift": 0.0,
           "buckets": [{"name": "t4_h2_w3", "frames": T, "height": H, "width": W, "count": N,
                        "shards": [{"file": "part-a.h5", "count": N}]}]},
          open(os.path.join(out, "dataset.json"), "w"), indent=1)
print("wrote", out)
