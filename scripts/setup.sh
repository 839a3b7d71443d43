#!/usr/bin/env bash
# Sets up genlineage on a fresh machine that has only python3 (3.11): a virtual environment in
# .venv with the pinned versions of requirements.txt and the package itself (editable).
# Idempotent: re-running it does nothing unless requirements*.txt or pyproject.toml changed.
# On a GPU machine, TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (your driver's CUDA)
# replaces the CPU build of the pinned torch by that index's build of the same version.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "genlineage needs Python 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
want=$( (cat requirements.txt requirements-nodeps.txt pyproject.toml; echo "${TORCH_INDEX_URL:-}") | sha256sum | cut -d' ' -f1)
stamp=.venv/.genlineage-installed
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned requirements into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    torch_pin=$(grep '^torch==' requirements.txt)
    echo "[setup] replacing torch by the build of $TORCH_INDEX_URL ($torch_pin)"
    .venv/bin/python -m pip install -q --force-reinstall --no-deps "$torch_pin" --index-url "$TORCH_INDEX_URL"
  fi
  echo "$want" > "$stamp"
fi
