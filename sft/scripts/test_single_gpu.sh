#!/usr/bin/env bash
# Smoke test on one GPU: sample data, 20 LoRA steps of Qwen3-4B (sft/configs/single_gpu_test.yaml).
# Without a GPU it says so and runs the same pipeline on the tiny CPU stand-in instead (qwen-sft demo).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA GPU visible: running the CPU demo on the tiny Qwen3 stand-in instead"
  exec "$PY" -m qwen_sft.cli demo
fi
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
DATA=sft/outputs/single_gpu_test/train.jsonl
"$PY" -m qwen_sft.cli prepare --format sample --num_samples 200 --output "$DATA" --overwrite
exec "$PY" -m qwen_sft.cli train sft/configs/single_gpu_test.yaml "dataset=$DATA" --nproc 1 "$@"
