#!/usr/bin/env bash
# Idempotent developer setup: .venv with torch, the package (editable) and the test tools, at the releases the test
# suite last passed with (constraints.txt; tools/upgrade-deps.sh moves them on). TORCH_SPEC picks the torch build
# (default: torch==2.13.0 from pip's configured index, the version tested here; on a GPU machine install the CUDA
# build you want first, it is kept).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
quiet() { grep -v '^WARNING: Location' || true; }  # pip's noise about an unusable index; a failed install still fails
python -m pip install -q --upgrade pip 2>&1 | quiet
python -c "import torch" 2>/dev/null || python -m pip install -q -c constraints.txt "${TORCH_SPEC:-torch==2.13.0}" 2>&1 | quiet
python -m pip install -q -c constraints.txt -e ".[dev]" 2>&1 | quiet
python -c "import torch, transformers, peft, qwen_sft; print(f'ready: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
