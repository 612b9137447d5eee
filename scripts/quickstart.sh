#!/usr/bin/env bash
# The main job end to end on data the repo makes itself (no download):
# demo data -> shards -> inspect -> train hand (tiny) -> fine-tune hand+object -> eval -> predict.
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

step "2. build hodata/1 shards (EgoHOS label maps; HO3D masks rendered from MANO + YCB poses)"
$BIN/hodata build --source egohos --root "$W/egohos" --out "$W/shards" --max-samples 16 --workers 2
$BIN/hodata build --source ho3d --root "$W/ho3d/HO3D_v3" --mano-dir "$W/ho3d/mano" --ycb-dir "$W/ho3d/models" \
  --out "$W/shards" --max-samples 16

step "3. inspect: counts, class balance, provenance, problems; contact sheet"
$BIN/hodata inspect "$W/shards" --samples 16 --out "$W/sheet.png"

step "4. train hand-only (tiny preset, CPU), then fine-tune to background/hand/object"
$BIN/hotrain fit --shards "$W/shards" --stage hand --preset tiny --out "$W/runs/hand"
$BIN/hotrain fit --shards "$W/shards" --stage handobj --init "$W/runs/hand/last.pt" --preset tiny --out "$W/runs/handobj"

step "5. evaluate on the held-out split"
$BIN/hotrain eval --checkpoint "$W/runs/handobj/best.pt" --shards "$W/shards" --out "$W/eval"

step "6. predict masks for new frames"
$BIN/hotrain predict --checkpoint "$W/runs/handobj/best.pt" --input "$W/egohos/test_outdomain/image" \
  --out "$W/masks" --overlay
echo
echo "quickstart done: contact sheet $W/sheet.png, eval $W/eval/, masks $W/masks/"
