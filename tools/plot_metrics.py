#!/usr/bin/env python3
"""Plots a run's metrics.jsonl (written by openvid_mpi) as a PNG over steps: training and held-out loss,
learning rate, gradient norm, and throughput with MFU and the data wait.

    .venv/bin/python tools/plot_metrics.py runs/quickstart/metrics.jsonl [-o runs/quickstart/metrics.png]

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
    ap.add_argument("metrics")
    ap.add_argument("-o", "--out", help="PNG to write (default: metrics.png next to the metrics)")
    args = ap.parse_args()
    with open(args.metrics) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        sys.exit(f"{args.metrics} holds no metrics")
    fig, (ax_loss, ax_lr, ax_grad, ax_speed) = plt.subplots(4, 1, figsize=(8, 11), sharex=True)
    ax_loss.plot(*series(rows, "loss"), label="training loss")
    if any("eval_loss" in r for r in rows):
        ax_loss.plot(*series(rows, "eval_loss"), "o-", label="held-out loss")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_lr.plot(*series(rows, "lr"), color="tab:green")
    ax_lr.set_ylabel("learning rate")
    ax_grad.plot(*series(rows, "grad_norm"), color="tab:purple")
    ax_grad.set_ylabel("gradient norm")
    ax_speed.plot(*series(rows, "samples_per_second"), label="samples/s")
    ax_speed.set_ylabel("samples/s")
    ax_speed.set_xlabel("step")
    twin = ax_speed.twinx()
    if any("mfu" in r for r in rows):
        twin.plot(*series(rows, "mfu", 100), color="tab:orange", label="MFU %")
    twin.plot(*series(rows, "data_wait_fraction", 100), color="tab:red", alpha=0.6, label="data wait %")
    twin.set_ylabel("% (MFU, data wait of step time)")
    twin.legend(loc="lower right")
    for ax in (ax_loss, ax_lr, ax_grad, ax_speed):
        ax.grid(alpha=0.3)
    fig.suptitle(os.path.dirname(os.path.abspath(args.metrics)))
    fig.tight_layout()
    out = args.out or os.path.join(os.path.dirname(args.metrics), "metrics.png")
    fig.savefig(out, dpi=100)
    print("wrote", out)


if __name__ == "__main__":
    main()
