#!/usr/bin/env bash
# Runs the artifact end to end: sets up .venv (scripts/setup.sh), then executes every stage
# notebook in order with papermill (genlineage.runner), writing executed copies to outputs/<profile>/.
# Usage: bash run_all.sh [profile] [--only NN ...] [--from NN] [--list]
#   profile: tiny (default), smoke, paper, or a YAML path
#   --only 04   re-run one stage alone (repeatable);  --from 04   this stage and every later one
# Every stage is cached under data/<profile>/ and writes atomically: after an interruption (even a
# kill), running the same command again resumes from the cached work. The first failing cell stops
# the run with the notebook and cell named; its executed copy is kept as outputs/<profile>/<nb>.failed.ipynb.
# Run one run_all.sh per profile at a time: a run starts by sweeping the partial files a killed run left.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}
exec .venv/bin/python -m genlineage.runner "$@"
