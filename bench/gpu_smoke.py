#!/usr/bin/env python
"""GPU smoke test of the real pipeline (not a benchmark): train -> merge -> validate on CUDA in bf16.

The CPU test suite trains in float32; this runs qwen-sft's own `train` and `merge` on the tiny
Qwen3 stand-in with the settings a GPU user gets: bf16 (autocast over fp32 LoRA weights), gradient
checkpointing, padding-free batches through sdpa_packed, packing on. About a minute. Exit 0 when the
fused LoRA / RMSNorm / SwiGLU functions agree with PEFT's and transformers' forwards on CUDA (loss,
gradients, and the CUDA RNG stream after the dropout masks are regenerated), the loss fell, and the
merged model matches the adapter within bf16 tolerance; on a machine without CUDA it says so and exits 0.

    python bench/gpu_smoke.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


def fused_parity(model_dir: Path, device) -> bool:
    """One forward + backward, fused vs PEFT's / transformers' forwards, bf16 + autocast, dropout 0.3."""
    import torch

    from qwen_sft.batching import collate_padding_free
    from qwen_sft.data.encode import Encoded
    from qwen_sft.layers.fused import fuse_lora_layers, fuse_norm_mlp
    from qwen_sft.testing import lora_loss_pair

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    plain, fused = lora_loss_pair(model_dir, dtype=dtype, device=device, r=8, dropout=0.3)
    fuse_lora_layers(fused)
    fuse_norm_mlp(fused)
    g = torch.Generator().manual_seed(3)
    rows = []
    for n in (300, 700, 150):
        ids = torch.randint(0, 150_000, (n,), generator=g).tolist()
        rows.append(Encoded(ids, [-100] * (n // 3) + ids[n // 3:]))
    batch = {
        k: v.to(device) for k, v in collate_padding_free(rows).items() if k in ("input_ids", "position_ids", "targets")
    }
    out = []
    for module in (plain, fused):
        torch.manual_seed(7)
        with module.adapter_input_casts_off():
            loss = module(**batch)
            loss.backward()
        rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()
        out.append(
            (
                loss.detach().float(),
                {n: p.grad.float() for n, p in module.named_parameters() if p.grad is not None},
                rng,
            )
        )
    (la, ga, ra), (lb, gb, rb) = out
    worst = min(float(torch.nn.functional.cosine_similarity(ga[n].flatten(), gb[n].flatten(), dim=0)) for n in ga)
    ok = (
        ga.keys() == gb.keys() and abs(float(la - lb)) <= 2e-3 * abs(float(la)) and worst > 0.99 and torch.equal(ra, rb)
    )
    print(f"fused vs PEFT/transformers on {device}: loss {float(la):.4f} vs {float(lb):.4f}, worst gradient cosine "
          f"{worst:.5f} over {len(ga)} LoRA tensors, RNG stream {'equal' if torch.equal(ra, rb) else 'DIFFERS'}: "
          f"{'ok' if ok else 'FAIL'}", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--cpu", action="store_true", help="dry run of the script on CPU (float32, slow)")
    a = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not a.cpu:
        print("SKIPPED: no CUDA device here (this smoke test is for a GPU machine)")
        return 0
    from qwen_sft.config import build_config
    from qwen_sft.data.formats import parse_row, write_jsonl
    from qwen_sft.samples import DEMO_PAIRS, demo_rows
    from qwen_sft.demo import demo_config
    from qwen_sft.merge import merge, validate
    from qwen_sft.model import build_tiny_model
    from qwen_sft.train import train

    work = Path(a.workdir or tempfile.mkdtemp(prefix="qwen-sft-gpu-smoke-"))
    model_dir = build_tiny_model(work / "tiny-qwen3", seed=0)
    parity = fused_parity(model_dir, torch.device("cuda" if cuda else "cpu"))
    data = work / "data.jsonl"
    write_jsonl([parse_row(r, None) for r in demo_rows()], data)
    raw = demo_config(work, model_dir, data, steps=60)
    raw.update(bf16=True, gradient_checkpointing=True, packing=True, per_device_train_batch_size=4,
               gradient_accumulation_steps=2, run_name="gpu-smoke")
    cfg = build_config(raw, "gpu-smoke")
    metrics = train(cfg)
    history = json.loads((cfg.run_dir / "loss_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    print(f"loss: first logged {losses[0]:.3f} -> last {losses[-1]:.3f}; "
          f"train tokens/s {metrics['train_tokens_per_second']:.0f}"
          + (f"; peak VRAM {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else ""), flush=True)
    merged_dir = work / "merged"
    dtype = "bfloat16" if cuda else "float32"
    merge(str(model_dir), str(cfg.run_dir / "lora_adapters"), str(merged_dir), dtype=dtype)
    report = validate(str(model_dir), str(cfg.run_dir / "lora_adapters"), str(merged_dir),
                      [q for q, _ in DEMO_PAIRS[:3]], dtype=dtype)
    ok = parity and losses[-1] < 0.5 * losses[0] and report.ok
    print("GPU SMOKE: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
