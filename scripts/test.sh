#!/usr/bin/env bash
# One command that runs the whole test suite (CPU only, a few minutes). Makes .venv first when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import hodata, hotrain, pytest" 2>/dev/null; then
  bash scripts/setup.sh --no-demo
fi
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
# pytest exits 5 when it collected no test: that must fail here, and it does (set -e, no masking).
exec .venv/bin/python -m pytest -q "$@"
