#!/usr/bin/env bash
# Set up .venv (reused when up to date), then run the main job: `lth imp` on the embedded MNIST-1D data.
# Extra arguments go to `lth imp` (e.g. --seeds 0 1 2, --full, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_venv.sh
exec .venv/bin/lth imp "$@"
