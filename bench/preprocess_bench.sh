#!/usr/bin/env bash
# Preprocessing throughput by stage on this machine (from the repository root, after a build of build/):
#   bash bench/preprocess_bench.sh [RANKS...]            (default: 1 2)
# Writes CLIPS clips (default 48) of WxH pixels (default 640x360), FRAMES frames (default 72, 3 s at 24 fps)
# with build/tests/make_test_clips, then runs openvid_preprocess on each rank count with the tiny committed
# encoders (tests/fixtures: a TorchScript video encoder with Cosmos CV4x8x8's interface, a T5 v1.1 of width
# 32) into one bucket of 16 latent frames (61 video frames) of 40x64 latents (320x512 pixels), and prints
# its summary: clips/s per rank of each stage (decode, video encode, text encode, write) and the job's.
# The full-size encoders' own speed: build/openvid_encode_bench (see docs/preprocess.md).
set -euo pipefail
build=${BUILD:-build}
clips=${CLIPS:-48} w=${W:-640} h=${H:-360} frames=${FRAMES:-72}
ranks=("$@")
[ ${#ranks[@]} -gt 0 ] || ranks=(1 2)
work=${WORK:-/tmp/openvid-preprocess-bench}
rm -rf "$work" && mkdir -p "$work"
"$build/tests/make_test_clips" "$work/videos" --bench "$clips" "$w" "$h" "$frames"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for n in "${ranks[@]}"; do
  echo "== $n rank(s): $clips clips of ${w}x${h}, $frames frames"
  mpiexec --oversubscribe -n "$n" "$build/openvid_preprocess" --csv "$work/videos/clips.csv" --video_root "$work/videos" \
    --out "$work/out_$n" --bucket 16x40x64 --clips_per_shard 8 --batch_size 4 \
    --video_encoder tests/fixtures/video_codec/encoder.jit --text_encoder tests/fixtures/t5_tiny | grep -v "^preprocess: part"
done
