#!/usr/bin/env bash
# GPU check of population training (issue 30), under 8 minutes, for anyone with an NVIDIA GPU:
#   make setup GPU=cuda12 && bash bench/gpu_check.sh [OUT.json]
# Device found, fmnist_2c2d and cifar10_3c3d step/epoch time for one run and populations of 8/16/32 (synthetic
# data of the real size), throughput vs one run, peak memory, and a few-steps equality check against the CPU.
# Writes one small JSON (default gpu_check.json). See docs/population.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check.json}"
PY="${PY:-.venv/bin/python}"
"$PY" -c "import jax; d = jax.devices()[0]; print('jax devices:', jax.devices()); \
assert d.platform == 'gpu', 'no GPU visible to jax: run make setup GPU=cuda12 on a machine with an NVIDIA GPU'"
KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 timeout 470 "$PY" bench/gpu_check.py --out "$out"
