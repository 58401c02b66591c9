#!/usr/bin/env bash
# Installs what openvid needs on a Debian/Ubuntu machine, then configures and builds it in build/.
# Idempotent: a second run checks, finds everything, and rebuilds only what changed (seconds).
#
# Environment knobs:
#   OPENVID_BUILD_DIR    build directory (default: build)
#   OPENVID_BUILD_TYPE   CMake build type (default: Release; RelWithDebInfo for debugging)
#   OPENVID_TORCH_INDEX  pip index for torch when no LibTorch is found (e.g. https://download.pytorch.org/whl/cpu;
#                        plain PyPI serves a CUDA build of several GB on Linux)
#   OPENVID_SLURM_TEST   auto (default): install Slurm's daemons and munge for the Slurm test when root and no
#                        systemd runs (containers, CI); on | off
#   OPENVID_NCCL         auto (default): when CUDA's nvcc is present, also compile the NCCL backend (getting
#                        NCCL's header and library from the pip wheel nvidia-nccl-cu13 if needed); on | off
#   CMAKE_PREFIX_PATH    honoured: point it at an official LibTorch archive to skip the venv
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
build=${OPENVID_BUILD_DIR:-build}
CMAKE_PREFIX_PATH=${CMAKE_PREFIX_PATH:-}
say() { echo "setup: $*"; }

# ---- system packages ------------------------------------------------------------------------------
packages=(cmake ninja-build g++ pkg-config openmpi-bin libopenmpi-dev libhdf5-openmpi-dev
          libboost-program-options-dev libboost-test-dev nlohmann-json3-dev ccache procps python3-venv
          libsentencepiece-dev libavformat-dev libavcodec-dev libswscale-dev)
# Slurm's daemons and munge, for the test that runs slurm/train_8node.sh under a private Slurm: where no
# systemd would start them as services (containers, CI), or with OPENVID_SLURM_TEST=on. Elsewhere the test
# is skipped.
slurm_test=${OPENVID_SLURM_TEST:-auto}
if [ "$slurm_test" = on ] || { [ "$slurm_test" = auto ] && [ "$(id -u)" -eq 0 ] && [ ! -d /run/systemd/system ]; }; then
  packages+=(slurmd slurmctld slurm-client munge)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# python3-venv is only needed when the interpreter cannot make venvs by itself (pyenv builds can).
if [[ " ${missing[*]} " == *" python3-venv "* ]] && python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing=("${missing[@]/python3-venv/}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: missing packages: ${missing[*]}; install them as root:" \
      "apt-get install -y ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  say "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- LibTorch ---------------------------------------------------------------------------------------
cmake_args=()
have_torch() {  # an official LibTorch on CMAKE_PREFIX_PATH, or a python with torch
  local d
  for d in ${CMAKE_PREFIX_PATH//:/ }; do
    [ -f "$d/share/cmake/Torch/TorchConfig.cmake" ] || [ -f "$d/Torch/TorchConfig.cmake" ] && return 0
  done
  [ -x "$root/.venv/bin/python3" ] && "$root/.venv/bin/python3" -c 'import torch' 2>/dev/null && return 0
  return 1
}
if ! have_torch; then
  say "no LibTorch found: making .venv with torch==2.13.0 (CPU)"
  [ -x "$root/.venv/bin/python3" ] || python3 -m venv "$root/.venv"
  "$root/.venv/bin/pip" install -q --disable-pip-version-check \
    ${OPENVID_TORCH_INDEX:+--index-url "$OPENVID_TORCH_INDEX"} torch==2.13.0
fi
# h5py: the test that reads a dataset written by h5py alone; safetensors: tools/reference_dit.py;
# matplotlib: tools/plot_metrics.py; tensorboard: the test that reads the runs' TensorBoard files. Without a .venv (LibTorch from CMAKE_PREFIX_PATH) one is made for them.
[ -x "$root/.venv/bin/python3" ] || python3 -m venv "$root/.venv"
if ! "$root/.venv/bin/python3" -c 'import h5py, safetensors, matplotlib, tensorboard' 2>/dev/null; then
  say "installing h5py, safetensors, matplotlib and tensorboard into .venv (tests and tools)"
  "$root/.venv/bin/pip" install -q --disable-pip-version-check h5py safetensors matplotlib tensorboard
fi

# ---- NCCL backend compile check (CUDA toolkit present, no GPU needed) --------------------------------
nccl=${OPENVID_NCCL:-auto}
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
if [ "$nccl" != off ] && [ -n "$nvcc" ]; then
  if [ -z "${NCCL_HOME:-}" ] && ! ls "$root"/.venv/lib/python3*/site-packages/nvidia/nccl/include/nccl.h >/dev/null 2>&1; then
    if [ -x "$root/.venv/bin/pip" ]; then
      say "CUDA toolkit found: getting NCCL (pip nvidia-nccl-cu13) to compile the NCCL backend"
      "$root/.venv/bin/pip" install -q --disable-pip-version-check nvidia-nccl-cu13 || say "NCCL wheel not installed"
    fi
  fi
  cmake_args+=(-DOPENVID_WITH_NCCL=ON -DCUDAToolkit_ROOT="$(dirname "$(dirname "$nvcc")")")
elif [ "$nccl" = on ]; then
  echo "setup: OPENVID_NCCL=on but no nvcc was found" >&2; exit 1
fi

# ---- configure and build ----------------------------------------------------------------------------
# ccache with the precompiled header: it must not insist on the header's macros and timestamps.
command -v ccache >/dev/null &&
  cmake_args+=("-DCMAKE_CXX_COMPILER_LAUNCHER=env;CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime;ccache")
if [ ! -f "$build/CMakeCache.txt" ]; then
  say "configuring $build/"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${OPENVID_BUILD_TYPE:-Release}" "${cmake_args[@]}" >/dev/null
fi
say "building $build/"
cmake --build "$build" -j "$(nproc)" | grep -vE '^\[[0-9]+/[0-9]+\] ' || true
test -x "$build/openvid_mpi" || { echo "setup: the build failed" >&2; exit 1; }
say "ready: $build/openvid_mpi"
