#!/usr/bin/env bash
# Opens JupyterLab on notebooks/ with the project's environment (.venv) as the notebooks' kernel.
#   bash scripts/lab.sh                          # then open the URL it prints
#   bash scripts/lab.sh --no-browser --port 8899 # any jupyter-lab option passes through
# The kernel: the notebooks name "python3", which a server started from .venv runs as .venv's python;
# JUPYTER_PATH puts .venv's kernel specs first, so a "python3" spec of your own (~/.local/share/jupyter)
# cannot swap another interpreter in. As root (a container), Jupyter refuses to start without
# --allow-root ("Running as root is not recommended"); this script passes it for you.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JUPYTER_PATH="$PWD/.venv/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
args=(--ServerApp.root_dir="$PWD/notebooks")
if [ "$(id -u)" = 0 ]; then
  args+=(--allow-root)
fi
exec .venv/bin/jupyter lab "${args[@]}" "$@"
