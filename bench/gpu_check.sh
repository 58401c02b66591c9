#!/usr/bin/env bash
# Builds the CUDA configuration on a GPU machine and checks it: the NCCL collectives suite on one rank,
# the job over NCCL, and the whole CTest suite. Writes logs to ${OUT:-/tmp/openvid-gpu}.
# On the project's lent GPU machine: carry .device (the machine's build dependencies) and run `bash bench/gpu_check.sh`.
set -uo pipefail
out=${OUT:-/tmp/openvid-gpu}
mkdir -p "$out"
if [ -f .device/deps.sh ]; then source .device/deps.sh > "$out/deps.log" 2>&1; fi
nvidia-smi -L
{ cmake -S . -B build-gpu ${OPENVID_CMAKE_ARGS:-} > "$out/configure.log" 2>&1 &&
  cmake --build build-gpu -j "$(nproc)" > "$out/build.log" 2>&1; } || { tail -40 "$out"/configure.log "$out"/build.log; exit 1; }
echo "compiler warnings: $(grep -c 'warning:' "$out/build.log")"
echo "== collectives over NCCL (1 rank)"
OPENVID_TEST_BACKEND=nccl mpiexec -n 1 build-gpu/tests/test_collectives 2>&1 | tee "$out/nccl_tests.log" | tail -3
echo "== the job over NCCL: 3 steps of a small model on synthetic data (must end with exit 0)"
mpiexec -n 1 build-gpu/openvid_mpi --backend nccl --device cuda --dataset fake --fake_samples 8 --fake_latent_shape 4x8x8 \
  --fake_text_tokens 8 --batch_size 2 --max_steps 3 --warmup_steps 1 --log_every 1 --evaluate_every 0 --write_checkpoints false \
  --model_width 64 --model_depth 2 --model_head_dim 32 --model_text_dim 32 --run_dir "$out/job" 2>&1 | tail -3
echo "exit ${PIPESTATUS[0]}"
echo "== 2 ranks on 1 GPU: must refuse with one message (exit 2)"
mpiexec -n 2 --oversubscribe build-gpu/openvid_mpi 2>&1 | grep -E "error:" ; echo "exit ${PIPESTATUS[0]}"
echo "== ctest"
ctest --test-dir build-gpu -j 8 --output-on-failure 2>&1 | tee "$out/ctest.log" | grep -E "tests passed|Total Test time|\((Failed|Timeout|Skipped|Not Run)\)"
