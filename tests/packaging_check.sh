#!/usr/bin/env bash
# The cluster packaging, as far as it can be checked without Apptainer, Docker or Slurm on this machine:
# the image recipes build with the project's own set-up script (the one the README's test command and CI
# run) and install with cmake --install, they have the sections a user looks for, copy no repository
# state (.git, runs), and the batch script has the settings a cluster needs. Then `cmake --install` of
# BUILD_DIR into a scratch prefix gives a working openvid_mpi of the project's version.
#   packaging_check.sh SOURCE_DIR BUILD_DIR
set -u
src=$1 build=$2
fail=0
check() { if ! grep -qE -- "$2" "$src/$1"; then echo "FAIL: $1 lacks /$2/ ($3)"; fail=1; fi; }
lacks() { if grep -qE -- "$2" "$src/$1"; then echo "FAIL: $1 has /$2/ ($3)"; fail=1; fi; }

check README.md '^    tools/setup.sh && ctest --test-dir build' "the README's test command runs tools/setup.sh"
check .ci/run '^tools/setup.sh && ctest --test-dir build' "CI runs the README's test command"
for s in '%labels' '%help' '%files' '%post' '%environment' '%runscript' '%test'; do check singularity/openvid.def "^$s" "section $s"; done
check singularity/openvid.def '^From: .*-devel' "a CUDA development base (openvid compiles CUDA kernels)"
check singularity/openvid.def 'tools/setup.sh' "built by the project's set-up script"
check singularity/openvid.def 'cmake --install build --prefix /opt/openvid' "installed with cmake --install"
check singularity/openvid.def 'apptainer exec --nv' "use with GPUs documented"
lacks singularity/openvid.def '^    \. ' "copies the whole checkout (.git, runs)"
check docker/Dockerfile '^ARG BASE=.*-devel' "a CUDA development base"
check docker/Dockerfile 'tools/setup.sh' "built by the project's set-up script"
check docker/Dockerfile 'cmake --install build --prefix /opt/openvid' "installed with cmake --install"
lacks docker/Dockerfile '^COPY \. ' "copies the whole checkout"
check .dockerignore '^\.git$' ".git stays out of the build context"
check .dockerignore '^runs$' "runs stay out of the build context"
check docker/quickstart.sh 'docker run .*--gpus all' "runs on every GPU of the node"
for s in '--open-mode=append' 'SRUN_CPUS_PER_TASK' 'OPENVID_MPI_PLUGIN' 'OPENVID_MAX_REQUEUES' 'SLURM_RESTART_COUNT' \
         '--resume auto' 'apptainer exec --nv' 'scontrol requeue' '--signal=USR1@' '--cpu-bind'; do
  check slurm/train_8node.sh "$s" "batch script setting"
done
bash -n "$src/slurm/train_8node.sh" || { echo "FAIL: slurm/train_8node.sh does not parse"; fail=1; }

prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
if cmake --install "$build" --prefix "$prefix" > "$prefix/install.log" 2>&1; then
  want="openvid $(sed -nE 's/^project\(openvid VERSION ([0-9.]+).*/\1/p' "$src/CMakeLists.txt")"
  got=$("$prefix/bin/openvid_mpi" --version 2>&1)
  [ "$got" = "$want" ] || { echo "FAIL: the installed openvid_mpi says '$got', not '$want'"; fail=1; }
  for f in share/openvid/config/quickstart.ini share/openvid/slurm/train_8node.sh share/openvid/docs/training.md bin/openvid_modelcheck; do
    [ -e "$prefix/$f" ] || { echo "FAIL: cmake --install put no $f"; fail=1; }
  done
else
  cat "$prefix/install.log"; echo "FAIL: cmake --install failed"; fail=1
fi
[ $fail -eq 0 ] && echo PASS
exit $fail
