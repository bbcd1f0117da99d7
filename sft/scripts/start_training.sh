#!/usr/bin/env bash
# Usage: bash sft/scripts/start_training.sh [config] [data_dir_or_file] [output_dir] [key=value ...]
# Launches one process per visible GPU when there are several (CUDA_VISIBLE_DEVICES is honored).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
CONFIG="${1:-sft/configs/lora_config.yaml}"
ARGS=("$CONFIG")
[ -n "${2:-}" ] && ARGS+=("dataset=$2")
[ -n "${3:-}" ] && ARGS+=("output_dir=$3")
exec "$PY" -m qwen_sft.cli train "${ARGS[@]}" "${@:4}"
