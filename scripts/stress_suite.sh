#!/usr/bin/env bash
# Run the unit suite (no loopback-fleet integration tests, no real-vLLM suite) several times
# while two busy processes compete for the CPU, and report each run's time and result.
#
#   scripts/stress_suite.sh [RUNS] [-- extra pytest arguments]
#
# RUNS defaults to 10. Exit status 0 only when every run passed. The busy processes are this
# script's own children and stop with it.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
shift $(( $# > 0 ? 1 : 0 ))
[[ ${1:-} == "--" ]] && shift

busy() { python3 -c 'while True: pass' > /dev/null 2>&1 & echo $!; }
hogs=("$(busy)" "$(busy)")
stop_hogs() { kill "${hogs[@]}" 2>/dev/null; wait "${hogs[@]}" 2>/dev/null; }
trap stop_hogs EXIT

passed=0
times=()
for (( k = 1; k <= runs; k++ )); do
  began=$(date +%s.%N)
  if python -m pytest -q -p no:cacheprovider -m "not integration" --ignore=tests/vllm "$@" > "/tmp/stress-suite-$$-$k.log" 2>&1; then
    result=passed; passed=$(( passed + 1 ))
  else
    result="FAILED (log: /tmp/stress-suite-$$-$k.log)"
  fi
  took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$began" "$(date +%s.%N)")
  times+=("$took")
  printf 'run %2d: %6s s  %s  (%s)\n' "$k" "$took" "$result" "$(tail -n 1 "/tmp/stress-suite-$$-$k.log")"
done
printf '%d of %d runs passed; times (s): %s\n' "$passed" "$runs" "${times[*]}"
(( passed == runs ))
