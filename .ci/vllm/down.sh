#!/usr/bin/env bash
# Stop the vLLM servers started by up.sh: SIGTERM to each server's process group,
# then SIGKILL after a grace period.  Safe to run twice or when nothing runs.
#
# Usage: down.sh [--work DIR]
# Environment: AURORA_VLLM_WORK (default $HOME/.cache/aurora-swarm/vllm-work),
#              AURORA_VLLM_STOP_GRACE seconds before SIGKILL (default 20)
set -euo pipefail

WORK=${AURORA_VLLM_WORK:-$HOME/.cache/aurora-swarm/vllm-work}
GRACE=${AURORA_VLLM_STOP_GRACE:-20}
while (($#)); do
    case $1 in
        --work) WORK=$2; shift 2 ;;
        *) echo "down.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
PIDFILE=$WORK/servers.pid
HOSTFILE=$WORK/hostfile

log() { echo "[down.sh] $*" >&2; }

if [[ ! -s $PIDFILE ]]; then
    log "no servers recorded in $PIDFILE; nothing to stop"
    rm -f "$PIDFILE" "$HOSTFILE"
    exit 0
fi

# Each recorded pid leads a process group (up.sh starts servers with setsid) that
# also holds the EngineCore and Worker processes; they outlive a server that was
# killed alone, so the whole group is signalled.  A group is only touched if one
# of its members still looks like vLLM (guards against a recycled pid).
members() { # live (non-zombie) processes of process group $1
    local p state
    for p in $(pgrep -g "$1" 2>/dev/null); do
        state=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | cut -c1) || continue
        [[ -n $state && $state != Z ]] && echo "$p"
    done
    return 0
}
is_vllm_group() {
    local p
    for p in $(members "$1"); do
        if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qi 'vllm'; then
            return 0
        fi
    done
    return 1
}

GROUPS_LEFT=()
while read -r pid _; do
    [[ $pid =~ ^[0-9]+$ ]] || continue
    if is_vllm_group "$pid"; then
        GROUPS_LEFT+=("$pid")
        kill -TERM -- "-$pid" 2>/dev/null || true
        log "sent SIGTERM to server process group $pid"
    fi
done <"$PIDFILE"

waited=0
while ((${#GROUPS_LEFT[@]})) && ((waited < GRACE * 2)); do
    still=()
    for g in "${GROUPS_LEFT[@]}"; do
        [[ -n $(members "$g") ]] && still+=("$g")
    done
    GROUPS_LEFT=("${still[@]+"${still[@]}"}")
    ((${#GROUPS_LEFT[@]})) || break
    sleep 0.5
    waited=$((waited + 1))
done

for g in "${GROUPS_LEFT[@]+"${GROUPS_LEFT[@]}"}"; do
    log "process group $g still running after ${GRACE}s; sending SIGKILL"
    kill -KILL -- "-$g" 2>/dev/null || true
done
for g in "${GROUPS_LEFT[@]+"${GROUPS_LEFT[@]}"}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [[ -z $(members "$g") ]] && break
        sleep 0.5
    done
    [[ -z $(members "$g") ]] || log "WARNING: process group $g did not go away"
done

rm -f "$PIDFILE" "$HOSTFILE"
log "all servers stopped"
