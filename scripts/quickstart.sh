#!/usr/bin/env bash
# The main job end to end on data the repo makes itself (no download):
# demo data -> hodata/2 shards -> inspect (text, contact sheet, HTML report) -> train hand (tiny) -> fine-tune
# hand+object -> fine-tune left/right hands + object -> eval -> predict and export masks for annotation pipelines.
# Outputs go to work/quickstart/ (override with QUICKSTART_DIR). Rerunning starts from a clean folder.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
W=${QUICKSTART_DIR:-work/quickstart}
BIN=.venv/bin
rm -rf "$W" && mkdir -p "$W"
step() { echo; echo "== $*"; }

step "1. synthetic datasets in EgoHOS's and HO3D's real layouts"
$BIN/hodata demo --layout egohos --out "$W/egohos"
$BIN/hodata demo --layout ho3d --out "$W/ho3d"

step "2. build hodata/2 shards (EgoHOS label maps; HO3D masks rendered from MANO + YCB poses)"
$BIN/hodata build --source egohos --root "$W/egohos" --out "$W/shards" --max-samples 16 --workers 2
$BIN/hodata build --source ho3d --root "$W/ho3d/HO3D_v3" --mano-dir "$W/ho3d/mano" --ycb-dir "$W/ho3d/models" \
  --out "$W/shards" --max-samples 16

step "3. inspect: counts, class and side balance, provenance, problems; contact sheet; HTML report"
$BIN/hodata inspect "$W/shards" --samples 16 --out "$W/sheet.png" --html "$W/report.html"

step "4. train hand-only (tiny preset, CPU), fine-tune to background/hand/object, then to left/right hands + object"
$BIN/hotrain fit --shards "$W/shards" --stage hand --preset tiny --out "$W/runs/hand"
$BIN/hotrain fit --shards "$W/shards" --stage handobj --init "$W/runs/hand/last.pt" --preset tiny --out "$W/runs/handobj"
$BIN/hotrain fit --shards "$W/shards" --stage sides --init "$W/runs/handobj/last.pt" --preset tiny --out "$W/runs/sides"

step "5. evaluate on the held-out split"
$BIN/hotrain eval --checkpoint "$W/runs/handobj/best.pt" --shards "$W/shards" --out "$W/eval/handobj"
$BIN/hotrain eval --checkpoint "$W/runs/sides/best.pt" --shards "$W/shards" --out "$W/eval/sides"  # + left/right confusion

step "6. predict masks for new frames: our ids, then HOLD's layout and ids (0 / 50 object / 150 right / 250 left)"
$BIN/hotrain predict --checkpoint "$W/runs/sides/best.pt" --input "$W/egohos/test_outdomain/image" \
  --out "$W/masks" --overlay
$BIN/hotrain predict --checkpoint "$W/runs/sides/best.pt" --input "$W/egohos/test_outdomain/image" \
  --out "$W/hold_case" --export hold --tta flip
echo
echo "quickstart done: report $W/report.html, contact sheet $W/sheet.png, eval $W/eval/, masks $W/masks/," \
  "HOLD masks $W/hold_case/build/mask/"
