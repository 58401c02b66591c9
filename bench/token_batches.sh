#!/usr/bin/env bash
# Token batches on one GPU: three shape buckets whose video tokens differ 8x (latents 8x32x32, 8x64x64 and
# 16x64x64: 1,040, 4,112 and 8,208 tokens with registers), a width-2048 model (depth 8, head_dim 128, text
# 512 x 4096, bf16), trained in four ways on the same data:
#   batch_size   --batch_size 2 (today's rule: 2 samples of any bucket)
#   tokens       --batch_tokens L x 8208 (the largest bucket takes L = LARGEST, default 4; the others by tokens)
#   attention    --batch_tokens L x C --batch_cost attention (C: the largest bucket's cost, tokens + tokens^2/4112)
#   flops        --batch_tokens L x C --batch_cost flops (C: tokens x its FLOPs per token over the median bucket's)
# Each run logs every step (phase_ms.step from CUDA events, window_peak_memory_gb); the summary gives, per run
# and bucket, the median step time after the first WARMUP steps of that bucket, samples and tokens per step
# and the bucket's peak memory, and per run the spread of the bucket medians (max / min - 1; the token-batch
# issue's bar: < 15% with a budget) and the run's peak memory.
# Run on the GPU machine from the repository root (builds build-gpu/ when it is missing):
#   bash bench/token_batches.sh        (STEPS per run, default 120; SAMPLES per bucket, default 64; WARMUP 2;
#                                       RUNS, default "batch_size tokens attention flops"; DEPTH, default 8;
#                                       LARGEST, default 4)
set -uo pipefail
work=/tmp/openvid-tokens
rm -rf "$work"; mkdir -p "$work"
if [ -f .device/deps.sh ]; then source .device/deps.sh > "$work/deps.log" 2>&1; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$work/device.txt"
if [ ! -x build-gpu/openvid_mpi ] || [ ! -x build-gpu/openvid_make_dataset ]; then
  { cmake -S . -B build-gpu ${OPENVID_CMAKE_ARGS:-} -DOPENVID_BUILD_TESTS=${BUILD_TESTS:-OFF} > "$work/configure.log" 2>&1 &&
    cmake --build build-gpu -j "$(nproc)" > "$work/build.log" 2>&1; } || { tail -40 "$work/configure.log" "$work/build.log"; exit 1; }
fi
t0=$SECONDS
mpiexec -n 1 build-gpu/openvid_make_dataset --out "$work/data" --samples "${SAMPLES:-64}" --shape 8x32x32 --shape 8x64x64 --shape 16x64x64 \
  --channels 16 --text-tokens 512 --text-dim 4096 > "$work/data.log" 2>&1 || { tail "$work/data.log"; exit 1; }
echo "dataset: $(tail -1 "$work/data.log") ($((SECONDS - t0)) s)"
read -r -a runs <<< "${RUNS:-batch_size tokens attention flops}"
common=(--dataset "$work/data" --heldout_fraction 0 --num_epochs 100000 --model_width 2048 --model_depth "${DEPTH:-8}" --model_head_dim 128
        --model_text_dim 4096 --model_in_channels 16 --device cuda --precision bf16 --seed 1 --run_dir "$work/runs")
largest=${LARGEST:-4}
for run in "${runs[@]}"; do
  batch=(--batch_size 2)
  if [ "$run" != batch_size ]; then
    # The budget: LARGEST samples of the largest bucket at this cost, from the start's own message about the
    # smallest budget that takes one sample of every bucket.
    need=$(mpiexec -n 1 build-gpu/openvid_mpi "${common[@]}" --run_name probe --batch_tokens 1 --batch_cost "$run" 2>&1 |
           grep -o 'give --batch_tokens [0-9]*' | head -1 | awk '{print $3}')
    [ -n "$need" ] || { echo "unknown run $run"; exit 1; }
    batch=(--batch_tokens "$((largest * need))" --batch_cost "$run")
  fi
  t0=$SECONDS
  mpiexec -n 1 build-gpu/openvid_mpi "${common[@]}" --max_steps "${STEPS:-120}" "${batch[@]}" --learning_rate 1e-4 --warmup_steps 10 \
    --log_every 1 --evaluate_every 0 --write_checkpoints false --run_name "$run" > "$work/$run.log" 2>&1 ||
    { echo "$run failed:"; tail -20 "$work/$run.log"; exit 1; }
  echo "$run: ${STEPS:-120} steps in $((SECONDS - t0)) s; $(grep -m1 -E '^batches by' "$work/$run.log")"
  if [ -n "${OUT:-}" ]; then cp "$work/runs/$run/metrics.jsonl" "$OUT/tokens_$run.jsonl"; fi
done
python3 - "$work" "${WARMUP:-2}" "${runs[@]}" <<'PY'
import json, statistics, sys
work, warmup, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"\ndevice: {open(work + '/device.txt').read().strip()}; medians of each bucket's steps after its first {warmup}\n")
print("| run | video tokens per sample | steps | samples/step | tokens/step | median step ms | peak GiB (bucket) |")
print("|---|---|---|---|---|---|---|")
summary = []
for run in runs:
    rows = [json.loads(l) for l in open(f"{work}/runs/{run}/metrics.jsonl")]
    by = {}
    for r in rows:
        t = round(r["tokens_per_step"] / r["samples_per_step"])
        by.setdefault(t, []).append(r)
    medians = {}
    for t in sorted(by):
        rs = by[t][warmup:] or by[t]
        medians[t] = statistics.median(r["phase_ms"]["step"] for r in rs)
        print(f"| {run} | {t} | {len(by[t])} | {statistics.median(r['samples_per_step'] for r in rs):.0f} | "
              f"{statistics.median(r['tokens_per_step'] for r in rs):.0f} | {medians[t]:.1f} | "
              f"{max(r.get('window_peak_memory_gb', 0) for r in by[t]) * 1e9 / 2**30:.2f} |")
    spread = max(medians.values()) / min(medians.values()) - 1
    tok_s = sum(r["tokens_per_step"] for r in rows[warmup * 3:]) / sum(r["phase_ms"]["step"] / 1e3 for r in rows[warmup * 3:])
    summary.append((run, spread, rows[-1]["peak_memory_gb"] * 1e9 / 2**30, tok_s))
print("\n| run | step-time spread across buckets (max/min - 1) | run peak GiB | tokens/s |")
print("|---|---|---|---|")
for run, spread, peak, tok_s in summary:
    print(f"| {run} | {100 * spread:.1f}% | {peak:.2f} | {tok_s:.0f} |")
PY
