#!/usr/bin/env bash
# --sample_every: a run on 2 ranks writes latents for fixed held-out text states every N steps and at the end;
# the noise is the same each time (two identical runs write identical files; the model's progress is what
# changes them), and training goes on after each.
# With --sample_decoder (run a) each time also a contact sheet, as a PNG file and a TensorBoard image.
#   samples_during_training.sh MPIEXEC OPENVID_MPI CONFIG WORK PYTHON DECODER
set -u
mpiexec=$1 ovmpi=$2 config=$3 work=$4 py=$5 decoder=$6
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
for run in a b; do
  extra=()
  [ "$run" = a ] && extra=(--sample_decoder "$decoder")
  timeout -k 5 120 "$mpiexec" --oversubscribe -n 2 "$ovmpi" --config "$config" --device cpu --run_dir "$work" --run_name "$run" \
    --max_steps 40 --evaluate_every 0 --sample_every 20 --sample_count 3 --sample_steps 5 "${extra[@]}" > "$work/$run.log" 2>&1 ||
    { cat "$work/$run.log"; fail "run $run failed"; }
done
grep -q "^samples $work/a/samples/step_00000020.safetensors" "$work/a.log" || { cat "$work/a.log"; fail "no samples announced at step 20"; }
"$py" - "$work" <<'PY' || fail "the samples are not as expected"
import sys, numpy as np
from safetensors.numpy import load_file
w = sys.argv[1]
a20, a40, b40 = (load_file(f"{w}/{r}/samples/step_000000{s}.safetensors") for r, s in (("a", 20), ("a", 40), ("b", 40)))
assert a20["latents"].shape == (3, 16, 8, 16, 16), a20["latents"].shape
assert np.isfinite(a40["latents"]).all()
assert np.array_equal(a40["latents"], b40["latents"]), "two identical runs sampled different latents"
assert np.array_equal(a20["text_states"], a40["text_states"]) and np.array_equal(a20["sample_ids"], a40["sample_ids"])
assert not np.array_equal(a20["latents"], a40["latents"]), "the samples did not change as the model trained"
# The contact sheets: 8 frames of 128x128 (the tiny decoder: 1 + 4 * 7 frames of 8x the latent's 16x16) per sample.
import struct
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
for step in (20, 40):
    png = open(f"{w}/a/samples/step_000000{step}.png", "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (8 * 128, 3 * 128), struct.unpack(">II", png[16:24])
import os
for i in range(3):  # and a video file per sample where openvid has FFmpeg
    mp4 = f"{w}/a/samples/step_00000040_{i}.mp4"
    if os.environ.get("OPENVID_HAVE_FFMPEG") == "1":
        assert open(mp4, "rb").read(12)[4:8] == b"ftyp", mp4
ea = EventAccumulator(f"{w}/a/tensorboard", size_guidance={"images": 0}); ea.Reload()
images = ea.Images("samples/contact_sheet")
assert [i.step for i in images] == [20, 40] and (images[0].width, images[0].height) == (1024, 384), [(i.step, i.width, i.height) for i in images]
assert images[1].encoded_image_string == open(f"{w}/a/samples/step_00000040.png", "rb").read()
print("samples: step 20 and 40, identical across identical runs; contact sheets in PNG files and TensorBoard")
PY
echo "PASS: samples during training"
