#!/usr/bin/env bash
# Builds the Docker image and trains the quick-start model on a synthetic dataset on every GPU of this node
# (one rank per GPU), the runs written to ./runs. From the repository root: docker/quickstart.sh [options]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
docker build -f docker/Dockerfile -t openvid .
gpus=$(nvidia-smi -L | wc -l)
mkdir -p runs
docker run --rm --gpus all --ipc=host -v "$PWD/runs:/work/runs" openvid \
  -np "$gpus" openvid_mpi --config /opt/openvid/share/openvid/config/quickstart.ini --device cuda "$@"
