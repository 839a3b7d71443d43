#!/usr/bin/env bash
# The GPU check: SD-v1.5- and SD-v2.1-architecture pipelines (random weights, real configs) fine-tuned
# 20 steps at 512 px with fp16 autocast and gradient checkpointing through the project's engine,
# checkpointed and resumed, then 16 images at 512 px; each beside a bare PyTorch loop and diffusers'
# StableDiffusionPipeline. Prints steps/s, images/s and peak memory; writes gpu_check.json.
# Needs a CUDA build of torch in .venv (see the README); a few minutes on one GPU.
# Usage: bash scripts/gpu_check.sh [--out FILE] [--models SD-v1.5 SD-v2.1] [--toy]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/python scripts/gpu_check.py --out "${GPU_CHECK_OUT:-gpu_check.json}" "$@"
