#!/usr/bin/env python
"""`qwen-sft plan` beside the field's memory figures for three runs (docs/benchmarks.md, issue #24).

    python bench/plan_side_by_side.py [--out results.json]

Runs: Qwen3-4B and Qwen3.5-4B, LoRA r64 on all 7 projections, micro-batches of 2 x 4096 tokens (the seed config),
and Qwen3-14B QLoRA (4-bit, the same LoRA and batch). For each: this plan's peak (one H100-class GPU, bf16, the
defaults), what `accelerate estimate-memory` counts (its own functions on the AutoModel its command builds from
the config: the weights in a dtype, and its full-fine-tuning Adam figure; the command itself needs the Hub and fails
offline), and the figure
Unsloth publishes for that size and method (its docs: a per-size table, not a formula over batch or sequence).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RUNS = [("Qwen3-4B r64, 2 x 4096", "Qwen/Qwen3-4B", {}),
        ("Qwen3.5-4B r64, 2 x 4096", "Qwen/Qwen3.5-4B", {}),
        ("Qwen3-14B QLoRA r64, 2 x 4096", "Qwen/Qwen3-14B", {"quantization_bit": 4})]
# Unsloth's published figures (unsloth.ai docs, read 2026-12-06): its requirements table
# (get-started/fine-tuning-for-beginners/unsloth-requirements) gives the "absolute minimum" per model size and method
# (14B QLoRA 8.5 GB; 16-bit LoRA 3B 8 GB, 7B 19 GB; no 4B row); its Qwen3.5 guide (models/qwen3.5/fine-tune) gives
# "4B: 10GB" bf16 LoRA. Qwen3-4B's ~10 GB is from the project's field notes (not found again in its docs on
# 2026-12-06). No batch, sequence or rank enters them; no formula and no accuracy is published.
UNSLOTH_GB = {"Qwen/Qwen3-4B": (10, "~10 GB bf16 LoRA (field notes; its docs' table: 3B 8 GB, 7B 19 GB)"),
              "Qwen/Qwen3.5-4B": (10, "Qwen3.5 guide: 10 GB, bf16 LoRA"),
              "Qwen/Qwen3-14B": (8.5, "requirements table: 14B QLoRA 8.5 GB (absolute minimum)")}
# Measured: the H200 runs of docs/benchmarks.md measured the GPU check (rows of 3072-4096 tokens, the code of then),
# not these configs; no GPU has run these three.
MEASURED = {}


def accelerate_counts(name: str, quantized: bool) -> dict:
    """What `accelerate estimate-memory NAME --library_name transformers` reports, by its own functions on the model
    its command builds: AutoModel (the bare model: no lm_head; Qwen3.5's vision tower included) from the config, on
    the meta device. The command itself needs the Hub (huggingface_hub.model_info), even for a local directory."""
    import torch  # noqa: F401  (transformers' modeling needs it loaded)
    from accelerate import init_empty_weights
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes
    from transformers import AutoConfig, AutoModel

    from qwen_sft.assets import QWEN3_5_DIR
    from qwen_sft.plan.arch import resolve

    arch = resolve(name)
    if arch.family == "qwen3_5":  # the whole published config (text and vision), as the Hub's config.json is
        config = AutoConfig.from_pretrained(QWEN3_5_DIR / name.split("/")[-1])
    else:
        values = {k: v for k, v in arch.config.items() if k != "torch_dtype"}
        config = AutoConfig.for_model(values.pop("model_type"), **values)
    with init_empty_weights():
        model = AutoModel.from_config(config)
    total, largest = calculate_maximum_sizes(model)
    dtype = "int4" if quantized else "float16"
    weights = total / 8 if quantized else total / 2  # its int4 / float16 rows
    adam = max(estimate_training_usage(total, dtype).values())  # its "Training using Adam" column (-1: N/A)
    return {"model_class": type(model).__name__, "weights_gib": weights / 2**30,
            "largest_layer_gib": largest[0] / (8 if quantized else 2) / 2**30,
            "full_finetune_adam_gib": adam / 2**30 if adam > 0 else None, "dtype_row": dtype}


def measured_text(gib) -> str:
    return "not measured" if gib is None else f"{gib:.2f} GiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from qwen_sft.config import build_config
    from qwen_sft.plan import cards, core
    from qwen_sft.plan.data import DataFacts

    rows = []
    for label, name, extra in RUNS:
        cfg = build_config({"model_name_or_path": name, "lora_rank": 64, "lora_alpha": 128,
                            "per_device_train_batch_size": 2, "cutoff_len": 4096, "gradient_accumulation_steps": 8,
                            **extra})
        t = time.perf_counter()
        p = core.plan(cfg, cards.find("h100"), facts=DataFacts(None), suggest=False)
        seconds = time.perf_counter() - t
        acc = accelerate_counts(name, bool(extra.get("quantization_bit")))
        gb, source = UNSLOTH_GB[name]
        rows.append({"run": label, "plan_gib": p["peak_gib"], "plan_breakdown": p["breakdown"],
                     "plan_seconds": seconds, "accelerate": acc, "unsloth_gb": gb, "unsloth_source": source,
                     "measured_gib": MEASURED.get(name)})
        print(f"{label}: plan {p['peak_gib']:.2f} GiB ({seconds:.0f} s); accelerate {acc['dtype_row']} weights "
              f"{acc['weights_gib']:.2f} GiB; Unsloth {gb} GB", flush=True)
    print("| run | Unsloth (published) | accelerate estimate-memory (weights) | qwen-sft plan | measured |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['unsloth_gb']} GB | {r['accelerate']['weights_gib']:.2f} GiB "
              f"({r['accelerate']['dtype_row']}, {r['accelerate']['model_class']}) | {r['plan_gib']:.2f} GiB | "
              f"{measured_text(r['measured_gib'])} |")
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
