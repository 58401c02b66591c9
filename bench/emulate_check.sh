#!/usr/bin/env bash
# One GPU playing rank 0 of a large job (--emulate_world) beside the planner's prediction of that job: for
# each CONFIG:WORLD:FS[:CP[:RECOMPUTE_EVERY]] (default: the reference's small model, config/reference_small.ini, width 4096 x depth
# 8, and config/video_2048x8.ini, each with the reference's --fs 8 at 8, 64 and 512 GPUs; the small model
# also with fs = world at 64; 2048x8's own --fs 1 at 64), on the fake data's shape (latents 16x64x64, text
# 512 x 4096, batch 2 per data rank), 8 GPUs per node and the planner's default network:
#   planned: `openvid_mpi --plan --plan_world WORLD` (memory per rank, compute, exposed communication, step,
#            MFU of the configured layout's row; compute at --peak_tflops x --plan_efficiency);
#   emulated: STEPS (default 8) steps of `openvid_mpi --emulate_world WORLD`, medians of steps 3.. of
#            metrics.jsonl (step time, exposed communication summed over the groups, MFU) and the peak memory
#            (the CUDA caching allocator's).
# The planning issue's bar: planned memory within 5% of the emulated peak. Run on the GPU machine from the
# repository root after a build of build-gpu/ (bench/gpu_check.sh makes one); OUT (optional) keeps the logs.
set -uo pipefail
if [ -f .device/deps.sh ]; then source .device/deps.sh > /dev/null 2>&1; fi
work=/tmp/openvid-emulate
rm -rf "$work"; mkdir -p "$work"
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(reference_small:8:8 reference_small:64:8 reference_small:64:64 reference_small:512:8
                                  video_2048x8:8:8 video_2048x8:64:8 video_2048x8:64:1 video_2048x8:512:8)
# 16 samples: every step's batch is rank 0's two real ones (an emulated job's peers read what it reads).
data=(--dataset fake --fake_samples 16 --heldout_fraction 0)
echo "| config | world | dp x fs x cp | planned GB | emulated peak GB | planned / emulated | predicted step ms (compute + exposed) | emulated step ms | emulated exposed ms (shard, dp, world) | predicted MFU | emulated MFU |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for c in "${cases[@]}"; do
  IFS=: read -r cfg world fs cp recompute <<< "$c"
  args=(--config "config/$cfg.ini" "${data[@]}" --fs "$fs" --cp "${cp:-1}" --device cuda --precision bf16)
  [ -n "${recompute:-}" ] && args+=(--recompute_every "$recompute")
  name=$cfg-$world-$fs-${cp:-1}-${recompute:-0}
  build-gpu/openvid_mpi "${args[@]}" --plan --plan_world "$world" > "$work/$name.plan" 2>&1
  row=$(grep 'as configured |' "$work/$name.plan" | head -1)
  build-gpu/openvid_mpi "${args[@]}" --emulate_world "$world" --max_steps "${STEPS:-8}" --warmup_steps 1 --log_every 1 \
    --run_dir "$work/runs" --run_name "$name" > "$work/$name.log" 2>&1 ||
    { echo "| $cfg | $world | fs $fs | failed: $(tail -1 "$work/$name.log") |"; continue; }
  python3 - "$cfg${recompute:+ (--recompute_every $recompute)}" "$world" "$row" "$work/runs/$name/metrics.jsonl" <<'PY'
import json, statistics, sys
cfg, world, row, metrics = sys.argv[1:5]
cells = [c.strip() for c in row.strip().strip('|').split('|')]
dp, fs, cp, _, _, mem, _, compute, exposed, step, mfu = cells[:11]
lines = [json.loads(l) for l in open(metrics)]
timed = [l for l in lines if l["step"] > 2] or lines
step_ms = statistics.median(1e3 * l["step_seconds"] for l in timed)
exposed_ms = statistics.median(sum(l["comm_exposed_ms"].values()) for l in timed)
groups = ", ".join(f'{statistics.median(l["comm_exposed_ms"].get(g, 0.0) for l in timed):.1f}' for g in ("shard", "dp", "world"))
mfu_e = statistics.median(l.get("mfu", 0.0) for l in timed)
peak = max(l["peak_memory_gb"] for l in lines)  # GB (1e9), as planned
print(f"| {cfg} | {world} | {dp} x {fs} x {cp} | {float(mem):.1f} | {peak:.1f} | {float(mem) / peak:.3f} | {float(step):.0f} ({float(compute):.0f} + {float(exposed):.1f}) "
      f"| {step_ms:.0f} | {exposed_ms:.1f} ({groups}) | {mfu} | {100 * mfu_e:.1f}% |")
PY
  if [ -n "${OUT:-}" ]; then cat "$work/$name.log" >> "$OUT/emulated_runs.log"; cat "$work/runs/$name/metrics.jsonl" >> "$OUT/emulated_metrics.jsonl"; fi
done
