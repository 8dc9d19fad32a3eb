#!/usr/bin/env bash
#PBS -N aurora-swarm
#PBS -l select=4
#PBS -l walltime=02:00:00
#PBS -l filesystems=home:flare
#PBS -A YOUR_PROJECT
#PBS -q prod
#PBS -j oe
#
# A vLLM fleet on every node of a PBS job (one server per GPU), then a resumable batch job:
#
#   qsub -v MODEL=meta-llama/Llama-3.1-8B-Instruct,PROMPTS=prompts.jsonl pbs_swarm.sh
#
# Submit from this directory (or set SWARM_DIR to it). Resubmitting with the same RESULTS
# continues where the last job stopped. Settings (environment): see README.md; on Aurora use
# GPUS_PER_NODE=12 GPU_ENV=ZE_AFFINITY_MASK (one server per GPU tile).
set -euo pipefail
cd "${PBS_O_WORKDIR:-$PWD}"
SWARM_DIR=${SWARM_DIR:-$PWD}
JOB_ID=${PBS_JOBID:-$$}
JOB_ID=${JOB_ID%%.*}
# shellcheck source=swarm_common.sh
source "$SWARM_DIR/swarm_common.sh"

NODES=${NODES:-$(sort -u "$PBS_NODEFILE")}
NNODES=$(wc -w <<< "$NODES")
# One launcher per node; it starts that node's servers. Set LAUNCHER= (empty) to start them on
# this node only (a one-node test).
LAUNCHER=${LAUNCHER-mpiexec -n $NNODES --ppn 1}

swarm_main
