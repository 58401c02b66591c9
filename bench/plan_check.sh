#!/usr/bin/env bash
# The dry run's memory per rank against the measured peak on one GPU (world 1): for each WIDTHxDEPTH
# (default: the step bench's 1024x16 2048x8 4096x4, batch 2 x latent 16x64x64 = 8,208 tokens, text 512 x
# 4096, bf16), `openvid_mpi --dry_run` then STEPS (default 4) real steps; prints the planned total, the
# measured peak (the CUDA caching allocator's, metrics.jsonl) and their ratio (the planning issue's bar:
# within 5%). RECOMPUTE (default 0) sets --recompute_every. Run on the GPU machine from the repository root
# after a build of build-gpu/ (bench/gpu_check.sh or bench/step_bench.sh make one).
set -uo pipefail
if [ -f .device/deps.sh ]; then source .device/deps.sh > /dev/null 2>&1; fi
work=/tmp/openvid-plan
rm -rf "$work"; mkdir -p "$work"
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(1024x16 2048x8 4096x4)
memory=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)  # MiB
echo "| config | recompute_every | planned GB | measured peak GB | planned / measured |"
echo "|---|---|---|---|---|"
for cfg in "${configs[@]}"; do
  width=${cfg%x*} depth=${cfg#*x}
  args=(--dataset fake --fake_samples 8 --fake_latent_shape 16x64x64 --fake_text_tokens 512 --model_text_dim 4096 --model_width "$width"
        --model_depth "$depth" --model_head_dim 128 --batch_size 2 --recompute_every "${RECOMPUTE:-0}" --device cuda --precision bf16)
  planned=$(mpiexec -n 1 build-gpu/openvid_mpi "${args[@]}" --dry_run --plan_gpu_memory "$((memory * 1048576 / 1000000000))" 2>&1 |
            tee "$work/$cfg.plan" | grep '^memory per rank' | sed -E 's/.*: peak ([0-9.]+) GB of .*/\1/')
  mpiexec -n 1 build-gpu/openvid_mpi "${args[@]}" --max_steps "${STEPS:-4}" --num_epochs 100 --warmup_steps 1 --log_every 1 --evaluate_every 0 \
    --write_checkpoints false --run_dir "$work/runs" --run_name "$cfg" > "$work/$cfg.log" 2>&1 || { echo "| $cfg | failed: $(tail -1 "$work/$cfg.log") |"; continue; }
  measured=$(python3 -c 'import json, sys; print(max(json.loads(l)["peak_memory_gb"] for l in open(sys.argv[1])))' "$work/runs/$cfg/metrics.jsonl")
  python3 -c 'import sys; p, m = float(sys.argv[2]), float(sys.argv[3]); print(f"| {sys.argv[1]} | {sys.argv[4]} | {p:.2f} | {m:.2f} | {p / m:.3f} |")' \
    "$cfg" "$planned" "$measured" "${RECOMPUTE:-0}"
  if [ -n "${OUT:-}" ]; then cp "$work/$cfg.plan" "$OUT/plan_$cfg.txt"; fi
done
