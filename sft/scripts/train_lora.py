#!/usr/bin/env python
"""Seed shim: python sft/scripts/train_lora.py [--config C] [key=value ...] == qwen-sft train C key=value ..."""
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "src"))  # fallback when not installed

from qwen_sft.cli import main  # noqa: E402

args = sys.argv[1:]
if args[:1] == ["--config"]:
    args = args[1:]
sys.exit(main(["train", *args]))
