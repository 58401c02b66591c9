#!/usr/bin/env bash
# Before/after step times in one call (run on the GPU machine, from the repository root):
#   bash bench/ab_step_bench.sh BASE_TREE [WIDTHxDEPTH ...]      (default: 1024x16 2048x8)
# BASE_TREE is another checkout of openvid (e.g. `git archive <commit> | tar -x -C .base && echo <commit> >
# .base/.commit`, carried to the machine). Both trees are built (openvid_mpi only, in parallel), then bench/step_bench.sh runs openvid alone
# (BASELINE=0, no trace) on each, alternating base, this tree, base, this tree, so that drift of the GPU's
# clock falls on both. Prints each run's summary table; copies them to $OUT as ab_<n>_<tree>.md.
set -uo pipefail
base=${1:?usage: bench/ab_step_bench.sh BASE_TREE [WIDTHxDEPTH ...]}
shift
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(1024x16 2048x8)
if [ -f .device/deps.sh ]; then source .device/deps.sh > /tmp/ab-deps.log 2>&1; fi
jobs=$(( $(nproc) / 2 ))
build() {  # $1: tree, $2: label
  (cd "$1" && cmake -S . -B build-gpu ${OPENVID_CMAKE_ARGS:-} -DOPENVID_BUILD_TESTS=OFF > "/tmp/ab-build-$2.log" 2>&1 &&
    cmake --build build-gpu -j "$jobs" --target openvid_mpi >> "/tmp/ab-build-$2.log" 2>&1) || { echo "build of $1 failed:"; tail -20 "/tmp/ab-build-$2.log"; return 1; }
}
t0=$SECONDS
build "$base" base & b1=$!
build . new & b2=$!
wait $b1 || exit 1
wait $b2 || exit 1
echo "both built in $((SECONDS - t0)) s"
base_commit=$(cat "$base/.commit" 2>/dev/null || echo base)
new_commit=${NEW_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo this-tree)}
n=0
for tree in "$base" . "$base" .; do
  n=$((n + 1))
  label=$([ "$tree" = . ] && echo new || echo base)
  echo "== run $n: $label ($tree)"
  # Each tree's own benchmark script, over its own build.
  (cd "$tree" && BASELINE=0 PROFILE=none COMMIT=$([ "$tree" = . ] && echo "$new_commit" || echo "$base_commit") \
    bash bench/step_bench.sh "${configs[@]}") > "/tmp/ab_${n}_${label}.txt" 2>&1
  grep -E "^\|" "/tmp/ab_${n}_${label}.txt"
  [ -n "${OUT:-}" ] && cp "/tmp/ab_${n}_${label}.txt" "$OUT/ab_${n}_${label}.md"
done
