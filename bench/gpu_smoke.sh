#!/usr/bin/env bash
# GPU smoke run (after bench/gpu_check.sh built build-gpu/): the quick start on one GPU with the NCCL
# backend in fp32 and in bf16, against the same 10 steps on the CPU (MPI backend). The global batch is the
# quick start's (8): one rank takes all of it. Prints per-step losses, the largest fp32 relative
# difference (goal: <= 1e-4) and the median step times. Logs go to ${OUT:-/tmp/openvid-gpu}.
set -uo pipefail
out=${OUT:-/tmp/openvid-gpu}
mkdir -p "$out"
if [ -f .device/deps.sh ]; then source .device/deps.sh > /dev/null 2>&1; fi
common=(--config config/quickstart.ini --batch_size 8 --max_steps 10 --warmup_steps 1 --log_every 1 --evaluate_every 0)
run() {  # name, extra options
  local name=$1; shift
  rm -rf "$out/runs_$name"
  mpiexec -n 1 build-gpu/openvid_mpi "${common[@]}" --run_dir "$out/runs_$name" "$@" > "$out/$name.log" 2>&1 \
    || { echo "$name failed:"; tail -20 "$out/$name.log"; return 1; }
}
run cpu_fp32 --device cpu --backend mpi --precision fp32
run gpu_fp32 --device cuda --backend nccl --precision fp32
run gpu_bf16 --device cuda --backend nccl --precision bf16
python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
runs = {n: [json.loads(l) for l in open(f"{out}/runs_{n}/quickstart/metrics.jsonl")] for n in ("cpu_fp32", "gpu_fp32", "gpu_bf16")}
print("step   cpu fp32    gpu fp32    gpu bf16")
for i in range(len(runs["cpu_fp32"])):
    print(f"{runs['cpu_fp32'][i]['step']:4d}  " + "  ".join(f"{runs[n][i]['loss']:.7f}" for n in runs))
rel = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(runs["gpu_fp32"], runs["cpu_fp32"]))
relbf = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(runs["gpu_bf16"], runs["cpu_fp32"]))
print(f"largest relative loss difference, GPU fp32 vs CPU fp32: {rel:.2e} (goal <= 1e-4): {'OK' if rel <= 1e-4 else 'ABOVE'}")
print(f"largest relative loss difference, GPU bf16 vs CPU fp32: {relbf:.2e}")
for n, rows in runs.items():
    print(f"{n}: median step time {statistics.median(r['step_seconds'] for r in rows[1:]) * 1000:.1f} ms "
          f"(steps 2-10), peak memory {rows[-1]['peak_memory_gb']:.3f} GB")
PY
