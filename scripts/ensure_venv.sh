#!/usr/bin/env bash
# Create (or reuse, when up to date) ./.venv with the pinned PyTorch and this package installed editable with its
# notebook and test extras. "Up to date" = the stamp written after the last successful install matches the hash of
# pyproject.toml and this script; anything else reinstalls into the same venv (pip skips what is already there).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_PINS="torch==2.14.1 torchvision==0.29.1"   # the versions the project is tested with (also in environment.yml)
PYTHON="${PYTHON:-python3}"
STAMP=.venv/.lth-install-stamp
want="$(cat pyproject.toml scripts/ensure_venv.sh | sha256sum | cut -c1-32)"

if [ -x .venv/bin/python ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "ensure_venv: reusing up-to-date .venv"
    exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "ensure_venv: Python >= 3.11 is needed, $PYTHON is $("$PYTHON" --version 2>&1); set PYTHON=..." >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "ensure_venv: installing $TORCH_PINS and lth_tutorial[notebooks,dev] into .venv (first time: a few minutes)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check $TORCH_PINS 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[notebooks,dev]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, torchvision, lth_tutorial" || { echo "ensure_venv: install failed" >&2; exit 1; }
echo "$want" > "$STAMP"
