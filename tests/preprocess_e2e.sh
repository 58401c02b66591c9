#!/usr/bin/env bash
# End to end: short test videos and an OpenVid-1M-style CSV -> openvid_preprocess on 2 ranks (tiny TorchScript
# video encoder and tiny T5 from tests/fixtures) -> the report names every skipped clip with its reason ->
# a job interrupted between and inside parts, and one killed with SIGKILL, restarted, give the same dataset
# -> openvid_mpi trains on it
# -> openvid_sample makes MP4 files for text prompts from the trained weights.
#   preprocess_e2e.sh MPIEXEC MAKE_CLIPS PREPROCESS OPENVID_MPI FIXTURES WORK PYTHON
set -u
mpiexec=$1 make_clips=$2 preprocess=$3 ovmpi=$4 fixtures=$5 work=$6 py=$7
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
"$make_clips" "$work/videos" > /dev/null || fail "could not write the test clips"
run() {  # run OUT [extra options]: the preprocessing job on 2 ranks
  local out=$1; shift
  timeout -k 5 240 "$mpiexec" --oversubscribe -n 2 "$preprocess" --csv "$work/videos/clips.csv" --video_root "$work/videos" --out "$out" \
    --bucket 2x8x8 --bucket 2x8x12 --frame_stride 2 --filter 'aesthetic score>=4' --clips_per_shard 2 --batch_size 2 \
    --video_encoder "${encoder:-$fixtures/video_codec/encoder.jit}" --text_encoder "$fixtures/t5_tiny" --caption_bytes 256 "$@"
}
# The video decoder given as the encoder: a trial call refuses it before anything is written (exit 2 on every
# rank, one message saying what the file is); the corrected command then runs in that --out.
encoder=$fixtures/video_codec/decoder.jit run "$work/wrong" > "$work/wrong.log" 2>&1
rc=$?; cat "$work/wrong.log"
[ $rc -eq 2 ] || fail "a decoder given as the encoder exited $rc, not 2"
[ "$(grep -c "It works as a video decoder instead .*: pass the encoder" "$work/wrong.log")" -eq 1 ] || fail "not one message naming the decoder"
grep -q "Traceback" "$work/wrong.log" && fail "a TorchScript traceback was printed"
[ -e "$work/wrong" ] && fail "the refused job wrote into its --out"
# A start that failed after its record was written but before any part: the corrected command takes over.
mkdir -p "$work/wrong" && echo '{"csv": "another job"}' > "$work/wrong/preprocess.json"
run "$work/wrong" --max_clips 2 > "$work/wrong2.log" 2>&1 || { cat "$work/wrong2.log"; fail "the corrected command was refused"; }
grep -q "holds a job with other options that finished no part: starting this one there" "$work/wrong2.log" || fail "no word on the takeover"
run "$work/data" > "$work/run1.log" 2>&1 || { cat "$work/run1.log"; fail "the preprocessing job failed"; }
cat "$work/run1.log"
grep -q "preprocess: 6 of 13 clips kept (t2_h8_w8: 5, t2_h8_w12: 1); 5 skipped (missing: 1, not a video: 1, too short: 1, unreadable: 2), 2 filtered out" "$work/run1.log" ||
  fail "unexpected counts in the summary"
"$py" - "$work/data" <<'PY' || fail "the report or the dataset is not what the inputs give"
import json, sys, h5py, numpy as np
d = sys.argv[1]
rep = json.load(open(f"{d}/preprocess_report.json"))
reasons = {s["video"]: (s["kind"], s["reason"]) for s in rep["skipped_clips"]}
assert reasons["missing.mp4"][0] == "missing", reasons
assert reasons["short.mp4"][0] == "too short" and "too short" in reasons["short.mp4"][1], reasons
assert reasons["photo.mp4"][0] == "not a video" and "still image" in reasons["photo.mp4"][1], reasons
# Records and lines differ after the caption that holds a line break (record 4, lines 5-6).
where = {s["video"]: (s["row"], s["line"]) for s in rep["skipped_clips"]}
assert where["short.mp4"] == (5, 7) and where["missing.mp4"] == (9, 11), where
assert reasons["corrupt.mp4"][0] == "unreadable" and "corrupt.mp4" in reasons["corrupt.mp4"][1], reasons
assert reasons["empty.mp4"][0] == "unreadable", reasons
filtered = {f["row"]: f["reason"] for f in rep["filtered_out_clips"]}
assert "filtered out by 'aesthetic score>=4' (3.1)" in filtered[10] and "not a number" in filtered[11], filtered
assert any("caption cut to 511 tokens" in n for n in rep["notes"]), rep["notes"]
assert any("caption stored cut to 256 bytes" in n for n in rep["notes"]), rep["notes"]
m = json.load(open(f"{d}/dataset.json"))
assert m["latent_channels"] == 16 and m["text_dim"] == 32 and m["text_tokens"] == 512, m
ids, caps = {}, {}
for b in m["buckets"]:
    for s in b["shards"]:
        with h5py.File(f"{d}/{s['file']}") as f:
            g = f["buckets"][b["name"]]
            assert g["latents"].shape[1:] == (16, b["frames"], b["height"], b["width"]) and g["latents"].dtype == np.float16
            assert g["text"].shape[1:] == (512, 32)
            assert np.isfinite(g["latents"][()]).all() and np.isfinite(g["text"][()]).all()
            for i, c in zip(g["source_ids"][()], g["captions"][()]):
                ids[i.decode()] = b["name"]; caps[i.decode()] = c.decode()
# The phone clip's frames are stored landscape (96x64) and shown turned: it goes by its upright 64x96 shape.
assert ids == {"square_red.mp4": "t2_h8_w8", "tall_blue.mp4": "t2_h8_w8", "sub/nested_yellow.mp4": "t2_h8_w8",
               "wide_green.mp4": "t2_h8_w12", "phone_portrait.mp4": "t2_h8_w8", "cut_half.mkv": "t2_h8_w8"}, ids
assert any("(line 15, cut_half.mkv): truncated: its data end at" in n for n in rep["notes"]), rep["notes"]
assert caps["wide_green.mp4"] == 'A green square, "wide" shot' and caps["tall_blue.mp4"].endswith("東京"), caps
print("report and dataset: as expected")
PY
# An interrupted job: one finished part taken back (as if killed before it was written), another left half
# written (a .tmp file, its record missing); the restart redoes exactly those and ends with the same data.
cp -r "$work/data" "$work/resumed"
rm "$work/resumed/dataset.json" "$work/resumed/preprocess_report.json" "$work/resumed/part-00000.json" "$work/resumed/part-00000.h5"
mv "$work/resumed/part-00001.h5" "$work/resumed/part-00001.h5.tmp" && rm "$work/resumed/part-00001.json" || fail "the parts are not as expected"
run "$work/resumed" > "$work/run2.log" 2>&1 || { cat "$work/run2.log"; fail "the restarted job failed"; }
[ ! -e "$work/resumed/part-00001.h5.tmp" ] || fail "the restart left the half-written file"
"$py" - "$work/data" "$work/resumed" <<'PY' || fail "the restarted job's dataset differs from the uninterrupted one's"
import json, sys, h5py, numpy as np
a, b = sys.argv[1], sys.argv[2]
assert json.load(open(f"{a}/dataset.json"))["buckets"] == json.load(open(f"{b}/dataset.json"))["buckets"]
for bucket in json.load(open(f"{a}/dataset.json"))["buckets"]:
    for s in bucket["shards"]:
        with h5py.File(f"{a}/{s['file']}") as f, h5py.File(f"{b}/{s['file']}") as g:
            for k in ("latents", "text", "captions", "source_ids"):
                x, y = f["buckets"][bucket["name"]][k][()], g["buckets"][bucket["name"]][k][()]
                assert np.array_equal(x, y), (s["file"], k)
print("restart: same dataset")
PY
# A real kill: a longer job (24 clips, one per part) killed with SIGKILL once its third part is recorded,
# then restarted, ends with the dataset of the same job run without interruption.
"$make_clips" "$work/many" --bench 24 64 64 12 > /dev/null || fail "could not write the clips for the kill test"
many() {  # many OUT: the job over those clips on 2 ranks
  "$mpiexec" --oversubscribe -n 2 "$preprocess" --csv "$work/many/clips.csv" --video_root "$work/many" --out "$1" --bucket 2x8x8 \
    --clips_per_shard 1 --batch_size 1 --video_encoder "$fixtures/video_codec/encoder.jit" --text_encoder "$fixtures/t5_tiny"
}
timeout -k 5 240 bash -c "$(declare -f many); mpiexec=$mpiexec preprocess=$preprocess work=$work fixtures=$fixtures many $work/whole" \
  > "$work/whole.log" 2>&1 || { cat "$work/whole.log"; fail "the uninterrupted job failed"; }
setsid bash -c "$(declare -f many); mpiexec=$mpiexec preprocess=$preprocess work=$work fixtures=$fixtures many $work/killed" > "$work/killed.log" 2>&1 &
job=$!
for _ in $(seq 600); do [ -e "$work/killed/part-00002.json" ] && break; sleep 0.05; done
# mpiexec's ranks may live outside its process group: kill them by their command line too, and wait until
# none is left, so that nothing of the killed job finishes behind the restart's back.
kill -KILL -- "-$job" 2>/dev/null; pkill -KILL -f -- "--out $work/killed --bucket" 2>/dev/null; wait "$job" 2>/dev/null
for _ in $(seq 100); do pgrep -f -- "--out $work/killed --bucket" > /dev/null || break; sleep 0.1; done
pgrep -f -- "--out $work/killed --bucket" > /dev/null && fail "the killed job's ranks are still running"
parts=$(ls "$work/killed" | grep -c '^part-.*\.json$')
echo "killed with $parts of 24 parts recorded; dataset.json there: $([ -e "$work/killed/dataset.json" ] && echo yes || echo no)"
timeout -k 5 240 bash -c "$(declare -f many); mpiexec=$mpiexec preprocess=$preprocess work=$work fixtures=$fixtures many $work/killed" \
  > "$work/restarted.log" 2>&1 || { cat "$work/restarted.log"; fail "the job restarted after SIGKILL failed"; }
"$py" - "$work/whole" "$work/killed" <<'PY' || fail "the job killed and restarted wrote another dataset than the uninterrupted one"
import json, sys, h5py, numpy as np
a, b = sys.argv[1], sys.argv[2]
ma, mb = json.load(open(f"{a}/dataset.json")), json.load(open(f"{b}/dataset.json"))
assert ma["buckets"] == mb["buckets"] and ma["buckets"][0]["count"] == 24, (ma["buckets"], mb["buckets"])
for s in ma["buckets"][0]["shards"]:
    with h5py.File(f"{a}/{s['file']}") as f, h5py.File(f"{b}/{s['file']}") as g:
        for k in ("latents", "text", "captions", "source_ids"):
            assert np.array_equal(f["buckets/t2_h8_w8"][k][()], g["buckets/t2_h8_w8"][k][()]), (s["file"], k)
print("kill and restart: same dataset")
PY
# A restart with other options is refused, naming the record.
run "$work/data" --target_fps 12 > "$work/run3.log" 2>&1 && fail "a restart with other options was accepted"
grep -q "holds a preprocessing job with other options" "$work/run3.log" || { cat "$work/run3.log"; fail "no clear message for changed options"; }
# The same command on the finished folder is refused (exit 2) and rewrites nothing.
before=$(cd "$work/data" && ls -l --time-style=+%s.%N && md5sum dataset.json)
run "$work/data" > "$work/run4.log" 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "already holds a finished dataset (.*dataset.json, made by this very command): train on it with --dataset" "$work/run4.log" ||
  { cat "$work/run4.log"; fail "a finished dataset folder was not refused with exit 2 (got $rc)"; }
[ "$(cd "$work/data" && ls -l --time-style=+%s.%N && md5sum dataset.json)" = "$before" ] || fail "the refused run touched the finished folder"
# The trainer trains on the dataset.
timeout -k 5 240 "$mpiexec" --oversubscribe -n 2 "$ovmpi" --dataset "$work/data" --device cpu --run_dir "$work/runs" --run_name e2e \
  --batch_size 1 --heldout_fraction 0 --max_steps 6 --warmup_steps 1 --num_epochs 100 --log_every 1 --evaluate_every 0 --model_width 32 --model_depth 1 --model_head_dim 16 \
  --model_text_dim 32 --ema_decay 0.5 > "$work/train.log" 2>&1 || { cat "$work/train.log"; fail "openvid_mpi could not train on the preprocessed dataset"; }
steps=$("$py" -c "import json,sys,math; r=[json.loads(l) for l in open(sys.argv[1])]; assert all(math.isfinite(x['loss']) for x in r); print(len(r))" \
  "$work/runs/e2e/metrics.jsonl") || fail "no finite losses"
[ "$steps" -ge 6 ] || fail "trained $steps steps, not 6"
# And samples from it for text prompts (the same tiny T5), with the run's moving average of the weights
# (--ema_decay), decoded to MP4 files and a contact sheet.
sample=$(dirname "$ovmpi")/openvid_sample
"$sample" --config "$work/runs/e2e/config.ini" --weights "$work/runs/e2e" --shape 2x8x8 --steps 4 \
  --out "$work/samples/latents.safetensors" --prompt "a red square" --prompt "a green square, wide" --text_encoder "$fixtures/t5_tiny" \
  --video_decoder "$fixtures/video_codec/decoder.jit" --video_out "$work/samples" > "$work/sample.log" 2>&1 ||
  { cat "$work/sample.log"; fail "openvid_sample failed"; }
for i in 000 001; do
  probe=$("$make_clips" --probe "$work/samples/sample_$i.mp4") || fail "sample_$i.mp4 does not open"
  [[ "$probe" == "64x64 5 frames 24 fps "* ]] || fail "sample_$i.mp4 is '$probe', not 64x64 with 5 frames at 24 fps"
done
echo "samples: $probe"
grep -q "weights: $work/runs/e2e/ema.safetensors (the moving average)" "$work/sample.log" || { cat "$work/sample.log"; fail "the sampler did not use the run's moving average"; }
"$py" - "$work/samples" <<'PY' || fail "the samples are not two 5-frame videos of 64x64 with their contact sheet"
import struct, sys
d = sys.argv[1]
for i in range(2):
    assert open(f"{d}/sample_{i:03d}.mp4", "rb").read(12)[4:8] == b"ftyp"
png = open(f"{d}/contact_sheet.png", "rb").read(24)
assert png[:8] == b"\x89PNG\r\n\x1a\n"
w, h = struct.unpack(">II", png[16:24])
assert (w, h) == (5 * 64, 2 * 64), (w, h)   # 5 frames (1 + 4 * 1) across, one row per prompt
assert open(f"{d}/prompts.txt").read().splitlines() == ["sample_000.mp4\ta red square", "sample_001.mp4\ta green square, wide"]
PY
echo "PASS: preprocessed on 2 ranks, resumed, trained $steps steps, sampled 2 prompts to MP4"
