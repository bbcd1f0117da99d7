#!/usr/bin/env bash
# Prepared GPU check (H100 / H200): naive (padded, full logits) vs qwen-sft's path on a Qwen3-4B-sized
# LoRA step with random bf16 weights. At most 8 minutes; writes gpu_check.json (and the log) to $OUT
# when set. On a machine without CUDA it prints a message and exits 0.
#
#   bash bench/gpu_check.sh                # the full check
#   bash bench/gpu_check.sh --tiny         # CPU dry run of the script (seconds)
#   bash bench/gpu_check.sh --model qwen3.5-4b   # the Qwen3.5-4B architecture (needs flash-linear-attention and
#                                                # causal-conv1d for its CUDA kernels; without them, the slow fallback)
#
# Python: $PYTHON, else the repo's .venv when it has CUDA torch, else python3. qwen_sft is imported from
# src/ (no install needed); it needs torch, transformers>=5, peft and pyyaml.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    PY=.venv/bin/python
  else
    PY=python3
  fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
LOG=/dev/null
[ -n "${OUT:-}" ] && mkdir -p "$OUT" && LOG="$OUT/gpu_check.log"
# 480 s hard cap; the script itself stops measuring at --budget-s (420 s by default) and reports.
timeout -k 10 480 "$PY" bench/gpu_check.py "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && echo "gpu_check: killed at the 480 s cap"
exit "$rc"
