#!/usr/bin/env bash
# The quick start learns from the text: its held-out loss ends well below that of the same run without
# text (--caption_dropout 1: every caption replaced by zeros, an unconditional model).
#   quickstart_learns.sh MPIEXEC OPENVID_MPI CONFIG RUNS_DIR     (RUNS_DIR/quickstart: the quick start's run)
set -u
mpiexec=$1 ovmpi=$2 config=$3 runs=$4
conditional=$runs/quickstart/quickstart/metrics.jsonl
[ -f "$conditional" ] || { echo "FAIL: no quick-start metrics at $conditional"; exit 1; }
timeout -k 5 240 "$mpiexec" --oversubscribe -n 2 "$ovmpi" --config "$config" --device cpu --run_dir "$runs/unconditional" \
  --caption_dropout 1 > "$runs/unconditional.log" 2>&1 || { cat "$runs/unconditional.log"; echo "FAIL: the run without text failed"; exit 1; }
python3 - "$conditional" "$runs/unconditional/quickstart/metrics.jsonl" <<'PY'
import json, sys
def final_eval(path):
    rows = [json.loads(l) for l in open(path)]
    return [r["eval_loss"] for r in rows if "eval_loss" in r][-1], rows[0]["loss"]
with_text, first = final_eval(sys.argv[1])
without_text, _ = final_eval(sys.argv[2])
print(f"first logged loss {first:.3f}; final held-out loss with text {with_text:.3f}, without text {without_text:.3f}")
if not with_text < 0.9 * without_text:
    sys.exit("FAIL: the quick start does not learn from the text (held-out loss not 10% below the unconditional run's)")
print("PASS")
PY
