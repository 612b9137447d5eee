#!/usr/bin/env bash
# One prepared check of hotrain's GPU paths on a machine with an NVIDIA GPU (under 10 minutes on one GPU):
#   1. the suite's GPU-marked tests (pytest -m gpu);
#   2. demo shards at 640x480 (hodata's EgoHOS look-alike, no download);
#   3. a 1-GPU torchrun fit of DeepLabv3-ResNet50 on 480x480 crops in bf16 + channels_last (nccl, DDP path);
#   4. eval and 5. predict of its checkpoint;
#   6. scripts/bench_train.py: images/s of hotrain's training step against a plain fp32 loop, with the GPU's name;
#   7. a short fit with --gpu-augment and 8. scripts/bench_loader.py (samples/s of a loader worker, and of the
#      device's decode + augmentation with --gpu-augment).
# Everything printed lands in one log file ($GPU_CHECK_LOG, default work/gpu_check/gpu_check.log); the summary
# at the end lists each step's status and the figures. Start from a fresh clone with
#   bash scripts/setup.sh --no-demo && bash scripts/gpu_check.sh
# No weights are downloaded: --weights auto uses COCO/ImageNet files already in the torch cache, else none.
#
# --cpu-dry-run runs every command above on the CPU with tiny settings (same model, bf16 autocast and
# channels_last, torchrun with gloo), to check the script itself on a machine without a GPU.
# Environment: HOTRAIN_BIN (default .venv/bin), GPU_CHECK_DIR (default work/gpu_check), GPU_CHECK_STEPS.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--cpu-dry-run" ]; then DRY=1; elif [ -n "${1:-}" ]; then echo "usage: $0 [--cpu-dry-run]"; exit 2; fi
BIN=${HOTRAIN_BIN:-.venv/bin}
PY="$BIN/python"
W=${GPU_CHECK_DIR:-work/gpu_check}
rm -rf "$W" && mkdir -p "$W"
LOG=${GPU_CHECK_LOG:-$W/gpu_check.log}
exec > >(tee "$LOG") 2>&1
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl} PYTHONUNBUFFERED=1

if [ $DRY = 1 ]; then  # the same commands, CPU-sized
  export CUDA_VISIBLE_DEVICES=""
  FRAMES=24 SIZE="(160, 120)" CROP=64 BATCH=2 STEPS=${GPU_CHECK_STEPS:-2} WORKERS=1 EVAL_EVERY=1
  BENCH=(--device cpu --crop 64 --batch 2 --steps 2 --warmup 1 --aux)
else
  FRAMES=96 SIZE="(640, 480)" CROP=480 BATCH=8 STEPS=${GPU_CHECK_STEPS:-150} WORKERS=6 EVAL_EVERY=75
  BENCH=(--crop 480 --batch 8 --steps 30 --warmup 5 --aux)
fi

FAILED=()
STATUS=()
step() {  # step NAME TIMEOUT_S COMMAND...: run, time, record; a failed step does not stop the others
  local name=$1 limit=$2 t0 rc
  shift 2
  echo
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
  echo "\$ $*"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  if [ $rc = 0 ]; then STATUS+=("ok      $name ($(( $(date +%s) - t0 )) s)")
  else STATUS+=("FAILED  $name (rc $rc after $(( $(date +%s) - t0 )) s)"); FAILED+=("$name"); fi
}

echo "== hotrain GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ) $([ $DRY = 1 ] && echo '(CPU dry run)')"
echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')  host: $(hostname)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step "environment" 60 "$PY" -c "
import torch, torchvision
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)
ok = torch.cuda.is_available()
print('cuda available:', ok, '| devices:', torch.cuda.device_count())
if ok:
    print('gpu:', torch.cuda.get_device_name(0), '| bf16:', torch.cuda.is_bf16_supported(),
          '| nccl:', torch.cuda.nccl.version())
elif not $DRY:
    raise SystemExit('no CUDA device: run with --cpu-dry-run on a machine without a GPU')
"

step "pytest -m gpu" 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -rs tests/

step "demo shards ${SIZE}" 180 "$PY" -c "
from pathlib import Path
from hodata.demo import egohos
print(egohos.write(Path('$W/egohos'), frames=$FRAMES, seed=3, size=$SIZE))
"
step "hodata build" 180 "$BIN/hodata" build --source egohos --root "$W/egohos" --out "$W/shards" --max-samples 16 \
  --workers 2 --quiet

step "torchrun fit deeplabv3_resnet50 (bf16, channels_last)" 360 "$PY" -m torch.distributed.run --standalone \
  --nproc-per-node 1 -m hotrain fit --shards "$W/shards" --stage hand --model deeplabv3_resnet50 --weights auto \
  --crop-size $CROP --batch-size $BATCH --amp bf16 --channels-last --steps $STEPS --steps-per-epoch $EVAL_EVERY \
  --eval-every $EVAL_EVERY --ckpt-every $EVAL_EVERY --num-workers $WORKERS --eval-batch-size $BATCH --log-every 10 \
  --no-progress --out "$W/r50"

step "eval" 180 "$BIN/hotrain" eval --checkpoint "$W/r50/last.pt" --shards "$W/shards" --split val \
  --out "$W/eval" --batch-size $BATCH
step "predict" 180 "$BIN/hotrain" predict --checkpoint "$W/r50/last.pt" --input "$W/egohos/test_indomain/image" \
  --out "$W/masks" --batch-size $BATCH
step "predict output check" 60 "$PY" -c "
import cv2, pathlib
src = sorted(pathlib.Path('$W/egohos/test_indomain/image').glob('*.jpg'))
for f in src:
    m = cv2.imread(str(pathlib.Path('$W/masks') / (f.stem + '.png')), cv2.IMREAD_UNCHANGED)
    assert m is not None and m.shape == cv2.imread(str(f)).shape[:2] and m.max() <= 1, f
print(len(src), 'masks of the input size, labels 0/1')
"

step "bench_train" 300 "$PY" scripts/bench_train.py --model deeplabv3_resnet50 "${BENCH[@]}"

step "fit --gpu-augment (nvJPEG decode, augmentation on the device)" 240 "$BIN/hotrain" fit --shards "$W/shards" \
  --stage hand --model deeplabv3_resnet50 --weights auto --crop-size $CROP --batch-size $BATCH --amp bf16 \
  --channels-last --gpu-augment --steps $EVAL_EVERY --steps-per-epoch $EVAL_EVERY --eval-every $EVAL_EVERY \
  --num-workers $WORKERS --eval-batch-size $BATCH --log-every 10 --no-progress --out "$W/r50_gpuaug"
step "bench_loader (a worker's share, and the device's share with --gpu-augment)" 180 "$PY" scripts/bench_loader.py \
  --repeats 1 --crop $CROP --data "$W/bench_loader"

echo
echo "== summary"
"$PY" - "$W" <<'EOF'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
recs = [json.loads(l) for l in (w / "r50" / "metrics.jsonl").read_text().splitlines()] \
    if (w / "r50" / "metrics.jsonl").exists() else []
train = [r for r in recs if "images_per_s" in r]
val = [r for r in recs if r.get("split") == "val"]
if train:
    print(f"fit: {len(train)} log records, last loss {train[-1]['loss']:.4f}, "
          f"images/s (last 3 records) {[round(r['images_per_s'], 1) for r in train[-3:]]}")
if val:
    print(f"fit: val mIoU at steps {[(r['step'], round(r['miou'], 3)) for r in val]}")
if (w / "eval" / "report.json").exists():
    rep = json.loads((w / "eval" / "report.json").read_text())
    print(f"eval: mIoU {rep['mean_iou']}, IoU {rep['iou']}, pixels {rep['pixels']}")
EOF
grep -h "device:\|ratio\|share" "$LOG" | grep -v '^\$' | tail -5
printf '%s\n' "${STATUS[@]}"
echo "log: $LOG"
if [ ${#FAILED[@]} -gt 0 ]; then echo "FAILED: ${FAILED[*]}"; exit 1; fi
echo "all steps passed"
