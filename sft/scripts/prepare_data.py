#!/usr/bin/env python
"""Seed shim: python sft/scripts/prepare_data.py --input X --output Y --format csv|sample|jsonl ...
is qwen-sft prepare ..."""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "src"))  # fallback when not installed

from qwen_sft.cli import main  # noqa: E402

sys.exit(main(["prepare", *sys.argv[1:]]))
