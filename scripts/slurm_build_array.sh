#!/usr/bin/env bash
# Build one source in N parts as a SLURM job array (one part per task, whole sequences per part), then join
# them with `hodata merge` in a job that starts when every part has succeeded. Every node must see the
# dataset at the same path and the output folder on a shared file system (parts lock it with flock).
#
#   scripts/slurm_build_array.sh 16 ho3d /data/HO3D_v3 /shared/shards/ho3d -- --mano-dir /models/mano --ycb-dir /data/YCB/models
#
# submits the array (16 tasks) and the merge. A task that fails, is preempted or hits its time limit (SLURM
# sends SIGTERM: the part stops cleanly, keeping its finished shards) is resumed by running it again:
#   sbatch --array=5 --export=ALL,HODATA_PARTS=16 scripts/slurm_build_array.sh ho3d ROOT OUT -- [options]
# then merge by hand: `hodata merge OUT` (it refuses, naming what is missing, until every part is complete).
#SBATCH --job-name=hodata-build
#SBATCH --cpus-per-task=8            # --workers: one worker process per core
#SBATCH --mem-per-cpu=2G
#SBATCH --time=04:00:00
#SBATCH --output=%x-%A_%a.out
set -euo pipefail

HODATA=${HODATA:-hodata}

if [[ -z "${SLURM_JOB_ID:-}" ]]; then  # submitting from a login node: the array, then the merge after it
  if [[ $# -lt 4 ]]; then
    echo "usage: $0 PARTS SOURCE ROOT OUT [-- source options]" >&2
    exit 2
  fi
  parts=$1
  shift
  out=$3
  array=$(sbatch --parsable --array="1-$parts" --export="ALL,HODATA_PARTS=$parts" "$0" "$@")
  merge=$(sbatch --parsable --job-name=hodata-merge --dependency="afterok:${array%%;*}" --cpus-per-task=1 \
          --export="ALL,HODATA_MERGE=1" "$0" "$@")
  echo "submitted parts 1-$parts of $1 as job $array; merge into $out as job $merge"
  exit 0
fi

source_name=$1 root=$2 out=$3
shift 3
[[ "${1:-}" == "--" ]] && shift

if [[ -n "${HODATA_MERGE:-}" ]]; then
  exec "$HODATA" merge "$out" --source "$source_name" --wait
fi

part=${SLURM_ARRAY_TASK_ID:?run as a job array task (sbatch --array=1-N)}
count=${HODATA_PARTS:-${SLURM_ARRAY_TASK_COUNT:?set HODATA_PARTS to the number of parts}}
export OMP_NUM_THREADS=1             # the builder runs one worker process per core
echo "hodata: $source_name part $part/$count on $(hostname), ${SLURM_CPUS_PER_TASK:-1} worker(s)"
exec "$HODATA" build --source "$source_name" --root "$root" --out "$out" --part "$part/$count" \
  --workers "${SLURM_CPUS_PER_TASK:-1}" --quiet "$@"
