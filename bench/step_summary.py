#!/usr/bin/env python3
"""The table of bench/step_bench.sh: openvid's metrics.jsonl (per-step CUDA-event phase timings) beside
the PyTorch baseline's JSON, medians after --warmup steps.

    python3 bench/step_summary.py --out DIR --warmup 4 1024x16 2048x8 4096x4

MFU = model FLOPs per step (3 x forward, docs/model.md) / step time / the device's peak bf16 TFLOP/s.
The goal column is the speed issue's bar on any GPU: openvid's step at most the same-call baseline's / 1.15.
A baseline optimizer that took over twice the time per parameter of the call's other configurations is named
under the table (its step, and so the goal, are then too generous: compare with another call's baseline).
"""
import argparse
import json
import os
import statistics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--precisions", nargs="+", default=["bf16"], help="runs of other precisions are runs/<config>-<precision>")
    ap.add_argument("configs", nargs="+")
    a = ap.parse_args()
    base = {}
    tp = os.path.join(a.out, "torch.json")
    if os.path.exists(tp):
        t = json.load(open(tp))
        base = {r["config"]: r for r in t["results"]}
    per_param = {c: b["optimizer_ms"] / b["parameters"] for c, b in base.items() if b.get("parameters")}
    typical = statistics.median(per_param.values()) if len(per_param) > 1 else None
    outliers = {c for c, v in per_param.items() if typical and v > 2 * typical}
    device = open(os.path.join(a.out, "device.txt")).read().strip() if os.path.exists(os.path.join(a.out, "device.txt")) else "?"
    commit = open(os.path.join(a.out, "commit.txt")).read().strip() if os.path.exists(os.path.join(a.out, "commit.txt")) else "?"
    print(f"device: {device}; openvid commit {commit}; medians of steps after the first {a.warmup}\n")
    print("| config | openvid step ms | fwd+bwd ms | optimizer ms | tokens/s | MFU | peak GiB | baseline step ms | fwd+bwd | opt | "
          "baseline MFU | baseline GiB | step ratio | goal: baseline / 1.15 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cfg in a.configs:
        path = os.path.join(a.out, "runs", cfg, "metrics.jsonl")
        row = [cfg]
        ours = None
        if os.path.exists(path):
            rows = [json.loads(l) for l in open(path)][a.warmup:]
            if rows:
                med = lambda k: statistics.median(r["phase_ms"][k] for r in rows)  # noqa: E731
                ours = med("step")
                mfu = statistics.median(r.get("mfu", 0) for r in rows)
                row += [f"{ours:.1f}", f"{med('forward_backward'):.1f}", f"{med('optimizer'):.2f}",
                        f"{statistics.median(r['tokens_per_second'] for r in rows):.0f}", f"{100 * mfu:.1f}%",
                        f"{max(r['peak_memory_gb'] for r in rows) * 1e9 / 2**30:.1f}"]
        if ours is None:
            row += ["failed"] + [""] * 5
        b = base.get(cfg)
        if b:
            peak = 989.4
            row += [f"{b['step_ms']:.1f}", f"{b['forward_backward_ms']:.1f}", f"{b['optimizer_ms']:.2f}",
                    f"{100 * b['tflops'] / peak:.1f}%", f"{b['peak_memory_gib']:.1f}",
                    f"{ours / b['step_ms']:.2f}" if ours else ""]
            goal = b["step_ms"] / 1.15
            verdict = "met" if ours and ours <= goal else f"short by {ours - goal:.1f} ms" if ours else ""
            row += [f"{goal:.1f}: {verdict}" + (" (outlier baseline, see below)" if cfg in outliers else "")]
        else:
            row += [""] * 7
        print("| " + " | ".join(row) + " |")
    if any(p != "bf16" for p in a.precisions):
        float8_table(a, base)
    for c in sorted(outliers):
        v = per_param[c]
        print(f"\nnote: the baseline's {c} optimizer took {base[c]['optimizer_ms']:.2f} ms, {v / typical:.1f}x the time per "
              "parameter of this call's median: an outlier; its step ratio and goal are too generous")


def run_medians(out, name, warmup):
    """(step ms, peak GiB) medians of runs/<name>, or None."""
    path = os.path.join(out, "runs", name, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rows = [json.loads(l) for l in open(path)][warmup:]
    if not rows:
        return None
    return (statistics.median(r["phase_ms"]["step"] for r in rows), max(r["peak_memory_gb"] for r in rows) * 1e9 / 2**30)


# The float8 issue's bars: the step against the same call's baseline (compiled PyTorch bf16) by model width,
# and never slower than openvid's own bf16 where no bar is set.
FLOAT8_BARS = {4096: 1.30, 2048: 1.20}


def float8_table(a, base):
    print("\n| config | precision | step ms | speedup over openvid bf16 | baseline step ms | speedup over baseline | goal | peak GiB | "
          "bf16 peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cfg in a.configs:
        bf16 = run_medians(a.out, cfg, a.warmup)
        b = base.get(cfg)
        for p in a.precisions:
            if p == "bf16":
                continue
            got = run_medians(a.out, f"{cfg}-{p}", a.warmup)
            if got is None:
                print(f"| {cfg} | {p} | failed | | | | | | |")
                continue
            step, mem = got
            width = int(cfg.split("x")[0])
            bar = FLOAT8_BARS.get(width)
            if bar and b:
                goal = f"baseline / {bar:.2f} = {b['step_ms'] / bar:.1f} ms: " + ("met" if step <= b["step_ms"] / bar else "not met")
            elif bf16:
                goal = f"<= openvid bf16 {bf16[0]:.1f} ms: " + ("met" if step <= bf16[0] else "not met")
            else:
                goal = ""
            if bf16 and mem > bf16[1]:
                goal += f"; memory above bf16's by {mem - bf16[1]:.2f} GiB"
            print(f"| {cfg} | {p} | {step:.1f} | {bf16[0] / step:.3f}x | " if bf16 else f"| {cfg} | {p} | {step:.1f} | | ", end="")
            print((f"{b['step_ms']:.1f} | {b['step_ms'] / step:.3f}x | " if b else " | | ") + f"{goal} | {mem:.1f} | " +
                  (f"{bf16[1]:.1f} |" if bf16 else " |"))


if __name__ == "__main__":
    main()
