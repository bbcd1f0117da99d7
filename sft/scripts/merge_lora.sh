#!/usr/bin/env bash
# Merge a LoRA adapter into its base model.
#   bash sft/scripts/merge_lora.sh BASE ADAPTER OUT [DTYPE=bfloat16] [VALIDATE=false] [extra merge flags...]
# VALIDATE: true/false (also 1/0, yes/no). PYTHON selects the interpreter (default: python, else python3).
set -euo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: bash $0 BASE ADAPTER OUT [DTYPE=bfloat16] [VALIDATE=false] [extra flags]" >&2
    exit 2
fi
BASE=$1 ADAPTER=$2 OUT=$3 DTYPE=${4:-bfloat16} VALIDATE=${5:-false}
shift $(( $# < 5 ? $# : 5 ))

args=(--base_model "$BASE" --lora_adapter "$ADAPTER" --output_dir "$OUT" --dtype "$DTYPE")
case "$(printf '%s' "$VALIDATE" | tr '[:upper:]' '[:lower:]')" in
    true|1|yes) args+=(--validate) ;;
    false|0|no|"") ;;
    *) echo "VALIDATE must be true or false, not '$VALIDATE'" >&2; exit 2 ;;
esac

PY=${PYTHON:-$(command -v python || command -v python3)}
exec "$PY" "$(dirname "${BASH_SOURCE[0]}")/merge_lora.py" "${args[@]}" "$@"
