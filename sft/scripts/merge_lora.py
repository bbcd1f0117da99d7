#!/usr/bin/env python3
"""Merge a LoRA adapter into its base model (same flags as `qwen-sft merge`).

    python sft/scripts/merge_lora.py --base_model B --lora_adapter A --output_dir O \
        [--dtype bfloat16|float16|float32] [--validate] [--test_prompt P] [--overwrite]
"""
import sys
from pathlib import Path

try:
    from qwen_sft.merge import main
except ImportError:  # not installed: use the repository's src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from qwen_sft.merge import main

if __name__ == "__main__":
    sys.exit(main())
