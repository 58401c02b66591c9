#!/usr/bin/env bash
# Predicted layout tables (openvid_mpi --plan) for the reference's small model (config/reference_small.ini:
# width 4096, depth 8, --fs 8) and the 2048x8 config, at 8, 64 and 512 GPUs of 8 per node, 80 GB each, on the
# fake data's shape (16x64x64 latents, 512 text tokens, batch 2 per data rank). Runs anywhere (one process,
# nothing launched): bash bench/plan_tables.sh [BUILD_DIR]
set -uo pipefail
build=${1:-build}
echo "commit $(git rev-parse --short HEAD 2>/dev/null); $(date -u +%Y-%m-%d)"
for cfg in reference_small video_2048x8; do
  for world in 8 64 512; do
    echo; echo "### $cfg at $world GPUs"; echo
    echo "    $build/openvid_mpi --config config/$cfg.ini --dataset fake --fake_samples 100000 --plan --plan_world $world"
    echo
    "$build/openvid_mpi" --config "config/$cfg.ini" --dataset fake --fake_samples 100000 --plan --plan_world "$world" | sed -n '/^layout advice/,$p'
  done
done
