#!/usr/bin/env bash
# --sample_every: a run on 2 ranks writes latents for fixed held-out text states every N steps and at the end;
# the noise is the same each time (two identical runs write identical files; the model's progress is what
# changes them), and training goes on after each.
#   samples_during_training.sh MPIEXEC OPENVID_MPI CONFIG WORK PYTHON
set -u
mpiexec=$1 ovmpi=$2 config=$3 work=$4 py=$5
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
for run in a b; do
  timeout -k 5 120 "$mpiexec" --oversubscribe -n 2 "$ovmpi" --config "$config" --device cpu --run_dir "$work" --run_name "$run" \
    --max_steps 40 --evaluate_every 0 --sample_every 20 --sample_count 3 --sample_steps 5 > "$work/$run.log" 2>&1 ||
    { cat "$work/$run.log"; fail "run $run failed"; }
done
grep -q "^samples $work/a/samples/step_00000020.safetensors" "$work/a.log" || { cat "$work/a.log"; fail "no samples announced at step 20"; }
"$py" - "$work" <<'PY' || fail "the samples are not as expected"
import sys, numpy as np
from safetensors.numpy import load_file
w = sys.argv[1]
a20, a40, b40 = (load_file(f"{w}/{r}/samples/step_000000{s}.safetensors") for r, s in (("a", 20), ("a", 40), ("b", 40)))
assert a20["latents"].shape == (3, 16, 8, 16, 16), a20["latents"].shape
assert np.isfinite(a40["latents"]).all()
assert np.array_equal(a40["latents"], b40["latents"]), "two identical runs sampled different latents"
assert np.array_equal(a20["text_states"], a40["text_states"]) and np.array_equal(a20["sample_ids"], a40["sample_ids"])
assert not np.array_equal(a20["latents"], a40["latents"]), "the samples did not change as the model trained"
print("samples: step 20 and 40, identical across identical runs")
PY
echo "PASS: samples during training"
