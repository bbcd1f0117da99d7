#!/usr/bin/env python
"""`qwen-sft plan`'s time estimate for the GPU check's own rows, to set beside the tokens/s the H200 measured.

    python bench/plan_time_check.py

The rows: bench/gpu_check.py's (Qwen3-4B r64, 2 rows of 3072-4096 tokens a step, 70% of each trained, seed 0, the
7 steps of the H200 runs), handed to the plan as its data figures; the config: the defaults with that LoRA and batch.
The H200's measured figures are in docs/benchmarks.md ("Accuracy of qwen-sft plan").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check  # noqa: E402  (also puts src/ on sys.path)

from qwen_sft.config import build_config  # noqa: E402
from qwen_sft.data.encode import IGNORE_INDEX  # noqa: E402
from qwen_sft.plan import cards, core  # noqa: E402
from qwen_sft.plan.data import _from_lengths  # noqa: E402

CARDS = ("h200", "h100", "a100-80", "l40s", "rtx4090", "l4")


def main() -> int:
    rows = [r for step in gpu_check.make_rows(7, 2, 4096, 0.3, 151936, seed=0) for r in step]
    lengths = np.array([len(r.input_ids) for r in rows])
    trained = np.array([sum(1 for x in r.labels[1:] if x != IGNORE_INDEX) for r in rows])
    facts = _from_lengths("bench/gpu_check.py rows", lengths, trained)
    cfg = build_config({"model_name_or_path": "Qwen/Qwen3-4B", "lora_rank": 64, "lora_alpha": 128,
                        "per_device_train_batch_size": 2, "cutoff_len": 4096})
    print(f"rows: {len(rows)}, {lengths.min()}-{lengths.max()} tokens, trained share {facts.trained_share:.3f}")
    for key in CARDS:
        p = core.plan(cfg, cards.find(key), facts=facts, suggest=False)
        print(f"{key:<8} {p['tokens_per_s']:8.0f} tokens/s  ({p['flops_per_token'] / 1e9:.2f} GFLOP a token)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
