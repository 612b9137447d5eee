#!/usr/bin/env bash
# One command for a fresh machine: make .venv (if missing), install the project, then run the main job
# end to end on the embedded demo data (no download): demo data -> shards -> inspect -> train tiny -> predict.
# Usage: bash scripts/setup.sh [--no-demo]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
# torch/torchvision come from the local wheel cache (pip's constraint file caps them at these versions).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
echo "== installed: $(.venv/bin/python -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)')"
if [ "${1:-}" = "--no-demo" ]; then exit 0; fi
exec bash scripts/quickstart.sh
