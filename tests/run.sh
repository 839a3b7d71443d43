#!/usr/bin/env bash
# The test command: sets up .venv if needed (scripts/setup.sh), then runs pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k data -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}
# Two workers (pytest-xdist), one test file each at a time: the end-to-end module runs in order on
# one of them, sharing its smoke build, while the other takes every other file. TEST_WORKERS=0 runs
# everything in this process (e.g. for a debugger).
workers=${TEST_WORKERS:-2}
if [ "$workers" = 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
