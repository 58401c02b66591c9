#!/usr/bin/env bash
# The training-step benchmark of one GPU (run on the GPU machine, from the repository root):
#   bash bench/step_bench.sh [WIDTHxDEPTH ...]      (default: 1024x16 2048x8 4096x4)
#   PRECISIONS="bf16 fp8" (the default) runs openvid in each precision (runs/<config>-fp8 beside runs/<config>) and
#   adds the float8 table (speedup over openvid's bf16 and over the baseline, against the float8 issue's bars);
#   the word fp8_gw_hp runs --precision fp8 --fp8_recipe tensorwise_with_gw_hp (weight gradients in bf16).
# Builds build-gpu/ (CUDA LibTorch, NCCL, kernels), then for each configuration trains openvid for
# $STEPS steps on a synthetic dataset (batch 2, latent [16,16,64,64] = 8,208 tokens with registers, text
# [512,4096], bf16 compute, head_dim 128), and runs the PyTorch baseline of the same math
# (bench/torch_baseline.py: FSDP2 bf16 parameters, per-block torch.compile, fused AdamW) in the same run.
# Prints one table (bench/step_summary.py): medians of CUDA-event timings after warm-up, tokens/s, MFU,
# peak memory, and openvid's ratio to the baseline. A Kineto trace of the middle configuration is turned
# into a breakdown table (bench/trace_breakdown.py). Work files go to /tmp/openvid-bench; the summary,
# the breakdown, the metrics and the baseline's JSON are also copied to $OUT when it is set.
# Knobs: STEPS (default 14), WARMUP (steps left out of the medians, default 4), BASELINE=0 skips PyTorch,
# OPENVID_EXTRA (more openvid_mpi options, e.g. "--recompute_every 1"), PROFILE (the configurations traced,
# space-separated; default the middle one), BASE_PROFILE=1 (also trace two extra baseline steps of every
# configuration and add their breakdowns).
set -uo pipefail
out=/tmp/openvid-bench
rm -rf "$out/runs" "$out"/profile_* "$out/torch.json" "$out/torch.log"  # nothing of an earlier call in this call's summary
mkdir -p "$out"
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(1024x16 2048x8 4096x4)
steps=${STEPS:-14}
warmup=${WARMUP:-4}
if [ -f .device/deps.sh ]; then source .device/deps.sh > "$out/deps.log" 2>&1; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
if [ ! -x build-gpu/openvid_mpi ] || [ -n "${REBUILD:-}" ]; then
  t0=$SECONDS
  { cmake -S . -B build-gpu ${OPENVID_CMAKE_ARGS:-} -DOPENVID_BUILD_TESTS=${BUILD_TESTS:-OFF} > "$out/configure.log" 2>&1 &&
    cmake --build build-gpu -j "$(nproc)" > "$out/build.log" 2>&1; } || { tail -40 "$out/configure.log" "$out/build.log"; exit 1; }
  echo "built in $((SECONDS - t0)) s, compiler warnings: $(grep -c 'warning:' "$out/build.log")"
fi
echo "${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}" > "$out/commit.txt"

read -r -a precisions <<< "${PRECISIONS:-bf16 fp8}"
for cfg in "${configs[@]}"; do
  width=${cfg%x*} depth=${cfg#*x}
  for precision in "${precisions[@]}"; do
    name=$cfg
    [ "$precision" = bf16 ] || name=$cfg-$precision
    precision_args=(--precision "$precision")
    [ "$precision" = fp8_gw_hp ] && precision_args=(--precision fp8 --fp8_recipe tensorwise_with_gw_hp)
    profile=()
    [[ " ${PROFILE:-${configs[$(( ${#configs[@]} / 2 ))]}} " == *" $cfg "* ]] && profile=(--profile_dir "$out/profile_$name" --profile_steps "$((steps - 3)):$((steps - 1))")
    timeout 300 mpiexec -n 1 build-gpu/openvid_mpi --dataset fake --fake_samples 8 --fake_latent_shape 16x64x64 --fake_text_tokens 512 \
      --batch_size 2 --num_epochs 1000 --max_steps "$steps" --warmup_steps 2 --log_every 1 --evaluate_every 0 --write_checkpoints false \
      --model_width "$width" --model_depth "$depth" --model_head_dim 128 --run_dir "$out/runs" --run_name "$name" "${precision_args[@]}" \
      "${profile[@]}" ${OPENVID_EXTRA:-} > "$out/openvid_$name.log" 2>&1 || { echo "openvid $name failed:"; tail -15 "$out/openvid_$name.log"; }
    grep -m1 "^float8 products" "$out/openvid_$name.log"
  done
done
if [ "${BASELINE:-1}" != 0 ]; then
  timeout 420 python3 bench/torch_baseline.py --configs "${configs[@]}" --warmup "${BASE_WARMUP:-6}" --steps "${BASE_STEPS:-10}" \
    --json "$out/torch.json" ${BASE_PROFILE:+--profile_dir "$out/profile_baseline"} > "$out/torch.log" 2>&1 ||
    { echo "baseline failed:"; tail -15 "$out/torch.log"; }
fi
python3 bench/step_summary.py --out "$out" --warmup "$warmup" --precisions "${precisions[@]}" -- "${configs[@]}" | tee "$out/summary.md"
: > "$out/breakdown.md"
for cfg in "${configs[@]}"; do
  for precision in "${precisions[@]}"; do
    name=$cfg
    [ "$precision" = bf16 ] || name=$cfg-$precision
    t="$out/profile_$name/kineto-rank0.json"
    [ -f "$t" ] && python3 bench/trace_breakdown.py "$t" --label "openvid $name" | tee -a "$out/breakdown.md"
  done
  t="$out/profile_baseline/baseline_$cfg.json"
  [ -f "$t" ] && python3 bench/trace_breakdown.py "$t" --label "PyTorch baseline $cfg" | tee -a "$out/breakdown.md"
done
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$out/summary.md" "$OUT/" 2>/dev/null
  cp "$out/breakdown.md" "$OUT/" 2>/dev/null
  cp "$out/torch.json" "$OUT/" 2>/dev/null
  for run in "$out"/runs/*/; do r=$(basename "$run"); cp "$run/metrics.jsonl" "$OUT/metrics_$r.jsonl" 2>/dev/null; done
fi
exit 0
