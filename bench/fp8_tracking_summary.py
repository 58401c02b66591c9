"""The summary of bench/fp8_tracking.sh: each run against bf16 from the same seed, and the float8 issue's bars.

Usage: fp8_tracking_summary.py OUT NAME... where OUT/NAME/track/metrics.jsonl (or OUT/NAME.jsonl) holds a run's metrics and NAME is
RUN (one seed) or RUN-sSEED; bf16_seed is the control from another seed (compared with the first seed's bf16).
Exit status 0 when every fp8 run meets the bars (for several seeds: the mean over seeds of the paired differences;
a kind compared over the seeds it was run from). With several seeds each bar's verdict also says whether the mean
is inside it by two standard errors (then the seeds show it) or only by its value.
"""
import json
import math
import os
import statistics
import sys

BAR_TAIL, BAR_EVAL = 5e-3, 1e-2


def load(out, name):
    flat = f"{out}/{name}.jsonl"  # a committed copy (bench/results/fp8_tracking_*/NAME.jsonl)
    rows = [json.loads(l) for l in open(flat if os.path.exists(flat) else f"{out}/{name}/track/metrics.jsonl")]
    return {"loss": [r["loss"] for r in rows if "loss" in r],
            "eval": [r["eval_loss"] for r in rows if r.get("eval_loss") is not None],
            "skipped": max((r.get("skipped_steps", 0) for r in rows), default=0)}


def mean(xs):
    return sum(xs) / len(xs)


def compare(name, b, a, n):
    """b against a (bf16 from the same seed): relative differences of the last-n mean and the final eval loss."""
    tail = mean(b["loss"][-n:]) / mean(a["loss"][-n:]) - 1
    ev = b["eval"][-1] / a["eval"][-1] - 1 if a["eval"] and b["eval"] else float("nan")
    part = next((i for i, (x, y) in enumerate(zip(a["loss"], b["loss"])) if x != y), None)
    windows = " ".join(f"{100 * (mean(b['loss'][w:w + 100]) / mean(a['loss'][w:w + 100]) - 1):+.2f}" for w in range(0, len(a["loss"]) - 99, 100))
    print(f"{name}: mean of the last {n} losses {mean(b['loss'][-n:]):.5f} ({100 * tail:+.2f}% from bf16); final held-out eval "
          f"{b['eval'][-1] if b['eval'] else float('nan'):.5f} ({100 * ev:+.2f}%); first logged loss that differs: step {part}; "
          f"100-step windows, % from bf16: {windows}")
    return tail, ev


def main():
    out, names = sys.argv[1], sys.argv[2:]
    runs = {n: load(out, n) for n in names}
    split = lambda n: (n.rsplit("-s", 1)[0], n.rsplit("-s", 1)[1]) if "-s" in n else (n, "")
    seeds = sorted({split(n)[1] for n in names if n != "bf16_seed"})
    kinds = [k for k in dict.fromkeys(split(n)[0] for n in names) if k not in ("bf16", "bf16_seed")]
    base = {s: runs["bf16" + (f"-s{s}" if s else "")] for s in seeds}
    n = min(100, min(len(r["loss"]) for r in base.values()))
    for s, a in base.items():
        print(f"bf16{' seed ' + s if s else ''}: {len(a['loss'])} steps, loss {a['loss'][0]:.4f} -> {a['loss'][-1]:.4f}, "
              f"mean of the last {n} {mean(a['loss'][-n:]):.5f}, held-out eval {[round(e, 5) for e in a['eval']]}")
    ok = True
    for kind in kinds:
        diffs = []
        for s in seeds:
            name = kind + (f"-s{s}" if s else "")
            if name not in runs:
                continue
            tail, ev = compare(kind + (f" seed {s}" if s else ""), runs[name], base[s], n)
            diffs.append((tail, ev, runs[name]))
        tails, evs = [d[0] for d in diffs], [d[1] for d in diffs]
        mt, me = mean(tails), mean(evs)
        several = len(diffs) > 1
        se = lambda xs: statistics.stdev(xs) / math.sqrt(len(xs)) if several else 0.0
        if several:
            print(f"{kind} over {len(diffs)} seeds: last-{n} mean {100 * mt:+.2f}% +- {100 * se(tails):.2f}% (standard error), "
                  f"final eval {100 * me:+.2f}% +- {100 * se(evs):.2f}%")
        if kind.startswith("fp8"):
            finite = all(all(x is not None and math.isfinite(x) for x in d[2]["loss"]) and d[2]["skipped"] == 0 for d in diffs)
            good = finite and abs(mt) <= BAR_TAIL and abs(me) <= BAR_EVAL
            ok = ok and good
            verdict = lambda m, e, bar: "ABOVE" if abs(m) > bar else "OK" if not several or abs(m) + 2 * e <= bar else "OK by the mean, not by 2 standard errors"
            print(f"  {kind} bars (every loss finite; last-{n} mean within 0.5%, final eval within 1%"
                  f"{', means over seeds' if several else ''}): finite {finite}, "
                  f"{verdict(mt, se(tails), BAR_TAIL)}, {verdict(me, se(evs), BAR_EVAL)}")
    if "bf16_seed" in runs:
        compare("bf16 from another seed (control)", runs["bf16_seed"], base[seeds[0]], n)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
