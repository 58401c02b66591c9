#!/usr/bin/env bash
# Runs a command and checks how it ends: its exit code, that it ended within a time limit (no hang), and
# how often given patterns occur in its combined output.
#   expect_exit.sh --code N|nonzero --within SECONDS [--count REGEX N]... [--match REGEX]... -- command...
set -u
code="" within="" counts=() matches=()
while [ $# -gt 0 ]; do
  case "$1" in
    --code) code=$2; shift 2 ;;
    --within) within=$2; shift 2 ;;
    --count) counts+=("$2" "$3"); shift 3 ;;
    --match) matches+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "expect_exit.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$code" ] && [ -n "$within" ] && [ $# -gt 0 ] || { echo "expect_exit.sh: usage error" >&2; exit 2; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$(date +%s%N)
timeout -k 5 "$within" "$@" >"$out" 2>&1
rc=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
elapsed="$((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))"
echo "---- output of: $* ----"; cat "$out"; echo "---- exit $rc after ${elapsed}s ----"
fail=0
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "FAIL: still running after ${within}s (hang)"; fail=1; fi
if [ "$code" = nonzero ]; then
  [ "$rc" -ne 0 ] || { echo "FAIL: expected a non-zero exit, got 0"; fail=1; }
elif [ "$rc" -ne "$code" ]; then
  echo "FAIL: expected exit $code, got $rc"; fail=1
fi
i=0
while [ $i -lt ${#counts[@]} ]; do
  re=${counts[$i]} want=${counts[$((i+1))]}
  got=$(grep -cE -- "$re" "$out")
  [ "$got" -eq "$want" ] || { echo "FAIL: /$re/ occurs $got time(s), expected $want"; fail=1; }
  i=$((i+2))
done
for re in "${matches[@]+"${matches[@]}"}"; do
  grep -qE -- "$re" "$out" || { echo "FAIL: no line matches /$re/"; fail=1; }
done
[ $fail -eq 0 ] && echo "PASS"
exit $fail
