#!/usr/bin/env bash
# bf16 training tracks fp32: the quick-start model trained for 200 steps on one GPU in fp32 and in bf16
# (same data, seed and draws), loss by loss. Run on the GPU machine after a build of build-gpu/.
#   bash bench/bf16_tracking.sh
# Tolerance (docs/gpu.md): every step's bf16 loss within 3% of the fp32 loss, and the mean of the last 50
# steps within 1%. bf16 rounds every activation to 8 bits of mantissa, so per-step losses wander a little;
# what must not happen is a drift (the bf16 run learning less or diverging).
set -uo pipefail
if [ -f .device/deps.sh ]; then source .device/deps.sh > /dev/null 2>&1; fi
out=/tmp/openvid-bf16
rm -rf "$out"; mkdir -p "$out"
for p in fp32 bf16; do
  mpiexec -n 1 build-gpu/openvid_mpi --config config/quickstart.ini --batch_size 8 --max_steps 200 --num_epochs 1000 --log_every 1 \
    --evaluate_every 0 --write_checkpoints false --device cuda --precision "$p" --run_dir "$out/$p" > "$out/$p.log" 2>&1 ||
    { echo "$p run failed:"; tail -20 "$out/$p.log"; exit 1; }
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
runs = {p: [json.loads(l) for l in open(f"{out}/{p}/quickstart/metrics.jsonl")] for p in ("fp32", "bf16")}
a, b = [r["loss"] for r in runs["fp32"]], [r["loss"] for r in runs["bf16"]]
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
tail = abs(sum(b[-50:]) / 50 - sum(a[-50:]) / 50) / (sum(a[-50:]) / 50)
print(f"{len(a)} steps: loss fp32 {a[0]:.4f} -> {a[-1]:.4f}, bf16 {b[0]:.4f} -> {b[-1]:.4f}")
print(f"largest per-step relative difference {worst:.2e} (tolerance 3e-2): {'OK' if worst <= 3e-2 else 'ABOVE'}")
print(f"mean of the last 50 steps, relative difference {tail:.2e} (tolerance 1e-2): {'OK' if tail <= 1e-2 else 'ABOVE'}")
sys.exit(0 if worst <= 3e-2 and tail <= 1e-2 else 1)
PY
