#!/usr/bin/env bash
#SBATCH --job-name=aurora-swarm
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --time=02:00:00
#SBATCH --output=aurora-swarm-%j.out
#
# A vLLM fleet on every node of a Slurm job (one server per GPU), then a resumable batch job:
#
#   sbatch --export=ALL,MODEL=meta-llama/Llama-3.1-8B-Instruct,PROMPTS=prompts.jsonl \
#       slurm_swarm.sh
#
# Submit from this directory (or set SWARM_DIR to it). Resubmitting with the same RESULTS
# continues where the last job stopped. Settings (environment): see README.md.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$PWD}"
SWARM_DIR=${SWARM_DIR:-$PWD}
JOB_ID=${SLURM_JOB_ID:-$$}
# shellcheck source=swarm_common.sh
source "$SWARM_DIR/swarm_common.sh"

NODES=${NODES:-$(scontrol show hostnames "$SLURM_JOB_NODELIST")}
NNODES=$(wc -w <<< "$NODES")
# One task per node, holding all of its GPUs; it starts that node's servers. --overlap lets the
# batch step (where aurora-swarm runs) share the first node. Set LAUNCHER= (empty) to start
# the servers on this node only (a one-node test).
LAUNCHER=${LAUNCHER-srun --nodes=$NNODES --ntasks-per-node=1 --gpus-per-node=$GPUS_PER_NODE --overlap}

swarm_main
