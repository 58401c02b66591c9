#!/usr/bin/env python3
"""Plots a run's metrics.jsonl (written by openvid_mpi) as a PNG: training and evaluation loss, and
throughput, over steps.

    python3 tools/plot_metrics.py runs/quickstart/metrics.jsonl [-o runs/quickstart/metrics.png]

Needs matplotlib (pip install matplotlib).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="plot openvid metrics.jsonl")
    ap.add_argument("metrics")
    ap.add_argument("-o", "--out", help="PNG to write (default: next to the metrics)")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.metrics) if line.strip()]
    if not rows:
        raise SystemExit(f"{args.metrics} holds no metrics")
    steps = [r["step"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    ax1.plot(steps, [r["loss"] for r in rows], label="training loss")
    ev = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if ev:
        ax1.plot(*zip(*ev), "o-", label="held-out loss")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(steps, [r["samples_per_second"] for r in rows], label="samples/s")
    ax2.set_ylabel("samples/s")
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3)
    ax3 = ax2.twinx()
    ax3.plot(steps, [100 * r["data_wait_fraction"] for r in rows], color="tab:red", alpha=0.6, label="data wait %")
    ax3.set_ylabel("data wait (% of step time)")
    fig.suptitle(os.path.dirname(os.path.abspath(args.metrics)))
    fig.tight_layout()
    out = args.out or os.path.join(os.path.dirname(args.metrics), "metrics.png")
    fig.savefig(out, dpi=100)
    print("wrote", out)


if __name__ == "__main__":
    main()
