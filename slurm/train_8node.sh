#!/bin/bash
# openvid on 8 nodes x 8 GPUs, one MPI rank per GPU. Usage: sbatch slurm/train_8node.sh CONFIG.ini [options]
# (e.g. config/video_2048x8.ini)
# Edit the #SBATCH lines (partition, account, time) for your cluster.
#
# Preemption and time limits: Slurm sends SIGUSR1 to every task 5 minutes before the end; openvid agrees
# on it at the next step, writes a checkpoint and exits with code 3; this script then requeues the job,
# and the requeued job continues with --resume auto from the newest complete checkpoint.
#SBATCH --job-name=openvid
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
#SBATCH --signal=USR1@300
#SBATCH --requeue
set -uo pipefail
config=${1:?usage: sbatch slurm/train_8node.sh CONFIG.ini [openvid_mpi options]}
shift
cd "${SLURM_SUBMIT_DIR:-.}"
# Many parallel file systems do not support HDF5's file locking.
export HDF5_USE_FILE_LOCKING=FALSE
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-8}
# One rank per GPU; openvid picks the GPU from the node-local rank.
# Not --kill-on-bad-exit=1: on a signal every rank exits 3 at about the same time, and srun would kill the
# ranks still finishing (its exit code then is 137, not 3, and the job would not be requeued). openvid takes
# the job down itself on failures (MPI_Abort); --wait bounds the rest (a rank that died without it).
srun --mpi=pmix --kill-on-bad-exit=0 --wait=120 build/openvid_mpi --config "$config" --resume auto "$@"
rc=$?  # the job's exit status is the trainer's
if [ "$rc" -eq 3 ]; then
  echo "openvid checkpointed on a signal: requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
