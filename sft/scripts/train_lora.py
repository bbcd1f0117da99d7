#!/usr/bin/env python
"""Seed shim: python sft/scripts/train_lora.py [--config C] [key=value ...] == qwen-sft train C key=value ..."""
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "src"))  # fallback when not installed

from qwen_sft.cli import main  # noqa: E402

# --config C or --config=C, anywhere: the config goes first, the key=value overrides after it.
config, args, rest = [], [], sys.argv[1:]
while rest:
    arg = rest.pop(0)
    if arg == "--config" and rest:
        config = [rest.pop(0)]
    elif arg.startswith("--config="):
        config = [arg.split("=", 1)[1]]
    else:
        args.append(arg)
sys.exit(main(["train", *config, *args]))
