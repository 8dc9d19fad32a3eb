#!/usr/bin/env bash
# Run a command against real vLLM servers: up.sh, then CMD with
#   AURORA_SWARM_VLLM_HOSTFILE  hostfile (127.0.0.1<TAB>PORT<TAB>model=tiny-llama per line)
#   AURORA_SWARM_VLLM_MODEL     tiny-llama
#   AURORA_SWARM_VLLM_PIDFILE   one pid per server, hostfile order; each pid is also the
#                               process-group id of that server's processes
# exported, then down.sh whatever happens.  Exits with CMD's status (or up.sh's
# if the servers could not be started).  Settings: see up.sh (AURORA_VLLM_*).
#
# Usage: run_suite.sh CMD [ARGS...]
set -euo pipefail

if (($# == 0)); then
    echo "usage: run_suite.sh CMD [ARGS...]" >&2
    exit 2
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export AURORA_VLLM_WORK=${AURORA_VLLM_WORK:-$HOME/.cache/aurora-swarm/vllm-work}
T0=$SECONDS

finish() {
    local rc=$?
    trap - EXIT INT TERM
    bash "$HERE/down.sh" || true
    echo "[run_suite.sh] exit status $rc; elapsed $((SECONDS - T0))s in all" >&2
    exit "$rc"
}

# One run at a time per work dir: a second run_suite.sh (same AURORA_VLLM_WORK) waits
# here instead of stopping this run's servers through the shared pidfile.
mkdir -p "$AURORA_VLLM_WORK"
exec 9>"$AURORA_VLLM_WORK/run_suite.lock"
if ! flock -n 9; then
    echo "[run_suite.sh] another run is using $AURORA_VLLM_WORK; waiting for it" >&2
    flock -w "${AURORA_VLLM_LOCK_WAIT:-3600}" 9 || { echo "[run_suite.sh] gave up waiting" >&2; exit 1; }
fi

trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

HOSTFILE=$(bash "$HERE/up.sh" 9>&-) # servers must not hold the lock
export AURORA_SWARM_VLLM_HOSTFILE=$HOSTFILE
export AURORA_SWARM_VLLM_MODEL=tiny-llama
export AURORA_SWARM_VLLM_PIDFILE=$AURORA_VLLM_WORK/servers.pid
echo "[run_suite.sh] servers up after $((SECONDS - T0))s; running: $*" >&2

T_CMD=$SECONDS
set +e
"$@"
rc=$?
set -e
echo "[run_suite.sh] command finished with status $rc in $((SECONDS - T_CMD))s" >&2
exit "$rc"
