#!/usr/bin/env bash
# slurm/train_8node.sh under a real Slurm: a private cluster on this machine (munged, slurmctld and two
# slurmd daemons "-N node1/node2" with their own ports, all started here and stopped by their PIDs at the
# end), then
#   1. the batch script on 2 nodes x 1 CPU rank trains the quick start and checkpoints (exit code 0);
#   2. the same job gets the preemption signal (USR1) mid-run: it checkpoints, exits 3, requeues itself and
#      the requeued job resumes (--resume auto) and finishes with weights identical to those of an
#      uninterrupted run.
#   slurm_job.sh SOURCE_DIR OPENVID_MPI WORKDIR
# Exits 77 (skipped) when Slurm's daemons are not installed or this is not root (tools/setup.sh installs
# them in containers and CI, where no systemd would start them as services).
set -u
src=$1 ovmpi=$2 work=$3
for cmd in munged slurmctld slurmd sbatch scontrol squeue; do
  command -v "$cmd" > /dev/null || { echo "SKIP: $cmd is not installed (tools/setup.sh installs Slurm in containers and CI)"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "SKIP: starting Slurm's daemons needs root"; exit 77; }

fail() { echo "FAIL: $*"; for f in "$work"/*.log "$work"/*.out; do [ -f "$f" ] && { echo "== $f"; tail -20 "$f"; }; done; exit 1; }
rm -rf "$work"
mkdir -p "$work/state" "$work/jobs"
cd "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2> /dev/null; done
}
trap cleanup EXIT

# Ports of this test's own (apart from a system Slurm's 6817/6818), by process id.
base=$((20000 + ($$ % 2000) * 10))
host=$(hostname)
dd if=/dev/urandom of="$work/munge.key" bs=1024 count=1 2> /dev/null
chmod 600 "$work/munge.key"
munged --force --foreground --socket="$work/munge.sock" --key-file="$work/munge.key" --pid-file="$work/munged.pid" \
  --log-file="$work/munged.log" --seed-file="$work/munged.seed" &
pids+=($!)
cat > "$work/slurm.conf" <<EOF
ClusterName=openvidtest
SlurmctldHost=$host
SlurmctldPort=$base
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start once its previous credential has expired (default 120 s): short here.
AuthInfo=socket=$work/munge.sock,cred_expire=5
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool-%n
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd-%n.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
# Both nodes are this machine: each gets its own temporary directory (PMIx keeps per-step files there).
TmpFS=$work/tmp-%n
NodeName=node1 NodeHostname=$host Port=$((base + 1)) CPUs=1 RealMemory=2000 TmpDisk=100 State=UNKNOWN
NodeName=node2 NodeHostname=$host Port=$((base + 2)) CPUs=1 RealMemory=2000 TmpDisk=100 State=UNKNOWN
PartitionName=test Nodes=node1,node2 Default=YES MaxTime=30 State=UP
EOF
export SLURM_CONF=$work/slurm.conf
for _ in $(seq 50); do [ -S "$work/munge.sock" ] && break; sleep 0.1; done
slurmctld -D -f "$SLURM_CONF" > "$work/slurmctld.out" 2>&1 &
pids+=($!)
for n in node1 node2; do
  mkdir -p "$work/spool-$n" "$work/tmp-$n"
  slurmd -D -N "$n" -f "$SLURM_CONF" > "$work/slurmd-$n.out" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do [ "$(sinfo -h -o %t 2> /dev/null | sort -u)" = "idle" ] && break; sleep 0.2; done
[ "$(sinfo -h -o %D 2> /dev/null)" = 2 ] && [ "$(sinfo -h -o %t | sort -u)" = "idle" ] || fail "the private Slurm did not come up: $(sinfo 2>&1)"

submit() {  # name, then openvid_mpi options after the configuration; prints the job id
  local name=$1; shift
  (cd "$work/jobs" && sbatch --parsable --job-name="$name" --output="$work/$name-%j.out" --nodes=2 --ntasks-per-node=1 \
     --cpus-per-task=1 --gpus-per-node=0 --time=10 \
     --export=ALL,OPENVID_CPU=1,OPENVID_BIN="$ovmpi",OMPI_ALLOW_RUN_AS_ROOT=1,OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
     "$src/slurm/train_8node.sh" "$src/config/quickstart.ini" --run_dir "$work/runs" --run_name "$name" "$@")
}
finished() {  # job id: waits until Slurm no longer lists it (at most 240 s)
  for _ in $(seq 1200); do
    local state
    state=$(squeue -h -j "$1" -o "%T %r" 2> /dev/null)
    [ -z "$state" ] && return 0
    sleep 0.2
  done
  return 1
}
exit_code() { scontrol show job "$1" 2> /dev/null | grep -o ' ExitCode=[0-9]*:[0-9]*' | cut -d= -f2; }

# 1. A plain run.
job=$(submit plain --max_steps 20) || fail "sbatch refused the batch script"
finished "$job" || fail "job $job did not finish within 240 s"
log=$work/plain-$job.out
grep -q "^openvid [0-9.]*: 2 ranks on 2 node(s)" "$log" || fail "the job did not run 2 ranks on 2 nodes"
grep -q "^stopped at step 20: reached --max_steps 20" "$log" || fail "the job did not train to step 20"
[ -f "$work/runs/plain/checkpoints/step_00000020/COMPLETE" ] || fail "no checkpoint of step 20"
[ "$(exit_code "$job")" = "0:0" ] || fail "job $job ended with exit code $(exit_code "$job"), not 0:0"
echo "PASS: the batch script trained on 2 nodes and checkpointed (job $job)"

# 2. Preemption: the signal Slurm sends before a time limit, mid-run; then requeue and resume.
steps=150
straight=$(submit straight --max_steps $steps --log_every 1 --evaluate_every 0 --checkpoint_every 1000) || fail "sbatch refused"
job=$(submit preempted --max_steps $steps --log_every 1 --evaluate_every 0 --checkpoint_every 1000) || fail "sbatch refused"
log=$work/preempted-$job.out
for _ in $(seq 600); do grep -q "^step 10/" "$log" 2> /dev/null && break; sleep 0.1; done
grep -q "^step 10/" "$log" || fail "the job to preempt never reached step 10"
scancel --signal=USR1 "$job" || fail "scancel --signal=USR1 failed"
finished "$job" || fail "the preempted job $job did not finish within 240 s"
finished "$straight" || fail "job $straight did not finish"
grep -q "checkpoint written at step [0-9]*; exiting with code 3" "$log" || fail "no checkpoint on the signal"
grep -q "requeueing job $job (restart 1)" "$log" || fail "the batch script did not requeue the job"
grep -q "openvid job $job (restart 1)" "$log" || fail "the requeued job did not start again"
at=$(grep -o "checkpoint written at step [0-9]*" "$log" | grep -o "[0-9]*$")
grep -q "resuming from .*step_$(printf %08d "$at") at step $at" "$log" || fail "the requeued job did not resume at step $at"
grep -q "^stopped at step $steps: reached --max_steps $steps" "$log" || fail "the resumed job did not finish"
[ "$(exit_code "$job")" = "0:0" ] || fail "the requeued job ended with exit code $(exit_code "$job")"
cmp -s "$work/runs/preempted/model.safetensors" "$work/runs/straight/model.safetensors" ||
  fail "the preempted and resumed run's weights differ from the uninterrupted run's"
echo "PASS: signalled at step $at, checkpointed, requeued, resumed and finished with the uninterrupted run's weights (job $job)"
