#!/usr/bin/env bash
# Multi-node hotrain training on SLURM through torchrun's c10d rendezvous: one torchrun per node, one
# process per GPU. Submit with `sbatch scripts/slurm_multinode.sh --shards /data/shards --stage hand --out runs/hand`
# (every argument is passed to `hotrain fit`). Every node must see the shards and the run folder (shared FS),
# or use URL / pipe: shard specs. Resubmitting the same command continues from OUT/last.pt (--resume).
#SBATCH --job-name=hotrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one torchrun launcher per node
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64           # loader workers: 8 ranks x --num-workers
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
# the rendezvous host: the first node of the allocation
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}
export MASTER_ADDR MASTER_PORT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
# export NCCL_SOCKET_IFNAME=ib0      # pick the fast interface when nodes have several
PYTHON=${PYTHON:-.venv/bin/python}

echo "hotrain: $SLURM_JOB_NUM_NODES node(s) x $GPUS_PER_NODE GPU(s), rendezvous $MASTER_ADDR:$MASTER_PORT"
srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run \
  --nnodes="$SLURM_JOB_NUM_NODES" \
  --nproc-per-node="$GPUS_PER_NODE" \
  --rdzv-backend=c10d \
  --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" \
  --rdzv-id="$SLURM_JOB_ID" \
  --max-restarts=0 \
  -m hotrain fit --resume "$@"
