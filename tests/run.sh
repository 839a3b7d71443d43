#!/usr/bin/env bash
# The test command: sets up .venv if needed (scripts/setup.sh), then runs pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k data -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}
exec .venv/bin/python -m pytest "$@"
