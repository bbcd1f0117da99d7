#!/usr/bin/env bash
# Set up (if needed) and run the offline end-to-end demo on the tiny Qwen3 stand-in.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup.sh
exec .venv/bin/qwen-sft demo "$@"
