#!/usr/bin/env bash
# The deepest width-4096 DiT that trains on this GPU (batch 2, latent [16,16,64,64], text [512,4096], bf16),
# without activation recomputation, with every block recomputed, and with every other block recomputed.
# Run on the GPU machine after a build of build-gpu/ (bench/step_bench.sh makes one):
#   [MODES="0 1 2"] bash bench/memory_depth.sh [start_off start_all start_half]   (MODES: 0 none, 1 all, 2 every other)
# For each mode it trains 3 steps at a starting depth, then walks up while that succeeds, or down while it
# fails (at most MAX_TRIES runs per mode), and prints the deepest that trained with its peak memory.
set -uo pipefail
if [ -f .device/deps.sh ]; then source .device/deps.sh > /dev/null 2>&1; fi
out=/tmp/openvid-depth
rm -rf "$out"; mkdir -p "$out"
starts=("${1:-8}" "${2:-11}" "${3:-10}")
modes=(0 1 2)
names=("no recomputation" "every block recomputed" "every other block recomputed")
tries=${MAX_TRIES:-3}
trains() {  # depth recompute_every -> exit status; prints peak GiB
  local d=$1 r=$2 log="$out/d$1_r$2.log"
  timeout 240 mpiexec -n 1 build-gpu/openvid_mpi --dataset fake --fake_samples 4 --fake_latent_shape 16x64x64 --fake_text_tokens 512 \
    --batch_size 2 --num_epochs 1000 --max_steps 3 --warmup_steps 1 --log_every 1 --evaluate_every 0 --write_checkpoints false \
    --model_width 4096 --model_depth "$d" --model_head_dim 128 --recompute_every "$r" --run_dir "$out/runs" --run_name "d${d}_r${r}" \
    > "$log" 2>&1
  local rc=$?
  python3 -c 'import json, sys; print("%.1f" % (json.loads(open(sys.argv[1]).readlines()[-1])["peak_memory_gb"] * 1e9 / 2**30))' \
    "$out/runs/d${d}_r${r}/metrics.jsonl" 2>/dev/null
  return $rc
}
echo "| activations | deepest depth that trains | parameters | peak GiB | next depth |"
echo "|---|---|---|---|---|"
for i in ${MODES:-0 1 2}; do
  r=${modes[$i]} d=${starts[$i]} best="" best_mem="" failed=""
  for _ in $(seq "$tries"); do
    if mem=$(trains "$d" "$r"); then
      best=$d best_mem=$mem
      [ -n "$failed" ] && break
      d=$((d + 1))
    else
      failed=$d
      [ -n "$best" ] && break
      d=$((d - 1))
    fi
  done
  params=$(awk -v d="${best:-0}" 'BEGIN { D = 4096; printf "%.2fB", (d * 25 * D * D + 10 * D * D) / 1e9 }')
  echo "| ${names[$i]} | ${best:-none of the tried} | ~$params | ${best_mem:-} | ${failed:+$failed: out of memory} |"
done
