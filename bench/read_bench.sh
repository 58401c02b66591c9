#!/usr/bin/env bash
# Read throughput of openvid's dataset reader at 1, 2 and 4 ranks against a plain sequential read (dd) of
# the same shard files. Median of REPEATS runs each. Usage: bench/read_bench.sh [DATA_DIR] [REPEATS]
# Writes a ~2.2 GB synthetic dataset on first use (16x32x32 latents, 512x4096 text states: 4.5 MiB a sample).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
data=${1:-/tmp/openvid_bench_data}
repeats=${2:-3}
mpirun=(tools/local_mpirun.sh)
if [ ! -f "$data/dataset.json" ]; then
  "${mpirun[@]}" -np 2 build/openvid_make_dataset --out "$data" --samples 480 --shape 16x32x32 --shards 2
fi
du -sh "$data"
# Cold reads where the kernel lets us drop the page cache; warm (cached) reads otherwise, for both sides.
cold() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo cold || echo warm; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "== dd (sequential read of the shards)"
for i in $(seq "$repeats"); do
  mode=$(cold)
  s=$(date +%s.%N); cat "$data"/shard-*.h5 > /dev/null; e=$(date +%s.%N)
  bytes=$(cat "$data"/shard-*.h5 | wc -c)
  echo "$bytes $s $e" | awk -v m="$mode" '{printf "%s %.3f GB/s\n", m, $1/($3-$2)/1e9}'
done | tee /tmp/openvid_dd.txt
echo "dd median: $(awk '{print $2}' /tmp/openvid_dd.txt | median) GB/s"
for np in 1 2 4; do
  echo "== openvid reader, $np rank(s), batch 4 per rank, one epoch"
  for i in $(seq "$repeats"); do
    mode=$(cold)
    echo -n "$mode "; "${mpirun[@]}" -np "$np" build/openvid_read_bench --dataset "$data" --batch 4
  done | tee /tmp/openvid_rb.txt
  echo "np $np median: $(grep -o 'GB/s [0-9.e+-]*' /tmp/openvid_rb.txt | awk '{print $2}' | median) GB/s," \
       "$(grep -o 'samples/s [0-9.e+-]*' /tmp/openvid_rb.txt | awk '{print $2}' | median) samples/s"
done
echo "== overlap: 2 ranks, cp 2, simulated 100 ms compute per step, 40 steps"
"${mpirun[@]}" -np 2 build/openvid_read_bench --dataset "$data" --batch 2 --cp 2 --steps 40 --compute-ms 100
