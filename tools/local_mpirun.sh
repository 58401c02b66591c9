#!/usr/bin/env bash
# mpirun on this one machine: allows more ranks than cores (--oversubscribe) and, when run as root
# (containers, CI), sets the two variables OpenMPI requires for that. Arguments go to mpirun unchanged:
#   tools/local_mpirun.sh -np 2 build/openvid_mpi --config config/quickstart.ini
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
exec mpirun --oversubscribe "$@"
