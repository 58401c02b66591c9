#!/usr/bin/env bash
# Job-level fault scenarios of openvid_mpi (2 ranks, the quick-start model):
#   job_faults.sh MPIEXEC OPENVID_MPI CONFIG WORKDIR SCENARIO
# SCENARIO: kill-in-checkpoint | signal | startup-signal | corrupt | nonfinite | profile | export-on-resume |
#           prune-incomplete | bad-relaunch | unwritable-run-dir | run-dir-reuse | resume-changes | regroup | epoch-cap |
#           fake-changed. Prints PASS or FAIL lines; exit 0 on PASS.
set -u
mpiexec=$1 ovmpi=$2 config=$3 work=$4 scenario=$5
run_dir=$work/$scenario
rm -rf "$run_dir"
mkdir -p "$run_dir"
job() { timeout -k 5 120 "$mpiexec" --oversubscribe -n "${job_ranks:-2}" "$ovmpi" --config "$config" --device cpu --run_dir "$run_dir" \
          --run_name run --evaluate_every 0 --warmup_steps 1 "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
ck=$run_dir/run/checkpoints
case $scenario in
  kill-in-checkpoint)
    # Rank 0 is killed after writing the step-4 checkpoint's files, before committing it.
    OPENVID_FAULT_KILL_IN_CHECKPOINT=4 job --max_steps 6 --checkpoint_every 2 --log_every 1 > "$run_dir/first.log" 2>&1
    rc=$?; cat "$run_dir/first.log"
    [ $rc -ne 0 ] || fail "the killed job exited 0"
    [ -f "$ck/step_00000002/COMPLETE" ] || fail "the previous checkpoint step_00000002 is not intact"
    [ ! -f "$ck/step_00000004/COMPLETE" ] || fail "the interrupted checkpoint was committed"
    job --max_steps 6 --checkpoint_every 2 --log_every 1 --resume auto > "$run_dir/second.log" 2>&1
    rc=$?; cat "$run_dir/second.log"
    [ $rc -eq 0 ] || fail "the resumed job exited $rc"
    grep -q "resuming from .*step_00000002 at step 2" "$run_dir/second.log" || fail "--resume auto did not take step_00000002"
    grep -q "^step 6/6 " "$run_dir/second.log" || fail "the resumed job did not finish"
    # The killed job logged steps 3 and 4 past the checkpoint it resumed from: each step is recorded once.
    python3 -c "import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r['step'] for r in rows] == [1, 2, 3, 4, 5, 6], [r['step'] for r in rows]
assert all(r['wall_time'] > 1.7e9 and r['elapsed_seconds'] >= 0 for r in rows), rows" "$run_dir/run/metrics.jsonl" ||
      fail "metrics.jsonl does not hold steps 1-6 once each, with wall and elapsed times"
    ;;
  run-dir-reuse)
    job --max_steps 2 > "$run_dir/first.log" 2>&1 || { cat "$run_dir/first.log"; fail "the first job failed"; }
    rows=$(wc -l < "$run_dir/run/metrics.jsonl")
    job --max_steps 2 > "$run_dir/second.log" 2>&1
    rc=$?; cat "$run_dir/second.log"
    [ $rc -eq 2 ] || fail "a second run in the same directory exited $rc, not 2"
    [ "$(grep -c "holds an earlier run (checkpoints up to step_00000002, metrics.jsonl, model.safetensors): continue it with --resume auto, start it over with --start_over" "$run_dir/second.log")" -eq 1 ] ||
      fail "no single message naming the earlier run and the ways on"
    [ "$(wc -l < "$run_dir/run/metrics.jsonl")" -eq "$rows" ] || fail "the refused run touched metrics.jsonl"
    job --max_steps 2 --start_over --resume auto > "$run_dir/third.log" 2>&1
    rc=$?; cat "$run_dir/third.log"
    [ $rc -eq 2 ] && grep -q "start_over contradicts --resume auto" "$run_dir/third.log" || fail "--start_over with --resume was not refused"
    job --max_steps 3 --start_over > "$run_dir/fourth.log" 2>&1
    rc=$?; cat "$run_dir/fourth.log"
    [ $rc -eq 0 ] || fail "--start_over exited $rc"
    aside=$(ls -d "$run_dir"/run.replaced-* 2>/dev/null | head -1)
    [ -n "$aside" ] && grep -q "moved the earlier run's files from .* to $aside" "$run_dir/fourth.log" || fail "the earlier run was not moved aside"
    [ -f "$aside/checkpoints/step_00000002/COMPLETE" ] && [ "$(wc -l < "$aside/metrics.jsonl")" -eq "$rows" ] || fail "the moved run is not intact"
    [ -f "$ck/step_00000003/COMPLETE" ] && [ ! -e "$ck/step_00000002" ] || fail "the new run mixed with the earlier one's checkpoints"
    ;;
  resume-changes)
    job --max_steps 4 > "$run_dir/first.log" 2>&1 || { cat "$run_dir/first.log"; fail "the first job failed"; }
    job --max_steps 8 --batch_size 2 --resume auto > "$run_dir/second.log" 2>&1
    rc=$?; cat "$run_dir/second.log"
    [ $rc -eq 0 ] || fail "the resumed job exited $rc"
    line=$(grep "^note: this resume changes the run: " "$run_dir/second.log")
    [ "$(echo "$line" | grep -c .)" -eq 1 ] || fail "not one line about what the resume changes"
    # 180 training samples (200, 10% held out), 32 taken in 4 steps of 8: the epoch goes on with the other 148 in batches of 4.
    for what in "global batch 8 -> 4 (each step now averages 4 samples" "max_steps 4 -> 8" "learning rate at step 4 jumps 0.00e+00 -> " \
                "epoch 0 continues with the 148 of its 180 training samples not yet taken, in 37 steps of the new batches"; do
      [[ "$line" == *"$what"* ]] || fail "the line does not say: $what"
    done
    job --max_steps 10 --batch_size 2 --lr_scheduler_type constant --precision fp32 --drop_remainder --resume auto > "$run_dir/third.log" 2>&1 ||
      fail "the third job failed"
    cat "$run_dir/third.log"
    grep -q "changes the run: .*learning rate at step 8 jumps" "$run_dir/third.log" || fail "a schedule change is not reported"
    grep -q "changes the run: .*precision auto -> fp32 (masters, moments and checkpoints are the same" "$run_dir/third.log" ||
      fail "a precision change is not reported"
    grep -q "changes the run: .*each bucket's remainder now left out (--drop_remainder); epoch 0 continues with the 132 of its 180" "$run_dir/third.log" ||
      fail "leaving the remainders out is not reported with how the epoch goes on"
    grep -q "changes the run: .*global batch" "$run_dir/third.log" && fail "an unchanged global batch is reported"
    # A checkpoint of another architecture: every mismatch listed with its shape, exit 2.
    job --max_steps 12 --model_depth 1 --resume auto > "$run_dir/fourth.log" 2>&1
    rc=$?; cat "$run_dir/fourth.log"
    [ $rc -eq 2 ] && grep -q "do not match the model; unexpected (12): .*blocks.1.lambda_param \[1\], .*blocks.1.qkv.weight \[192, 64\]" "$run_dir/fourth.log" ||
      fail "resuming a depth-2 checkpoint into a depth-1 model did not stop listing blocks.1.* with shapes"
    cp "$ck/step_00000010/model.safetensors" "$run_dir/width64.safetensors"
    job --max_steps 12 --model_width 96 --start_over --load_checkpoint "$run_dir/width64.safetensors" > "$run_dir/fifth.log" 2>&1
    rc=$?; cat "$run_dir/fifth.log"
    [ $rc -eq 2 ] && grep -q "wrong shape ([0-9]*): register_tokens \[1, 4, 64\] in the file vs \[1, 4, 96\] in the model" "$run_dir/fifth.log" ||
      fail "loading width-64 weights into a width-96 model did not stop listing the shapes"
    ;;
  regroup)
    # A token-budget run on 2 ranks stopped after 4 steps of 8 samples, resumed on 1 rank (batches of 4): the epoch goes
    # on with exactly the samples it had not taken, so the real samples logged over the epoch add up to the
    # 180 training samples, and the run ends with the epoch (--num_epochs 1).
    # 260 tokens per sample (8x16x16 in patches of 2x2x2, 4 registers): a budget of 1040 takes 4 per data rank.
    sed '/^batch_size/d' "$config" > "$run_dir/tokens.ini"
    config=$run_dir/tokens.ini
    job --batch_tokens 1040 --max_steps 4 --log_every 1 > "$run_dir/first.log" 2>&1 || { cat "$run_dir/first.log"; fail "the first job failed"; }
    job_ranks=1 job --batch_tokens 1040 --num_epochs 1 --max_steps 1000 --log_every 1 --resume auto > "$run_dir/second.log" 2>&1
    rc=$?; cat "$run_dir/second.log"
    [ $rc -eq 0 ] || fail "the resumed job exited $rc"
    grep -q "changes the run: global batch --batch_tokens 1040 x 2 data ranks -> --batch_tokens 1040 x 1 data ranks (each bucket's batch size changes); epoch 0 continues with the 148 of its 180 training samples not yet taken, in 37 steps" \
      "$run_dir/second.log" || fail "the resume does not say how the epoch goes on"
    grep -q "^note: the run will end at step 41, at the epoch cap: --num_epochs 1 (epoch 0 continued from step 4 in 37 steps" "$run_dir/second.log" ||
      fail "the end of the continued epoch is not announced"
    python3 -c "import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r['step'] for r in rows] == list(range(1, 42)), [r['step'] for r in rows]
n = sum(r['samples_per_step'] for r in rows)
assert n == 180, f'{n} samples trained over the epoch, not 180'
" "$run_dir/run/metrics.jsonl" || fail "the epoch did not train each of its samples once"
    ;;
  epoch-cap)
    job --num_epochs 1 --max_steps 1000 > "$run_dir/first.log" 2>&1
    rc=$?; cat "$run_dir/first.log"
    [ $rc -eq 0 ] || fail "the job exited $rc"
    grep -q "^note: the run will end at step [0-9]*, at the epoch cap: --num_epochs 1 x [0-9]* steps per epoch = [0-9]* steps, before --max_steps 1000; .* ends at lr " "$run_dir/first.log" ||
      fail "the epoch cap is not announced at the start"
    grep -q "^stopped at step [0-9]*: reached the epoch cap" "$run_dir/first.log" || fail "the stop does not say it was the epoch cap"
    job --max_steps 3 --start_over > "$run_dir/second.log" 2>&1 || { cat "$run_dir/second.log"; fail "the second job failed"; }
    grep -q "^stopped at step 3: reached --max_steps 3" "$run_dir/second.log" || fail "the stop does not say it was max_steps"
    grep -q "epoch cap" "$run_dir/second.log" && fail "an epoch cap is mentioned where there is none"
    ;;
  fake-changed)
    job --max_steps 2 > "$run_dir/first.log" 2>&1 || { cat "$run_dir/first.log"; fail "the first job failed"; }
    job --max_steps 4 --resume auto --fake_samples 100 > "$run_dir/second.log" 2>&1
    rc=$?; cat "$run_dir/second.log"
    [ $rc -eq 0 ] || fail "the job with other --fake_samples exited $rc"
    grep -q "was written with other --fake_\* options .*writing it anew (100 samples" "$run_dir/second.log" || fail "the outdated synthetic dataset was not rewritten"
    grep -q '"count": *100' "$run_dir/run/fake_data/dataset.json" || fail "the manifest does not hold 100 samples"
    job --max_steps 6 --resume auto --fake_samples 100 > "$run_dir/third.log" 2>&1 || fail "the third job failed"
    grep -q "synthetic dataset" "$run_dir/third.log" && fail "a current synthetic dataset was written again"
    ;;
  signal)
    # mpiexec itself in the background (not a wrapper), so that the signal reaches it and it forwards it.
    "$mpiexec" --oversubscribe -n 2 "$ovmpi" --config "$config" --device cpu --run_dir "$run_dir" --run_name run \
      --evaluate_every 0 --warmup_steps 1 --max_steps 100000 --log_every 1 --checkpoint_every 1000000 > "$run_dir/first.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do grep -q "^step 5/" "$run_dir/first.log" 2>/dev/null && break; sleep 0.1; done
    # One rank gets the signal (as under Slurm, where each task is signalled; mpiexec's own forwarding
    # differs between OpenMPI builds): every rank must agree on it at the next step boundary.
    ranks=$(pgrep -P "$pid" -f openvid_mpi | head -1)
    [ -n "$ranks" ] || fail "no rank process found under mpiexec"
    kill -USR1 "$ranks"
    # A watchdog that ends with the job (a plain `sleep 120` would hold the test's output open).
    ( for _ in $(seq 240); do sleep 0.5; kill -0 "$pid" 2>/dev/null || exit 0; done; kill -9 "$pid" ) >/dev/null 2>&1 &
    wait "$pid"; rc=$?; cat "$run_dir/first.log"
    [ $rc -eq 3 ] || fail "expected exit code 3 (checkpointed, requeue me), got $rc"
    step=$(grep -o "checkpoint written at step [0-9]*" "$run_dir/first.log" | grep -o "[0-9]*$")
    [ -n "$step" ] || fail "no checkpoint message"
    [ "$(grep -c 'received signal' "$run_dir/first.log")" -eq 1 ] || fail "the message is not printed exactly once"
    job --max_steps $((step + 2)) --resume auto > "$run_dir/second.log" 2>&1 || fail "the requeued job failed"
    cat "$run_dir/second.log"
    grep -q "resuming from .* at step $step" "$run_dir/second.log" || fail "the requeued job did not resume at step $step"
    ;;
  startup-signal)
    # A signal while the job starts (here: held 4 s before its first check) must not kill it with 138: every
    # rank exits 3 without a checkpoint (nothing was trained), and the requeued job starts cleanly.
    OPENVID_FAULT_START_DELAY=4 "$mpiexec" --oversubscribe -n 2 "$ovmpi" --config "$config" --device cpu --run_dir "$run_dir" \
      --run_name run --evaluate_every 0 --warmup_steps 1 --max_steps 3 > "$run_dir/first.log" 2>&1 &
    pid=$!
    # The signal goes once a rank says it is held (its handlers are installed by then): loading a CUDA
    # LibTorch alone can take longer than any fixed sleep.
    for _ in $(seq 600); do grep -q "start-up held" "$run_dir/first.log" && break; sleep 0.1; done
    ranks=$(pgrep -P "$pid" -f openvid_mpi | head -1)
    [ -n "$ranks" ] && grep -q "start-up held" "$run_dir/first.log" || fail "no rank reached its held start-up within 60 s"
    kill -USR1 "$ranks"
    ( for _ in $(seq 120); do sleep 0.5; kill -0 "$pid" 2>/dev/null || exit 0; done; kill -9 "$pid" ) >/dev/null 2>&1 &
    wait "$pid"; rc=$?; cat "$run_dir/first.log"
    [ $rc -eq 3 ] || fail "expected exit code 3 for a signal during the start-up, got $rc"
    [ "$(grep -c 'before the first step' "$run_dir/first.log")" -eq 1 ] || fail "no single message about the early signal"
    [ -z "$(ls "$ck" 2>/dev/null)" ] || fail "a checkpoint was written although nothing was trained"
    job --max_steps 3 --resume auto > "$run_dir/second.log" 2>&1 || { cat "$run_dir/second.log"; fail "the requeued job failed"; }
    cat "$run_dir/second.log"
    grep -q "starting at step 0" "$run_dir/second.log" && grep -q "^step 3/3 " "$run_dir/second.log" || fail "the requeued job did not train from step 0"
    ;;
  export-on-resume)
    # A finished run whose export is missing (a crash after the last checkpoint) gets it on --resume auto.
    job --max_steps 2 > "$run_dir/first.log" 2>&1 || { cat "$run_dir/first.log"; fail "the first job failed"; }
    rm "$run_dir/run/model.safetensors"
    job --max_steps 2 --resume auto > "$run_dir/second.log" 2>&1; rc=$?; cat "$run_dir/second.log"
    [ $rc -eq 0 ] || fail "the resumed job exited $rc"
    grep -q "wrote its missing export" "$run_dir/second.log" && [ -s "$run_dir/run/model.safetensors" ] || fail "the export was not written"
    cmp -s "$run_dir/run/model.safetensors" "$ck/step_00000002/model.safetensors" || fail "the export differs from the last checkpoint's weights"
    ;;
  prune-incomplete)
    # Checkpoint directories a crash left without their marker (and abandoned temporaries) are removed at the
    # next commit; complete ones beyond --keep_checkpoints too.
    job --max_steps 2 --checkpoint_every 1 > "$run_dir/first.log" 2>&1 || { cat "$run_dir/first.log"; fail "the first job failed"; }
    mkdir -p "$ck/step_00000099" "$ck/step_00000100.tmp"
    cp "$ck/step_00000002/model.safetensors" "$ck/step_00000099/"
    job --max_steps 4 --checkpoint_every 1 --keep_checkpoints 2 --resume auto > "$run_dir/second.log" 2>&1 \
      || { cat "$run_dir/second.log"; fail "the resumed job failed"; }
    grep -q "resuming from .*step_00000002" "$run_dir/second.log" || fail "--resume auto took an incomplete checkpoint"
    left=$(ls "$ck" | tr '\n' ' ')
    [ "$left" = "step_00000003 step_00000004 " ] || fail "checkpoints left: $left (expected step_00000003 step_00000004)"
    ;;
  bad-relaunch)
    # A relaunch with bad input changes nothing of the finished run: not even its config.ini.
    job --max_steps 2 > "$run_dir/first.log" 2>&1 || { cat "$run_dir/first.log"; fail "the first job failed"; }
    cp "$run_dir/run/config.ini" "$run_dir/config.before"
    for bad in "--dataset $run_dir/nonexistent" "--load_checkpoint $run_dir/nonexistent.safetensors" "--resume $ck/step_00000077"; do
      job --max_steps 3 $bad > "$run_dir/bad.log" 2>&1; rc=$?
      [ $rc -eq 2 ] || { cat "$run_dir/bad.log"; fail "'$bad': expected exit 2, got $rc"; }
      cmp -s "$run_dir/run/config.ini" "$run_dir/config.before" || fail "'$bad' rewrote config.ini"
    done
    ;;
  unwritable-run-dir)
    # A run directory that exists but cannot be written is refused before the first step, not at the first
    # checkpoint (/proc/self: not writable even for root).
    timeout -k 5 60 "$mpiexec" --oversubscribe -n 2 "$ovmpi" --config "$config" --device cpu --run_dir /proc --run_name self --warmup_steps 1 \
      --max_steps 3 > "$run_dir/first.log" 2>&1; rc=$?; cat "$run_dir/first.log"
    [ $rc -eq 2 ] || fail "expected exit 2, got $rc"
    grep -q "is not writable" "$run_dir/first.log" && ! grep -q "^step 1/" "$run_dir/first.log" || fail "not refused at the start"
    ;;
  corrupt)
    job --max_steps 2 > "$run_dir/first.log" 2>&1 || { cat "$run_dir/first.log"; fail "the first job failed"; }
    f=$ck/step_00000002/model.safetensors
    truncate -s -100 "$f"
    job --max_steps 4 --resume "$ck/step_00000002" > "$run_dir/second.log" 2>&1
    rc=$?; cat "$run_dir/second.log"
    [ $rc -eq 2 ] || fail "expected exit 2 for a truncated checkpoint, got $rc"
    [ "$(grep -c "model.safetensors.*truncated" "$run_dir/second.log")" -eq 1 ] || fail "no single message naming the truncated file"
    job --max_steps 4 --resume "$ck/step_00000099" > "$run_dir/third.log" 2>&1
    rc=$?; cat "$run_dir/third.log"
    [ $rc -eq 2 ] && grep -q "missing or incomplete" "$run_dir/third.log" || fail "a missing checkpoint is not reported (exit $rc)"
    ;;
  nonfinite)
    job --max_steps 20 --learning_rate 1e30 --max_nonfinite_steps 3 --log_every 1 > "$run_dir/first.log" 2>&1
    rc=$?; cat "$run_dir/first.log"
    [ $rc -eq 1 ] || fail "expected exit 1 after repeated non-finite steps, got $rc"
    [ "$(grep -c "not finite in 3 steps in a row" "$run_dir/first.log")" -eq 1 ] || fail "no single message about non-finite steps"
    grep -q "skipped [1-9]" "$run_dir/first.log" || fail "skipped steps are not counted in the log"
    python3 -c "import json, sys
def reject(c): raise ValueError('not JSON: ' + c)
rows = [json.loads(l, parse_constant=reject) for l in open(sys.argv[1])]
assert any(r['loss'] is None for r in rows), rows" "$run_dir/run/metrics.jsonl" || fail "metrics.jsonl is not strict JSON with null for a non-finite loss"
    ;;
  profile)
    job --max_steps 3 --profile_dir "$run_dir/profile" > "$run_dir/first.log" 2>&1 || { cat "$run_dir/first.log"; fail "the job failed"; }
    for r in 0 1; do
      python3 -c "import json, sys
t = json.load(open(sys.argv[1]))
names = sorted({e['name'] for e in t})
assert names == ['checks_and_optimizer', 'data_wait', 'finish_gradient_reduction', 'forward_backward', 'gather_parameters'], names
assert len(t) == 15 and all(e['dur'] >= 0 and e['pid'] == int(sys.argv[2]) for e in t), len(t)" "$run_dir/profile/trace-rank$r.json" "$r" \
        || fail "trace-rank$r.json is not a timeline of 3 steps x 5 phases"
      # LibTorch's profiler traced --profile_steps (default 2:4; the run ends after step 2), with the ranges.
      python3 -c "import json, sys
t = json.load(open(sys.argv[1]))['traceEvents']
names = {e['name'] for e in t if e.get('cat') == 'user_annotation'}
assert {'step 2', 'forward', 'backward', 'optimizer'} <= names and 'step 1' not in names, names
assert sum(e.get('cat') == 'cpu_op' for e in t) > 50" "$run_dir/profile/kineto-rank$r.json" \
        || fail "kineto-rank$r.json is not a Kineto trace of step 2"
    done
    ;;
  *) fail "unknown scenario $scenario" ;;
esac
echo PASS
