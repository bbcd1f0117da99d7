#!/usr/bin/env python
"""Should Qwen3.5's default LoRA targets include the linear-attention in_proj_a / in_proj_b? Measured, not guessed.

    python bench/bench_lora_targets.py            # ~1 min on 2 cores

1. Parameters, from the published configs (assets/qwen3_5, models built on the meta device, no weights): LoRA
   parameters at r=16 and r=64 of the default targets (families.QWEN3_5.lora_targets) and of default + in_proj_a,
   in_proj_b, next to the full size of the a / b matrices themselves.
2. Speed and memory on the tiny Qwen3.5 stand-in (CPU, float32, gradient checkpointing off, packed rows of 512
   tokens, r=16): training steps per second (best of the timed steps) and the peak RSS of a fresh process per
   target set.

Not a test: prints a table. docs/models.md ("LoRA targets") has the figures and the decision.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKPOINTS = ("Qwen3.5-0.8B", "Qwen3.5-4B", "Qwen3.5-27B")
EXTRA = ("in_proj_a", "in_proj_b")


def lora_params(model, targets, r: int) -> int:
    """r * (in + out) for every Linear whose name ends in one of targets (what PEFT adds, without building it)."""
    import torch

    return sum(r * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets)


def params_table() -> None:
    import torch
    from transformers import AutoConfig

    from qwen_sft.assets import qwen3_5_checkpoint_dir
    from qwen_sft.families import QWEN3_5, meta_model

    print("| checkpoint | r | LoRA params, default | + in_proj_a/b | a/b share | full a + b matrices |")
    print("|---|---|---|---|---|---|")
    for name in CHECKPOINTS:
        model = meta_model(AutoConfig.from_pretrained(qwen3_5_checkpoint_dir(name)))
        full_ab = sum(m.weight.numel() for n, m in model.named_modules()
                      if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in EXTRA)
        for r in (16, 64):
            base = lora_params(model, QWEN3_5.lora_targets, r)
            ab = lora_params(model, EXTRA, r)
            print(f"| {name} | {r} | {base:,} | {base + ab:,} | {ab / (base + ab):.1%} | {full_ab:,} |")


def child(spec: dict) -> dict:
    import torch

    from qwen_sft.batching import collate_padding_free
    from qwen_sft.config import TrainConfig
    from qwen_sft.data.encode import Encoded
    from qwen_sft.loss import CausalLMLoss
    from qwen_sft.model import load_base_model, wrap_lora

    torch.set_num_threads(2)
    targets = list(spec["targets"])
    cfg = TrainConfig(model_name_or_path=spec["model"], bf16=False, lora_rank=16, lora_alpha=32, lora_dropout=0.05,
                      gradient_checkpointing=False, lora_target_modules=targets)
    torch.manual_seed(0)
    model = wrap_lora(load_base_model(cfg, torch.device("cpu")), cfg)
    module = CausalLMLoss(model).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in (200, 150, 100, 62):  # one packed row of 512 tokens, 4 examples
        ids = torch.randint(0, 248_000, (n,), generator=g).tolist()
        rows.append(Encoded(ids, [-100] * (n // 2) + ids[n // 2:]))
    batch = collate_padding_free(rows)
    batch = {k: batch[k] for k in ("input_ids", "position_ids", "targets")}
    times = []
    for step in range(spec["steps"] + 2):
        t = time.perf_counter()
        opt.zero_grad()
        module(**batch).backward()
        opt.step()
        if step >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "best_step_s": min(times),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return 0
    params_table()
    from qwen_sft.standins import build_tiny_qwen3_5

    work = Path(tempfile.mkdtemp(prefix="qwen-sft-targets-"))
    try:
        return _timings(a, build_tiny_qwen3_5(work / "tiny", seed=0))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _timings(a, model: Path) -> int:
    from qwen_sft.families import QWEN3_5

    sets = {"default": list(QWEN3_5.lora_targets), "default + in_proj_a/b": list(QWEN3_5.lora_targets) + list(EXTRA)}
    results: dict[str, list] = {k: [] for k in sets}
    for _ in range(a.repeats):
        for name, targets in sets.items():
            spec = json.dumps({"model": str(model), "targets": targets, "steps": a.steps})
            out = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1]
            results[name].append(json.loads(out))
    print("\ntiny Qwen3.5 stand-in, CPU float32, one packed row of 512 tokens, r=16, best of "
          f"{a.steps} steps x {a.repeats} processes:")
    print("| targets | trainable | steps/s | peak RSS GB |")
    print("|---|---|---|---|")
    for name, rs in results.items():
        print(f"| {name} | {rs[0]['trainable']:,} | {1 / min(r['best_step_s'] for r in rs):.2f} | "
              f"{max(r['peak_rss_gb'] for r in rs):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
