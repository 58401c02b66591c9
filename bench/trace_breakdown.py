#!/usr/bin/env python3
"""Where the GPU's time goes, from a Kineto trace written by `openvid_mpi --profile_dir DIR`.

    python3 bench/trace_breakdown.py DIR/kineto-rank0.json [--top 12] [--by_op 30]

Classifies every GPU activity (kernels, memory copies and sets) of the traced steps by name:
  matmul          cuBLAS / CUTLASS GEMMs (gemm, nvjet, xmma, cutlass ... unless attention)
  attention       flash / cuDNN / memory-efficient attention, forward and backward
  float8 casts    openvid's float8 amax and cast kernels (ov::kernels::amax_kernel, cast_kernel; --precision fp8)
  norm/elementwise  everything else computed: ATen pointwise and reduction kernels, openvid's fused kernels
  optimizer       the fused AdamW kernel (or ATen's foreach/multi-tensor kernels)
  communication   NCCL kernels
  copies          memcpy / memset activities and copy / cat kernels
and reports milliseconds per step and the share of the step, plus GPU idle time (step span minus the
union of all activity intervals), the number of launches, and the most expensive kernels. The steps are
the "step N" ranges the trainer records; their GPU span runs from the first activity a step launched to
the first activity of the next. Each step's own line (span, busy, idle and the number of gaps between
activities) tells the first traced step, whose start the profiler leaves undrained, from the steady state.
--by_op N lists the N largest (host operator, kernel) pairs: the innermost host operator (aten::mm, an
autograd node, ...) around each launch, so a kernel is traced back to the code that launched it.
"""
import bisect
import argparse
import collections
import json
import re
import sys

CATEGORIES = ["matmul", "attention", "float8 casts", "norm/elementwise", "optimizer", "communication", "copies"]


def classify(name: str, cat: str) -> str:
    n = name.lower()
    if cat in ("gpu_memcpy", "gpu_memset") or n.startswith("memcpy") or n.startswith("memset"):
        return "copies"
    if "nccl" in n:
        return "communication"
    if re.search(r"flash|fmha|sdpa|attention|attn_", n):
        return "attention"
    if re.search(r"adamw|multi_tensor|fused_adam|foreach", n):
        return "optimizer"
    if re.search(r"ov::kernels::.*(amax_kernel|cast_kernel)", n):
        return "float8 casts"
    if re.search(r"gemm|nvjet|xmma|cutlass|cublas|splitk", n):
        return "matmul"
    if re.search(r"copy_kernel|catarray|cat_|direct_copy|unrolled_elementwise_kernel<.*copy", n):
        return "copies"
    return "norm/elementwise"


def union_length(intervals):
    total, end = 0.0, -1e300
    for b, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(b, end)
        end = e
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=25, help="most expensive kernels to list")
    ap.add_argument("--label", default="", help="a title for the table")
    ap.add_argument("--by_op", type=int, default=0, help="list the N largest (host operator, kernel) pairs")
    args = ap.parse_args()
    events = json.load(open(args.trace))["traceEvents"]
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    steps = sorted((e for e in events if e.get("cat") == "user_annotation" and re.fullmatch(r"step \d+", e.get("name", ""))),
                   key=lambda e: e["ts"])
    if not gpu:
        sys.exit(f"{args.trace}: no GPU activities (was the run on a GPU, with --profile_dir?)")
    # Each GPU activity belongs to the step whose host range launched it (its correlation's CPU launch time).
    launches = {e["args"]["correlation"]: e["ts"] for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    step_starts = [s["ts"] for s in steps] or [min(e["ts"] for e in gpu)]

    def step_of(e):
        t = launches.get(e.get("args", {}).get("correlation"), e["ts"])
        k = 0
        while k + 1 < len(step_starts) and t >= step_starts[k + 1]:
            k += 1
        return k

    by_step = collections.defaultdict(list)
    for e in gpu:
        by_step[step_of(e)].append(e)
    n_steps = len(by_step)
    ordered = sorted(by_step)
    spans, busy, gaps = [], [], []
    for i, k in enumerate(ordered):
        evs = by_step[k]
        begin = min(e["ts"] for e in evs)
        end = (min(e["ts"] for e in by_step[ordered[i + 1]]) if i + 1 < len(ordered)
               else max(e["ts"] + e["dur"] for e in evs))
        spans.append(end - begin)
        busy.append(union_length([(e["ts"], e["ts"] + e["dur"]) for e in evs]))
        end_so_far, n_gaps = begin, 0
        for e in sorted(evs, key=lambda e: e["ts"]):
            n_gaps += e["ts"] > end_so_far
            end_so_far = max(end_so_far, e["ts"] + e["dur"])
        gaps.append(n_gaps)
    per_cat = collections.Counter()
    count = collections.Counter()
    per_kernel = collections.Counter()
    kernel_count = collections.Counter()
    for e in gpu:
        c = classify(e["name"], e["cat"])
        per_cat[c] += e["dur"]
        count[c] += 1
        short = re.sub(r"<.*", "", e["name"])[:90]
        per_kernel[short] += e["dur"]
        kernel_count[short] += 1
    step_ms = sum(spans) / n_steps / 1000
    idle_ms = (sum(spans) - sum(busy)) / n_steps / 1000
    title = args.label or args.trace
    print(f"### GPU time per step: {title}")
    print(f"{n_steps} traced step(s), GPU span {step_ms:.1f} ms per step, {len(gpu) / n_steps:.0f} activities per step\n")
    print("| category | ms / step | share of step | launches / step |")
    print("|---|---|---|---|")
    for c in CATEGORIES:
        print(f"| {c} | {per_cat[c] / n_steps / 1000:.2f} | {100 * per_cat[c] / sum(spans):.1f}% | {count[c] / n_steps:.0f} |")
    print(f"| GPU idle | {idle_ms:.2f} | {100 * idle_ms / step_ms:.1f}% | |")
    print("\nPer traced step: " + "; ".join(f"span {sp / 1000:.1f} ms, busy {b / 1000:.1f}, idle {(sp - b) / 1000:.2f} in {g} gaps"
                                          for sp, b, g in zip(spans, busy, gaps)))
    print(f"\nMost expensive kernels (ms per step, launches per step):")
    for name, d in per_kernel.most_common(args.top):
        print(f"  {d / n_steps / 1000:8.2f}  {kernel_count[name] / n_steps:5.0f}  {classify(name, 'kernel'):16s} {name}")
    if args.by_op:
        print_by_op(events, gpu, n_steps, args.by_op)


def print_by_op(events, gpu, n_steps, top):
    """The innermost host operator around each activity's launch, per thread."""
    ops = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "cpu_op" and e.get("ph") == "X":
            ops[e["tid"]].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    starts = {}
    for tid in ops:
        ops[tid].sort()
        starts[tid] = [o[0] for o in ops[tid]]
    launch = {e["args"]["correlation"]: e for e in events
              if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}

    def owner(r):
        lst, best = ops.get(r["tid"], []), None
        i = bisect.bisect_right(starts.get(r["tid"], []), r["ts"])
        for b, e, name in reversed(lst[max(0, i - 400):i]):  # the candidates that start before the launch
            if b <= r["ts"] <= e and (best is None or e - b < best[0]):
                best = (e - b, name)
        return best[1] if best else "(no host operator)"

    total, count = collections.Counter(), collections.Counter()
    for e in gpu:
        r = launch.get(e.get("args", {}).get("correlation"))
        key = (owner(r) if r else "(no launch)", re.sub(r"<.*", "", e["name"])[:60])
        total[key] += e["dur"]
        count[key] += 1
    print(f"\nLargest (host operator, kernel) pairs (ms per step, launches per step):")
    for (op, kernel), d in total.most_common(top):
        print(f"  {d / n_steps / 1000:8.3f}  {count[(op, kernel)] / n_steps:5.0f}  {op[:48]:48s} {kernel}")


if __name__ == "__main__":
    main()
