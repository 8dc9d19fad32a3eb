#!/usr/bin/env bash
# What CI runs against the real vLLM servers that run_suite.sh started (environment from it):
# the measurements first, then the test suite, whose last test kills one server.
set -uo pipefail
status=0
run() {
  echo "--- $*"
  local t0=$SECONDS
  "$@" || status=1
  echo "--- ($((SECONDS - t0)) s)"
}
run python -m benchmarks.harness --target vllm --hostfile "$AURORA_SWARM_VLLM_HOSTFILE" \
    --model "$AURORA_SWARM_VLLM_MODEL" --out "${AURORA_CI_RESULTS:-benchmarks/out}/vllm"
run python -m benchmarks.prefix_affinity --hostfile "$AURORA_SWARM_VLLM_HOSTFILE" \
    --model "$AURORA_SWARM_VLLM_MODEL" --out "${AURORA_CI_RESULTS:-benchmarks/out}/prefix_affinity"
run python -m benchmarks.one_a_request --hostfile "$AURORA_SWARM_VLLM_HOSTFILE" \
    --model "$AURORA_SWARM_VLLM_MODEL" --repeat 5
run python -m pytest tests/vllm -v -p no:cacheprovider
exit $status
