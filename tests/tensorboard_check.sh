#!/usr/bin/env bash
# TensorBoard files of a run, read back with the `tensorboard` Python package: the scalars are metrics.jsonl's
# numbers (float32), and a run resumed from an earlier checkpoint shows each step once (the events of the
# steps it redoes are dropped, as metrics.jsonl's rows are).
#   tensorboard_check.sh MPIEXEC OPENVID_MPI CONFIG WORK PYTHON
set -u
mpiexec=$1 ovmpi=$2 config=$3 work=$4 py=$5
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
run() { timeout -k 5 120 "$mpiexec" --oversubscribe -n 2 "$ovmpi" --config "$config" --device cpu --run_dir "$work" --max_steps 40 \
          --log_every 10 --evaluate_every 20 --checkpoint_every 20 --keep_checkpoints 5 "$@"; }
run > "$work/first.log" 2>&1 || { cat "$work/first.log"; fail "the run failed"; }
run --resume "$work/quickstart/checkpoints/step_00000020" > "$work/resumed.log" 2>&1 || { cat "$work/resumed.log"; fail "the resumed run failed"; }
"$py" - "$work/quickstart" <<'PY' || fail "TensorBoard does not show the run's metrics"
import json, sys, numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
run = sys.argv[1]
ea = EventAccumulator(f"{run}/tensorboard", size_guidance={"scalars": 0}); ea.Reload()
rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
for tag, key in [("train/loss", "loss"), ("train/lr", "lr"), ("train/grad_norm", "grad_norm"), ("eval/loss", "eval_loss"),
                 ("perf/samples_per_second", "samples_per_second")]:
    got = [(e.step, e.value) for e in ea.Scalars(tag)]
    want = [(r["step"], np.float32(r[key])) for r in rows if key in r]
    assert [s for s, _ in got] == [s for s, _ in want], (tag, got, want)
    if tag != "perf/samples_per_second":  # a timing: the resumed run measures it anew
        assert all(np.float32(g) == w for (_, g), (_, w) in zip(got, want)), (tag, got, want)
print("tensorboard: steps", [e.step for e in ea.Scalars("train/loss")], "tags", len(ea.Tags()["scalars"]))
PY
echo "PASS: TensorBoard shows metrics.jsonl's numbers, each step once after a resume"
