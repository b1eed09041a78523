#!/usr/bin/env bash
# The speed benchmark on one CUDA GPU in bf16, in under 8 minutes:
#
#     bash bench/gpu.sh                 # writes bench-gpu.json and bench-gpu.log in the repository root
#     OUT=/some/folder bash bench/gpu.sh
#
# Same recipes, shapes, examples and JSON as the CPU run (bench/bench_speed.py). On CUDA both recipes
# train with bf16 autocast (dialogtune picks it itself; the notebook baseline gets bf16=True so only the
# recipe differs), both generate with the model cast to bf16, and MFU is measured against a bf16
# matmul peak (8192^2) taken in the same run. A GPU is fast enough for the full training settings
# (small and base shapes, 10 timed steps each); evaluation uses 32 dialogues per path because the
# notebook's one-at-a-time loop is launch-bound on a GPU. `timeout` stops it at 8 minutes whatever
# happens. Not yet run on a GPU: no GPU figures exist.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
OUT="${OUT:-.}"
mkdir -p "$OUT"

if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench/gpu.sh: no CUDA device visible to torch; install a CUDA build of torch or run bench_speed.py --device cpu" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

timeout --signal=INT --kill-after=20 480 \
    "$PYTHON" bench/bench_speed.py --device cuda --compare-base --eval-examples 32 --output "$OUT/bench-gpu.json" "$@" 2>&1 | tee "$OUT/bench-gpu.log"
