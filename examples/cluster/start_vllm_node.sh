#!/usr/bin/env bash
# Start vLLM OpenAI-compatible servers on this node, one per GPU (or per GPUS_PER_SERVER GPUs),
# and keep them running.
#
# Run once per node by the job scripts (pbs_swarm.sh, slurm_swarm.sh) through mpiexec or srun.
# Server i listens on port BASE_PORT + i and sees only its own GPUs (through $GPU_ENV): GPU i,
# or with GPUS_PER_SERVER=k GPUs i*k .. i*k+k-1 and --tensor-parallel-size k. The job script
# writes the matching hostfile lines; this script only starts servers.
#
# Environment:
#   MODEL           the model (a Hugging Face name or a local directory); required
#   GPUS_PER_NODE   GPUs on this node (default 4)
#   GPUS_PER_SERVER GPUs per server, for tensor parallelism (default 1)
#   BASE_PORT       port of server 0 (default 8000)
#   GPU_ENV         variable that selects a GPU: CUDA_VISIBLE_DEVICES (NVIDIA, the default),
#                   ZE_AFFINITY_MASK (Intel, e.g. Aurora), HIP_VISIBLE_DEVICES (AMD)
#   VLLM_ARGS       more arguments for every server, word-split (e.g. "--max-model-len 8192")
#   LOG_DIR         where server logs go (default .)
#   SERVER_CMD      replaces the whole server command; "{port}" is filled in (for tests:
#                   a fake server from aurora_swarm.testing)
set -euo pipefail

: "${MODEL:?set MODEL to the model to serve}"
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
GPUS_PER_SERVER=${GPUS_PER_SERVER:-1}
SERVERS=$((GPUS_PER_NODE / GPUS_PER_SERVER))
BASE_PORT=${BASE_PORT:-8000}
GPU_ENV=${GPU_ENV:-CUDA_VISIBLE_DEVICES}
VLLM_ARGS=${VLLM_ARGS:-}
LOG_DIR=${LOG_DIR:-.}
host=$(hostname)
mkdir -p "$LOG_DIR"

pids=()
stop() { ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null; wait; }
trap stop EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

for ((i = 0; i < SERVERS; i++)); do
    port=$((BASE_PORT + i))
    gpus=$(seq -s, $((i * GPUS_PER_SERVER)) $(((i + 1) * GPUS_PER_SERVER - 1)))
    if [[ -n ${SERVER_CMD:-} ]]; then
        read -r -a cmd <<< "${SERVER_CMD//\{port\}/$port}"
    else
        # shellcheck disable=SC2206 # VLLM_ARGS is word-split on purpose
        cmd=(python -m vllm.entrypoints.openai.api_server --model "$MODEL"
             --served-model-name "$MODEL" --host 0.0.0.0 --port "$port"
             --tensor-parallel-size "$GPUS_PER_SERVER" $VLLM_ARGS)
    fi
    env "$GPU_ENV=$gpus" "${cmd[@]}" > "$LOG_DIR/server-$host-$port.log" 2>&1 &
    pids+=($!)
done
echo "start_vllm_node.sh: $host: started ${#pids[@]} servers on ports $BASE_PORT.." \
     "$((BASE_PORT + SERVERS - 1)); logs in $LOG_DIR" >&2
wait
