#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: offline, CPU only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest -n 2 --durations=15 tests "$@"
