#!/usr/bin/env bash
# Runs the artifact end to end: sets up .venv (scripts/setup.sh), then executes every notebook
# in order with papermill for one profile, writing executed copies to outputs/<profile>/.
# Usage: bash run_all.sh [profile]   (profile: tiny (default), smoke, paper, or a YAML path)
# Every stage is cached under data/<profile>/, so a second run only re-executes the notebooks.
set -euo pipefail
cd "$(dirname "$0")"
PROFILE=${1:-tiny}
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}
name=$(basename "$PROFILE" .yaml)
out=outputs/$name
mkdir -p "$out"
notebooks=(notebooks/[0-9][0-9]_*.ipynb)
i=0
for nb in "${notebooks[@]}"; do
  i=$((i + 1))
  echo "[run_all] stage $i/${#notebooks[@]}: $(basename "$nb") (profile $name)"
  start=$(date +%s)
  .venv/bin/python -m papermill --log-output --progress-bar -k python3 -p profile "$PROFILE" \
    "$nb" "$out/$(basename "$nb")"
  echo "[run_all] $(basename "$nb") done in $(( $(date +%s) - start )) s"
done
