#!/usr/bin/env python
"""Peak GPU memory of the GPU check's approaches, predicted on a CPU: a benchmark over qwen_sft.plan.

    python bench/memory_model.py                              # ours, ours-unfused, ours-offload (2 x 4096)
    python bench/memory_model.py --unfused --then-mask --approaches ours-unfused,ours-cast,ours-fp32lora,naive \\
        --steps 8 --compare                                   # the calibration of `qwen-sft plan` against the H200
    python bench/memory_model.py --model qwen3.5-4b           # Qwen3.5-4B's text model (Gated DeltaNet layers)

Runs the GPU check's own code (bench/gpu_check.py: same model config, rows, LoRA, Runner, AdamW) under the plan's
counters (qwen_sft/plan/sim.py: stand-in arithmetic, live bytes, 512-byte CUDA blocks) and CUDA kernel stand-ins
(qwen_sft/plan/kernels.py), at the model's full depth (no extrapolation: the check's Runner is not train_step).
The figure is the peak of live tensor bytes: what torch.cuda.max_memory_allocated counts, less what the CUDA
allocator holds beyond tensors (cuBLAS workspaces), which `--compare` measures against the H200 runs of
bench/results/ and qwen_sft/plan/core.py's CALIBRATION records.

--unfused: PEFT's and transformers' own forwards (the code the H200 figures were measured with); --then-mask: the
[T x T] attention mask the packed forward still built then (at 8812599 / ebe2413; not built since b012388).

A model, not a measurement: it cannot see liger-kernel (Triton) or an allocator's fragmentation.

--model qwen3.5-4b: the Gated DeltaNet layers' kernels are stand-ins for what flash-linear-attention's chunked
gated delta rule and causal-conv1d keep for backward (qwen_sft/plan/kernels.py), not transformers' PyTorch
fallback, whose chunked loop keeps far more. Uncalibrated until a GPU run of gpu_check.py --model qwen3.5-4b
(docs/benchmarks.md, "Next on a GPU").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check  # noqa: E402  (also puts src/ on sys.path)

from qwen_sft.plan import kernels, sim  # noqa: E402

# The H200 measurements each approach is compared with (--compare): (results file, its key, steps the check ran).
H200 = {"ours-unfused": ("2026-11-27-h200-run3.json", "ours#2", 7),
        "naive": ("2026-11-27-h200-run3.json", "naive#2", 7),
        "ours-cast": ("2026-11-27-h200-run2.json", "ours-chunk512#2", 8),
        "ours-fp32lora": ("2026-11-27-h200-run2.json", "ours-fp32lora-chunk512#2", 8)}
RESULTS = Path(__file__).resolve().parent / "results"


def build(rank: int, model_name: str = "qwen3-4b"):
    from qwen_sft.config import build_config
    from qwen_sft.layers import attention
    from qwen_sft.loss import CausalLMLoss
    from qwen_sft.plan.arch import from_config
    from qwen_sft.plan.build import build as build_model

    cfg = build_config({"lora_rank": rank, "lora_alpha": 2 * rank, "gradient_checkpointing": True})
    arch = from_config(gpu_check.model_config(model_name, tiny=False), model_name, "bench/gpu_check.py")
    model, frozen = build_model(arch, cfg, arch.layers, torch.bfloat16, attention.NAME)
    model.train()
    lora = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return model, CausalLMLoss(model, cfg.loss_chunk_size), frozen, lora, cfg, arch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--approaches", default="ours,ours-unfused,ours-offload")
    ap.add_argument("--model", default="qwen3-4b", choices=["qwen3-4b", "qwen3.5-4b"])
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4, help="steps per approach (with the check's rows the peak comes "
                    "at the 4th; the H200 runs ran 7 and 8)")
    ap.add_argument("--unfused", action="store_true",
                    help="PEFT's own LoRA forward in every approach (the code the H200 figures were measured with)")
    ap.add_argument("--then-mask", action="store_true", help="build the packed forward's [T x T] mask, as then")
    ap.add_argument("--compare", action="store_true", help="print model vs H200 for the approaches measured there")
    ap.add_argument("--out", default=None, help="write the results (JSON) here")
    a = ap.parse_args()

    t0 = time.perf_counter()
    model, module, frozen, lora, cfg, arch = build(a.rank, a.model)
    config = arch.config
    steps_rows = gpu_check.make_rows(a.steps, a.batch, a.seq, 0.3, config["vocab_size"], seed=0)
    print(f"{'Qwen3.5-4B' if a.model == 'qwen3.5-4b' else 'Qwen3-4B'} architecture: {frozen / 2**30:.2f} GiB of bf16 "
          f"weights (stand-ins), {lora / 2**30:.2f} GiB of "
          f"fp32 LoRA r{a.rank}; {a.steps} steps of {a.batch} rows, {int(a.seq * 0.75)}-{a.seq} tokens; built in "
          f"{time.perf_counter() - t0:.0f}s", flush=True)
    pad_id = config["eos_token_id"] if isinstance(config["eos_token_id"], int) else 151643
    runner = gpu_check.Runner(model, module, torch.device("cpu"), torch.bfloat16, pad_id,
                              {"default": "sdpa_packed", "plain": "sdpa"}, cfg.loss_chunk_size)
    lora_init = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    results = {}
    mask = contextlib.nullcontext()
    if a.then_mask:
        from qwen_sft import loss as loss_mod

        mask = kernels.swapped((loss_mod.attention, "packed_forward", contextlib.nullcontext))
    with kernels.swapped(*kernels.cuda_kernels(), *arch.cuda_kernels()), mask:
        for name in [x for x in a.approaches.split(",") if x]:
            variant = dict(gpu_check.VARIANTS[name], **({"fused": False, "norm_mlp": False} if a.unfused else {}))
            if variant.get("liger") or "flex" in name:
                print(f"{name}: not modelled (Triton / compiled kernels)")
                continue
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in lora_init:
                        p.copy_(lora_init[n])
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, foreach=True)
            runner.setup(variant)
            t = time.perf_counter()
            peaks = []
            with sim.LiveBytes(round_to=sim.CUDA_BLOCK, skip=True) as tracker:
                # Tensors from before the modes: the frozen weights (counted at full size in `frozen`), the LoRA
                # weights and the check's copy of them on the GPU (lora_init, to restart every approach from the
                # same weights), which count in its peak too.
                for p in model.parameters():
                    tracker.track(p, count=p.requires_grad)
                for t_ in lora_init.values():
                    tracker.track(t_)
                for rows in steps_rows:
                    tracker.peak = tracker.live
                    runner.forward_backward(rows, runner.batch(rows))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    peaks.append((tracker.peak + frozen) / 2**30)
            results[name] = {"peak_gib": max(peaks), "per_step_gib": peaks, "seconds": time.perf_counter() - t}
            print(f"{name:<16} peak {max(peaks):6.2f} GiB  (steps: {', '.join(f'{p:.2f}' for p in peaks)}; "
                  f"{time.perf_counter() - t:.0f}s)", flush=True)
            del optimizer
    if a.compare:
        compare(results)
    if a.out:
        Path(a.out).write_text(json.dumps({"args": vars(a), "results": results}, indent=2))
    return 0


def compare(results: dict) -> None:
    """Model vs the H200 (max_memory_allocated over the check's steps), and the margin the plan adds."""
    rows = []
    for name, (file, key, steps) in H200.items():
        if name in results:
            measured = json.loads((RESULTS / file).read_text())["results"][key]["peak_vram_gb"]
            model = max(results[name]["per_step_gib"][:steps])
            rows.append((name, model, measured))
    if not rows:
        return
    margin = sum(m - p for _, p, m in rows) / len(rows)
    print(f"| approach | model | H200 | H200 - model | residual after the margin ({margin:+.3f}) |")
    print("|---|---|---|---|---|")
    for name, p, m in rows:
        print(f"| {name} | {p:.3f} GiB | {m:.3f} GiB | {m - p:+.3f} | {m - p - margin:+.3f} |")
    print(f"margin {margin:.3f} GiB, largest residual {max(abs(m - p - margin) for _, p, m in rows):.3f} GiB")


if __name__ == "__main__":
    sys.exit(main())
