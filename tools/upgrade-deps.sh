#!/usr/bin/env bash
# Check newer releases on purpose: a fresh virtual environment with the newest releases the package's own ranges
# allow (pyproject.toml; torch: TORCH_SPEC, default the newest from pip's configured index), the whole test suite
# in it, and, only when it passes, constraints.txt rewritten from what was installed. Review and commit the diff.
#   bash tools/upgrade-deps.sh                 # uses .venv-upgrade/ (made fresh each time)
#   bash tools/upgrade-deps.sh -m "not slow"   # extra arguments go to pytest (a quicker check; the file is still
#                                              # rewritten only when what ran passed: prefer the whole suite)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
VENV=.venv-upgrade
rm -rf "$VENV"
"$PY" -m venv "$VENV"
quiet() { grep -v '^WARNING: Location' || true; }  # pip's noise about an unusable index; a failed install still fails
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet
"$VENV/bin/python" -m pip install -q "${TORCH_SPEC:-torch}" 2>&1 | quiet
"$VENV/bin/python" -m pip install -q --upgrade -e ".[dev]" 2>&1 | quiet
"$VENV/bin/python" -c "import torch, transformers, peft; print(f'testing torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
if ! "$VENV/bin/python" -m pytest -n 2 tests "$@"; then
  echo "tools/upgrade-deps.sh: the suite fails on the newest releases; constraints.txt is unchanged" >&2
  exit 1
fi
bash tools/write-constraints.sh "$VENV/bin/python"
git --no-pager diff --stat -- constraints.txt || true
echo "constraints.txt now holds the releases the suite passed with; review and commit it"
