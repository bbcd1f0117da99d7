# Shared by the seed's shell shims: run the installed package, or the repo's src/ when not installed.
SFT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python}"
if ! "$PY" -c "import qwen_sft" 2>/dev/null; then
  export PYTHONPATH="$SFT_ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
fi
