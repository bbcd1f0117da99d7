#!/usr/bin/env bash
# Prepared check for a machine with several CUDA GPUs (NOT RUN in this repository: written without GPUs).
#
# 20 LoRA steps of a small config on all visible GPUs, once per strategy: ddp, fsdp, and the DeepSpeed
# ones when deepspeed is installed. Prints tokens/s (all ranks) and peak GPU memory per rank for each,
# and checks that each run wrote one adapter whose LoRA B matrices moved. About 5-10 minutes.
#
#   bash bench/multi_gpu_check.sh                       # all visible GPUs, a random Qwen3-0.6B-sized model
#   MODEL=Qwen/Qwen3-4B bash bench/multi_gpu_check.sh   # a real (cached or local) model instead
#   NPROC=4 STRATEGIES="ddp fsdp" bash bench/multi_gpu_check.sh
#
# Writes into $OUT when set (else a temp dir): multi_gpu_check.log, the runs and multi_gpu_check.json.
# Python: $PYTHON, else the repo's .venv, else python3; qwen_sft is imported from src/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
[ -z "$PY" ] && { [ -x .venv/bin/python ] && PY=.venv/bin/python || PY=python3; }
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
NPROC="${NPROC:-$NGPU}"
if [ "$NPROC" -lt 2 ]; then
  echo "multi_gpu_check: needs 2 or more CUDA GPUs (found $NGPU); nothing to do"
  exit 0
fi
WORK="${OUT:-$(mktemp -d /tmp/multi-gpu-check.XXXX)}"
mkdir -p "$WORK"
exec > >(tee "$WORK/multi_gpu_check.log") 2>&1
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
if [ -z "${STRATEGIES:-}" ]; then
  STRATEGIES="ddp fsdp"
  "$PY" -c "import deepspeed" 2>/dev/null && STRATEGIES="$STRATEGIES deepspeed_zero2 deepspeed_zero3"
fi

MODEL="${MODEL:-}"
if [ -z "$MODEL" ]; then
  MODEL="$WORK/qwen3-0.6b-random"
  # Qwen3-0.6B's shapes with random bf16 weights and the real tokenizer: enough for speed and memory.
  "$PY" - "$MODEL" <<'EOF'
import json, shutil, sys
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from qwen_sft.assets import qwen3_tokenizer_dir

out, ref = sys.argv[1], qwen3_tokenizer_dir()
base = json.loads((ref / "config.json").read_text())
base.update(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
            num_key_value_heads=8, head_dim=128, max_window_layers=28, torch_dtype="bfloat16")
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**base), dtype=torch.bfloat16)
model.save_pretrained(out, safe_serialization=True)
for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    shutil.copyfile(ref / name, f"{out}/{name}")
print(f"random Qwen3-0.6B-sized model in {out}")
EOF
fi

"$PY" -m qwen_sft.cli prepare --format sample --num_samples 400 --output "$WORK/train.jsonl" --overwrite
cat > "$WORK/cfg.yaml" <<EOF
model_name_or_path: $MODEL
dataset: $WORK/train.jsonl
lora_rank: 16
lora_alpha: 32
lora_target_modules: all-linear
max_steps: 20
per_device_train_batch_size: 2
gradient_accumulation_steps: 2
learning_rate: 1e-4
cutoff_len: 1024
bf16: true
gradient_checkpointing: true
val_size: 16
eval_steps: 10
save_steps: 10
logging_steps: 5
report_to: none
output_dir: $WORK/runs
overwrite_output_dir: true
EOF

for s in $STRATEGIES; do
  echo "=== $s on $NPROC GPUs"
  timeout -k 30 900 "$PY" -m qwen_sft.cli train "$WORK/cfg.yaml" "distributed_strategy=$s" "run_name=$s" --nproc "$NPROC"
  echo "=== $s exit code $?"
done

"$PY" - "$WORK" $STRATEGIES <<'EOF'
import json, sys
from pathlib import Path
from safetensors.torch import load_file

work, strategies = Path(sys.argv[1]), sys.argv[2:]
summary = {}
for s in strategies:
    run = work / "runs" / s
    if not (run / "metrics.json").exists():
        summary[s] = {"ok": False, "error": "no metrics.json (see the log above)"}
        continue
    m = json.loads((run / "metrics.json").read_text())
    lora = load_file(run / "lora_adapters" / "adapter_model.safetensors")
    moved = all(float(v.abs().max()) > 0 for k, v in lora.items() if "lora_B" in k)
    summary[s] = {"ok": moved and m["train_steps"] == 20, "tokens_per_second": m["train_tokens_per_second"],
                  "peak_memory_gb_per_rank": m.get("peak_memory_gb_per_rank"), "train_loss": m["train_loss"],
                  "eval_loss": m["eval_loss"], "lora_B_moved": moved, "checkpoints": sorted(p.name for p in run.glob("checkpoint-*"))}
    print(f"{s:16s} tokens/s {m['train_tokens_per_second']:>10.1f}   peak GB per rank {m.get('peak_memory_gb_per_rank')}   "
          f"train_loss {m['train_loss']:.4f}   eval_loss {m['eval_loss']}   LoRA B moved {moved}")
(work / "multi_gpu_check.json").write_text(json.dumps(summary, indent=2))
print(f"summary in {work / 'multi_gpu_check.json'}")
sys.exit(0 if all(v["ok"] for v in summary.values()) else 1)
EOF
