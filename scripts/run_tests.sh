#!/usr/bin/env bash
# Set up .venv (reused when up to date) and Debian's chromium for the browser test, then run the whole test suite: unit tests, CLI, and every notebook
# executed in quick mode. Extra arguments go to pytest (e.g. -m "not notebook" for the fast part only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_venv.sh
bash scripts/ensure_browser.sh
bash scripts/ensure_slurm.sh
exec .venv/bin/python -m pytest "$@"
