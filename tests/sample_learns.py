"""openvid_sample on the quick start's trained model: the same seed gives the same latents, another seed
others, and the samples show what the model learned from the text. The quick start's synthetic data puts
sample i in class i % 8, its latent the class's per-channel mean plus noise; sampling with the text states
of one sample of each class must give latents whose channel means lie nearest the right class's mean, with
and without classifier-free guidance.

And sampling with context parallelism over 2 MPI ranks gives the single process's latents.

    python sample_learns.py RUN_DIR OPENVID_SAMPLE WORK_DIR MPIEXEC
"""
import glob
import subprocess
import sys

import h5py
import torch
from safetensors.torch import load_file, save_file

run, sample_bin, work, mpiexec = sys.argv[1:5]
classes = 8
with h5py.File(glob.glob(f"{run}/fake_data/*.h5")[0]) as h:
    bucket = h["buckets"][list(h["buckets"].keys())[0]]
    latents = torch.tensor(bucket["latents"][:]).float()  # [N, C, T, H, W]
    text = torch.tensor(bucket["text"][:]).float()  # [N, Lc, Dc]
frames, height, width = latents.shape[2:]
means = torch.stack([latents[k::classes].mean(dim=(0, 2, 3, 4)) for k in range(classes)])  # [classes, C]
save_file({"text_states": text[:classes].contiguous()}, f"{work}/text.safetensors")


def sample(guidance, seed, name, ranks=0, extra=()):
    out = f"{work}/{name}.safetensors"
    launch = [mpiexec, "--oversubscribe", "-n", str(ranks)] if ranks else []
    done = subprocess.run(launch + [sample_bin, "--config", f"{run}/config.ini", "--weights", f"{run}/model.safetensors", "--text_states",
                           f"{work}/text.safetensors", "--shape", f"{frames}x{height}x{width}", "--steps", "20", "--guidance",
                           str(guidance), "--seed", str(seed), "--out", out, *extra], check=True, stdout=subprocess.PIPE, text=True)
    print(done.stdout, end="")
    # Not a terminal: whole progress lines (a Slurm log must not run them together with carriage returns).
    progress = [line for line in done.stdout.split("\n") if "sampling: step" in line]
    if "\r" in done.stdout or not progress or any(not line.startswith("sampling: step ") for line in progress) or progress[-1] != "sampling: step 20/20":
        print(f"FAIL: progress into a pipe is not whole lines: {progress!r}")
        sys.exit(1)
    return load_file(out)["latents"]


failed = False
a, b, c = sample(3, 1, "g3_s1"), sample(3, 1, "g3_s1_again"), sample(3, 2, "g3_s2")
if not torch.equal(a, b):
    print("FAIL: the same seed gave different latents"); failed = True
if torch.equal(a, c):
    print("FAIL: another seed gave the same latents"); failed = True
for guidance, x in ((3, a), (1, sample(1, 1, "g1_s1"))):
    nearest = torch.cdist(x.mean(dim=(2, 3, 4)), means).argmin(dim=1)
    right = int((nearest == torch.arange(classes)).sum())
    print(f"guidance {guidance}: {right} of {classes} samples nearest their class's mean (nearest: {nearest.tolist()})")
    if right < classes - 1:
        print(f"FAIL: with guidance {guidance} the samples do not follow their text"); failed = True
batched = sample(3, 1, "g3_s1_batch3", extra=("--batch_size", "3"))
err = (batched - a).abs().max().item()
print(f"in batches of 3: largest difference from one batch {err:.2e}")
if not err < 1e-4:
    print("FAIL: sampling in batches changes the samples beyond rounding"); failed = True
cp = sample(3, 1, "g3_s1_cp2", ranks=2)
err = (cp - a).abs().max().item()
print(f"context parallel over 2 ranks: largest difference from one process {err:.2e}")
if not err < 1e-4:
    print("FAIL: sampling over 2 context-parallel ranks differs from one process"); failed = True
sys.exit(1 if failed else 0)
