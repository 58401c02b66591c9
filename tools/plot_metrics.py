#!/usr/bin/env python3
"""Plots a run's metrics.jsonl (written by openvid_mpi) as a PNG over steps: training and held-out loss,
learning rate, gradient norm, and throughput with MFU and the data wait.

    .venv/bin/python tools/plot_metrics.py runs/quickstart/metrics.jsonl [-o runs/quickstart/metrics.png]
    .venv/bin/python tools/plot_metrics.py bf16/metrics.jsonl fp8/metrics.jsonl --labels bf16 fp8 -o both.png

Several runs are overlaid, each curve labelled (by --labels, else by the run's directory name).

tools/setup.sh installs matplotlib into .venv. A value written as null (a non-finite loss or norm) is a
gap in its curve.
"""
import argparse
import json
import math
import os
import sys

try:
    import matplotlib
except ImportError:
    sys.exit("plot_metrics.py needs matplotlib: run it with .venv/bin/python (tools/setup.sh installs it there)")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def series(rows, key, scale=1.0):
    """(steps, values) of the rows that have `key`; null becomes NaN (a gap)."""
    pts = [(r["step"], math.nan if r[key] is None else scale * r[key]) for r in rows if key in r]
    return ([s for s, _ in pts], [v for _, v in pts])


def main():
    ap = argparse.ArgumentParser(description="plot openvid metrics.jsonl")
    ap.add_argument("metrics", nargs="+", help="one run's metrics.jsonl, or several to overlay")
    ap.add_argument("--labels", nargs="+", help="one label per run (default: each run's directory name)")
    ap.add_argument("-o", "--out", help="PNG to write (default: metrics.png next to the first metrics)")
    args = ap.parse_args()
    if args.labels and len(args.labels) != len(args.metrics):
        sys.exit(f"--labels names {len(args.labels)} runs, but {len(args.metrics)} metrics files were given")
    runs = []
    for i, path in enumerate(args.metrics):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if not rows:
            sys.exit(f"{path} holds no metrics")
        label = args.labels[i] if args.labels else os.path.basename(os.path.dirname(os.path.abspath(path)))
        runs.append((label, rows))
    several = len(runs) > 1
    fig, (ax_loss, ax_lr, ax_grad, ax_speed) = plt.subplots(4, 1, figsize=(8, 11), sharex=True)
    twin = ax_speed.twinx()
    for label, rows in runs:
        tag = f"{label}: " if several else ""
        ax_loss.plot(*series(rows, "loss"), label=f"{tag}training loss", alpha=0.8 if several else 1.0)
        if any("eval_loss" in r for r in rows):
            ax_loss.plot(*series(rows, "eval_loss"), "o-", label=f"{tag}held-out loss")
        ax_lr.plot(*series(rows, "lr"), label=label)
        ax_grad.plot(*series(rows, "grad_norm"), label=label, alpha=0.8 if several else 1.0)
        ax_speed.plot(*series(rows, "samples_per_second"), label=f"{tag}samples/s")
        if any("mfu" in r for r in rows):
            twin.plot(*series(rows, "mfu", 100), linestyle="--", label=f"{tag}MFU %")
        twin.plot(*series(rows, "data_wait_fraction", 100), alpha=0.6, linestyle=":", label=f"{tag}data wait %")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_lr.set_ylabel("learning rate")
    ax_grad.set_ylabel("gradient norm")
    if several:
        ax_grad.legend()
    ax_speed.set_ylabel("samples/s")
    ax_speed.set_xlabel("step")
    twin.set_ylabel("% (MFU, data wait of step time)")
    twin.legend(loc="lower right")
    for ax in (ax_loss, ax_lr, ax_grad, ax_speed):
        ax.grid(alpha=0.3)
    fig.suptitle(" vs ".join(label for label, _ in runs) if several else os.path.dirname(os.path.abspath(args.metrics[0])))
    fig.tight_layout()
    out = args.out or os.path.join(os.path.dirname(args.metrics[0]), "metrics.png")
    fig.savefig(out, dpi=100)
    print("wrote", out)


if __name__ == "__main__":
    main()
