# Shared by pbs_swarm.sh and slurm_swarm.sh (sourced, not run): write the hostfile, start the
# servers on every node, wait for them, run the prompts. The scheduler scripts set NODES and
# LAUNCHER and call swarm_main.

: "${MODEL:?set MODEL to the model to serve}"
: "${PROMPTS:?set PROMPTS to the prompts file (text or JSONL)}"
RESULTS=${RESULTS:-results.jsonl}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
GPUS_PER_SERVER=${GPUS_PER_SERVER:-1}  # more than 1: tensor parallelism over that many GPUs
BASE_PORT=${BASE_PORT:-8000}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-1800}   # seconds the servers have to load the model
MIN_READY=${MIN_READY:-90%}          # run when this many servers are healthy
WAIT_INTERVAL=${WAIT_INTERVAL:-10}   # seconds between health checks
RUN_ARGS=${RUN_ARGS:-}               # more `aurora-swarm run` arguments, word-split
AURORA_SWARM=${AURORA_SWARM:-aurora-swarm}
JOBDIR=${JOBDIR:-$PWD/swarm-${JOB_ID:-$$}}

write_hostfile() {
    # One line per server, host<TAB>port<TAB>key=value..., the format aurora_swarm reads.
    # Written whole, then renamed into place: `aurora-swarm wait` never sees half of it.
    local tmp="$HOSTFILE.tmp.$$" node i gpus
    : > "$tmp"
    for node in $NODES; do
        for ((i = 0; i < GPUS_PER_NODE / GPUS_PER_SERVER; i++)); do
            gpus=$(seq -s, $((i * GPUS_PER_SERVER)) $(((i + 1) * GPUS_PER_SERVER - 1)))
            printf '%s\t%d\tnode=%s\tgpu=%s\tmodel=%s\n' \
                "$node" $((BASE_PORT + i)) "$node" "$gpus" "$MODEL" >> "$tmp"
        done
    done
    mv "$tmp" "$HOSTFILE"
}

swarm_main() {
    HOSTFILE=$JOBDIR/fleet.hostfile
    READY=$JOBDIR/ready.hostfile
    mkdir -p "$JOBDIR/logs"
    write_hostfile
    echo "swarm: $(wc -l < "$HOSTFILE") servers on $(wc -w <<< "$NODES") nodes; hostfile" \
         "$HOSTFILE" >&2

    export MODEL GPUS_PER_NODE GPUS_PER_SERVER BASE_PORT GPU_ENV VLLM_ARGS SERVER_CMD LOG_DIR="$JOBDIR/logs"
    # shellcheck disable=SC2086 # LAUNCHER is a command line, word-split on purpose
    $LAUNCHER bash "$SWARM_DIR/start_vllm_node.sh" &
    SERVERS_PID=$!
    trap 'kill "$SERVERS_PID" 2>/dev/null; wait "$SERVERS_PID" 2>/dev/null || true' EXIT
    local status=0

    # Servers take minutes to load a model; wait writes the healthy ones to READY.
    $AURORA_SWARM wait --hostfile "$HOSTFILE" --min "$MIN_READY" --timeout "$WAIT_TIMEOUT" \
        --interval "$WAIT_INTERVAL" -o "$READY" || status=$?
    if ((status)); then
        echo "swarm: too few servers came up; see $JOBDIR/logs" >&2
        return "$status"
    fi
    # Resumable: submit the same job again (same RESULTS) to continue after the wall time.
    # shellcheck disable=SC2086 # RUN_ARGS is word-split on purpose
    $AURORA_SWARM run "$PROMPTS" --hostfile "$READY" --model "$MODEL" -o "$RESULTS" \
        $RUN_ARGS || status=$?
    return "$status"
}
