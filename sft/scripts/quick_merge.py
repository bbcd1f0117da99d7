#!/usr/bin/env python3
"""Quick merge with defaults: base model from the adapter, bfloat16.

    python sft/scripts/quick_merge.py ADAPTER [-o OUT] [--validate] [...any `qwen-sft merge` flag]
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
