#!/bin/bash
# openvid on 8 nodes x 8 GPUs, one MPI rank per GPU:
#   sbatch slurm/train_8node.sh CONFIG.ini [openvid_mpi options]        (e.g. config/reference_small.ini)
# Every #SBATCH line can be overridden on the command line (sbatch --nodes=2 --gpus-per-node=4 ...), and
# the variables below from the environment (sbatch --export=ALL,OPENVID_IMAGE=openvid.sif ...).
#
#   OPENVID_MPI_PLUGIN   srun's --mpi plugin (default pmix; `srun --mpi=list` shows what the cluster has)
#   OPENVID_BIN          the trainer (default build/openvid_mpi under the submit directory)
#   OPENVID_IMAGE        an Apptainer image: ranks run `apptainer exec --nv IMAGE openvid_mpi` (the image's
#                        OpenMPI must speak the host's PMIx; see docs/cluster.md "Clusters")
#   OPENVID_BIND         extra bind mounts for the image, e.g. /data,/scratch (the submit directory is bound)
#   OPENVID_MAX_REQUEUES requeues after a signal before the job gives up (default 20)
#   OPENVID_CPU          1: CPU ranks (no GPUs; for tests and CPU clusters)
#
# Preemption and time limits: Slurm sends SIGUSR1 to every task 5 minutes before the end (--signal);
# openvid agrees on it at the next step, writes a checkpoint and exits with code 3; this script then
# requeues the job (up to OPENVID_MAX_REQUEUES times), and the requeued job continues with --resume auto
# from the newest complete checkpoint. The job's exit code is the trainer's.
#SBATCH --job-name=openvid
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=USR1@300
#SBATCH --requeue
set -uo pipefail
config=${1:?usage: sbatch slurm/train_8node.sh CONFIG.ini [openvid_mpi options]}
shift
cd "${SLURM_SUBMIT_DIR:-.}"
restarts=${SLURM_RESTART_COUNT:-0}
echo "openvid job ${SLURM_JOB_ID:-?} (restart ${restarts}) on ${SLURM_JOB_NUM_NODES:-?} node(s): $(date -u +%FT%TZ)"

# Many parallel file systems do not support HDF5's file locking.
export HDF5_USE_FILE_LOCKING=FALSE
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-8}
# Since Slurm 22.05 srun no longer inherits --cpus-per-task from the allocation.
[ -n "${SLURM_CPUS_PER_TASK:-}" ] && export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK
# NCCL needs nothing here on most clusters (openvid's watchdog aborts a stalled collective after
# --collective_timeout); set NCCL_SOCKET_IFNAME / NCCL_IB_HCA if the cluster's documentation says so, and
# NCCL_DEBUG=INFO to see the transports NCCL picked.

bin=${OPENVID_BIN:-build/openvid_mpi}
launch=("$bin")
if [ -n "${OPENVID_IMAGE:-}" ]; then
  binds="$PWD${OPENVID_BIND:+,$OPENVID_BIND}"
  launch=(apptainer exec --nv --bind "$binds" --pwd "$PWD" "$OPENVID_IMAGE" openvid_mpi)
fi
device=()
[ "${OPENVID_CPU:-0}" = 1 ] && device=(--device cpu)

# One rank per GPU, bound to cores: --gpus-per-task=1 binds each task to one GPU of the node's allocation
# (Slurm then sets CUDA_VISIBLE_DEVICES per task), and openvid computes on the one GPU it sees. Launched
# without it every task sees all GPUs and openvid takes the one numbered by its node-local rank; either way
# two ranks on one GPU are refused at start-up.
gpus=(--gpus-per-task=1)
[ "${OPENVID_CPU:-0}" = 1 ] && gpus=()
# Not --kill-on-bad-exit=1: on a signal every rank exits 3 at about the same time, and srun would kill the
# ranks still finishing (its exit code then is 137, not 3, and the job would not be requeued). openvid takes
# the job down itself on failures (MPI_Abort); --wait bounds the rest (a rank that died without it).
srun --mpi="${OPENVID_MPI_PLUGIN:-pmix}" "${gpus[@]}" --cpu-bind=cores --kill-on-bad-exit=0 --wait=120 \
  "${launch[@]}" --config "$config" --resume auto "${device[@]}" "$@"
rc=$?  # the job's exit status is the trainer's
if [ "$rc" -eq 3 ]; then
  if [ "$restarts" -ge "${OPENVID_MAX_REQUEUES:-20}" ]; then
    echo "openvid checkpointed on a signal, but the job was already requeued $restarts times (OPENVID_MAX_REQUEUES): not requeueing"
  else
    echo "openvid checkpointed on a signal: requeueing job $SLURM_JOB_ID (restart $((restarts + 1)))"
    scontrol requeue "$SLURM_JOB_ID"
  fi
fi
exit "$rc"
