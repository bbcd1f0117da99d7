#!/usr/bin/env python
"""GPU check: one LoRA training step on a Qwen3-4B-sized model, naive (padded, full logits) vs ours.

    bash bench/gpu_check.sh                 # on a CUDA machine: at most ~8 minutes, prints a table
    python bench/gpu_check.py --tiny        # dry run of the whole script on CPU with tiny sizes
    bash bench/gpu_check.sh --model qwen3.5-4b            # the Qwen3.5-4B architecture (Gated DeltaNet layers)
    python bench/gpu_check.py --model qwen3.5-4b --tiny   # its CPU dry run

--model qwen3.5-4b: the text model of src/qwen_sft/assets/qwen3_5/Qwen3.5-4B/config.json (24 Gated DeltaNet and
8 full-attention layers, vocabulary 248,320), LoRA on every projection (families.py: attention, linear attention,
MLP). Ours packs each step's rows into one row and resets the DeltaNet state per example (layers/recurrent.py: the
kernels' cu_seqlens / seq_idx when flash-linear-attention and causal-conv1d are installed, else one call per
example); naive runs the padded batch through transformers' own forward. Before timing, the packed row's loss is
compared with its rows run one at a time ("packing check"). Goal (#22): r64, batch 2 x 4096, ours <= 12 GiB
and >= 2x naive tokens/s. liger and flex_attention variants do not apply to it.

No download: the Qwen3-4B architecture comes from src/qwen_sft/assets/qwen3/config.json and the
weights are random bf16, built on the GPU with from_config. Both approaches use the same model, the
same LoRA (r64, alpha 128, all 7 projections, dropout 0.05), gradient checkpointing (non-reentrant),
the same rows and masks, AdamW on the LoRA weights, one micro-batch per optimizer step:

  naive  right-padded batch + attention_mask, the HF model's own forward with labels (full
         [B, T, vocab] logits, ForCausalLMLoss), loss.backward(); attention as a plain HF run gets it
         (flash_attention_2 when installed, else sdpa).
  ours   qwen_sft's defaults: padding-free batch (one row, restarting position_ids) through CausalLMLoss
         (decoder without lm_head, then trained-position chunked CE), loss_sum / trained tokens;
         attention as qwen-sft picks it (flash_attention_2 when installed, else sdpa_packed).
  and the ablations listed at VARIANTS below.

Per approach: --warmup steps, then --steps timed steps (CUDA-synchronized): real (non-pad) tokens/s,
MFU, peak VRAM (torch.cuda.max_memory_allocated, reset before each approach; the model's own weights
are included). An OOM is caught and reported for that approach; the other still runs.

MFU = model FLOPs per second / the card's bf16 matmul rate measured here (8192^3 products). Model FLOPs
per step, counted the same for both approaches (the useful work; naive's padding and its logits at
untrained positions are not counted, so its waste shows as lower MFU):
  decoder linears: 6 * N_decoder per real token (forward 2N + backward to activations 2N + recompute 2N);
  LoRA adapters: 8 * N_lora per real token (the same three, plus their weight gradients 2N);
  lm_head: 4 * vocab * hidden per trained token (forward + gradient to the hidden states);
  attention: 16 * n_layers * heads * head_dim * sum over rows of L(L+1)/2 (causal QK^T and AV:
  forward, backward x2, recompute).
Recompute is counted as the brief for this check asks, so this is closer to "hardware FLOPs
utilization" than PaLM-style MFU; multiply by 4/6 (decoder part) for the convention without it.

Prints the card name, date and versions; writes gpu_check.json to --out or $OUT when set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))  # runs from a plain checkout too (not pip-installed)

# ours first: if naive runs out of memory, ours is measured already. Attention: "default" is what
# qwen-sft picks (flash_attention_2 when installed, else sdpa_packed: SDPA per example of the padding-free
# row); "plain" is what a plain HF run gets (flash_attention_2 when installed, else sdpa). Autocast (bf16
# compute over PEFT's fp32 LoRA weights) is on for naive too: a Trainer run with bf16=True has it.
#   ours            qwen-sft's defaults without liger (loss_chunk_size from the config, adapter input casts
#                   off, fused LoRA Linear, memory-light RMSNorm, SwiGLU and MLP)
#   ours-unfused    PEFT's and transformers' own forwards (fused_lora / fused_norm_mlp: false): the defaults
#                   the H200 runs of 2026-11-27 measured
#   ours-fusedlora  the fused LoRA Linear alone
#   ours-chunk2048  the earlier default chunk: 4x the CE buffers
#   ours-cast       PEFT's cast of every adapter input to fp32 kept (autocast casts it back to bf16)
#   ours-fp32lora   no autocast: every adapter matmul in fp32 (what PEFT alone does on a bf16 base)
#   ours-sdpa       transformers' sdpa: the padding-free row gets a dense block-diagonal mask
#   ours-padded     our chunked loss on a right-padded batch (padding_free=false)
#   ours-liger      + liger-kernel's RMSNorm and RoPE (our MLP function stays, as in qwen-sft's defaults
#                   where liger is installed). liger patches transformers process-wide: every approach
#                   after it runs with liger too, so liger variants run after all the others
#   ours-offload    offload_activations: the checkpointed layer inputs wait in pinned CPU memory
#   ours-liger-offload  both (after ours-liger: liger is process-wide)
#   ours-flex       torch's flex_attention (block-sparse mask; compiled on first use)
VARIANTS = {
    "ours": dict(kind="ours", attn="default"),
    "naive": dict(kind="naive", attn="plain"),
    "ours-unfused": dict(kind="ours", attn="default", fused=False, norm_mlp=False),
    "ours-fusedlora": dict(kind="ours", attn="default", norm_mlp=False),
    "ours-chunk2048": dict(kind="ours", attn="default", chunk=2048),
    "ours-cast": dict(kind="ours", attn="default", cast=True),
    "ours-fp32lora": dict(kind="ours", attn="default", autocast=False),
    "ours-sdpa": dict(kind="ours", attn="plain"),
    "ours-padded": dict(kind="ours-padded", attn="default"),
    "ours-offload": dict(kind="ours", attn="default", offload=True),
    "ours-liger": dict(kind="ours", attn="default", liger=True),
    "ours-liger-offload": dict(kind="ours", attn="default", liger=True, offload=True),
    "ours-flex": dict(kind="ours", attn="flex_attention"),
}
APPROACHES = tuple(VARIANTS)

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16)


# The training config each approach is (`qwen-sft plan` predicts those); the others are not qwen-sft's training code
# (naive, PEFT's casts, no autocast) or are not simulated (liger's and flex_attention's compiled kernels).
PLAN_CONFIG = {"ours": {}, "ours-unfused": {"fused_lora": False, "fused_norm_mlp": False},
               "ours-fusedlora": {"fused_norm_mlp": False}, "ours-chunk2048": {"loss_chunk_size": 2048},
               "ours-sdpa": {"attn_implementation": "sdpa"}, "ours-padded": {"padding_free": False},
               "ours-offload": {"offload_activations": True}}


def log(msg: str) -> None:
    print(msg, flush=True)


def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


# ---------------------------------------------------------------- measurements


def matmul_rate(device, dtype, n: int, iters: int) -> float:
    """Achieved FLOP/s of an n x n x n matmul loop (the MFU denominator)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    dt_s = time.perf_counter() - t
    del a, b
    return 2 * n**3 * iters / dt_s


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_rows(n_steps: int, batch: int, seq: int, prompt_share: float, vocab: int, seed: int):
    """Per step, `batch` rows of seq*U(0.75, 1] tokens: the first prompt_share untrained, the rest trained."""
    import random

    from qwen_sft.data.encode import IGNORE_INDEX, Encoded

    rng = random.Random(seed)
    steps = []
    for _ in range(n_steps):
        rows = []
        for _ in range(batch):
            n = rng.randint(int(seq * 0.75), seq)
            ids = [rng.randrange(vocab) for _ in range(n)]
            p = int(n * prompt_share)
            rows.append(Encoded(ids, [IGNORE_INDEX] * p + ids[p:]))
        steps.append(rows)
    return steps


def step_flops(model_cfg, rows, n_decoder: int, n_lora: int) -> float:
    """Qwen3.5: the quadratic attention term counts its full-attention layers only; each Gated DeltaNet layer adds
    16 * value heads * key dim * value dim per token (reading and writing its state: forward, backward x2,
    recompute), an approximation of the chunked kernel's work."""
    tokens = sum(len(r.input_ids) for r in rows)
    trained = sum(sum(1 for x in r.labels[1:] if x != -100) for r in rows)
    d_attn = model_cfg.num_attention_heads * model_cfg.head_dim
    pairs = sum(len(r.input_ids) * (len(r.input_ids) + 1) / 2 for r in rows)
    types = getattr(model_cfg, "layer_types", None) or ["full_attention"] * model_cfg.num_hidden_layers
    n_full, n_linear = types.count("full_attention"), types.count("linear_attention")
    linear = (
        (
            16
            * n_linear
            * getattr(model_cfg, "linear_num_value_heads", 0)
            * getattr(model_cfg, "linear_key_head_dim", 0)
            * getattr(model_cfg, "linear_value_head_dim", 0)
            * tokens
        )
        if n_linear
        else 0
    )
    return (6 * n_decoder * tokens + 8 * n_lora * tokens + 4 * model_cfg.vocab_size * model_cfg.hidden_size * trained
            + 16 * n_full * d_attn * pairs + linear)


def model_config(name: str, tiny: bool) -> dict:
    """config.json values of the checked architecture (no download): Qwen3-4B, or Qwen3.5-4B's text model."""
    if name == "qwen3.5-4b":
        from qwen_sft.assets import QWEN3_5_DIR
        from qwen_sft.standins import QWEN3_5_TEXT

        base = json.loads((QWEN3_5_DIR / "Qwen3.5-4B" / "config.json").read_text())["text_config"]
        if tiny:
            base.update(QWEN3_5_TEXT, layer_types=base["layer_types"][:QWEN3_5_TEXT["num_hidden_layers"]])
            base["rope_parameters"] = dict(base["rope_parameters"], mrope_section=[2, 1, 1])
        base.pop("dtype", None)
        return base
    from qwen_sft.assets import ASSET_DIR

    base = json.loads((ASSET_DIR / "config.json").read_text())
    if tiny:
        base.update(TINY, max_window_layers=TINY["num_hidden_layers"])
    base.pop("torch_dtype", None)
    return base


def packing_check(module, rows_list, device) -> dict:
    """The loss of each step's rows packed into one row vs the same rows one at a time (no gradient): equal up to
    the compute dtype's rounding when the per-example reset works (layers/recurrent.py)."""
    import torch

    from qwen_sft.batching import collate_padding_free
    from qwen_sft.layers.recurrent import kernels_installed

    worst = 0.0
    with torch.no_grad(), module.adapter_input_casts_off():
        for rows in rows_list:
            b = collate_padding_free(rows)
            packed = module(**{k: b[k].to(device) for k in ("input_ids", "position_ids", "targets")})
            alone = 0.0
            for r in rows:
                b = collate_padding_free([r])
                alone = alone + module(**{k: b[k].to(device) for k in ("input_ids", "position_ids", "targets")})
            worst = max(worst, abs(packed.item() - float(alone)) / max(abs(float(alone)), 1e-30))
    return {"max_rel_diff": worst, "kernels": bool(device.type == "cuda" and kernels_installed())}


def naive_batch(rows, pad_id: int, device) -> dict:
    import torch

    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


class Runner:
    """Sets the model up for one variant and runs its training steps (forward, backward, AdamW)."""

    def __init__(self, model, module, device, dtype, pad_id: int, attn_of: dict, default_chunk: int):
        self.model, self.module, self.device, self.dtype, self.pad_id = model, module, device, dtype, pad_id
        self.attn_of, self.default_chunk, self.liger = attn_of, default_chunk, False

    def setup(self, variant: dict) -> dict:
        import torch

        from qwen_sft.layers.fused import fuse_lora_layers, fuse_norm_mlp, unfuse_lora_layers, unfuse_norm_mlp
        from qwen_sft.model import apply_liger

        # naive: PEFT's and transformers' own forwards. liger, as qwen-sft applies it by default: its RMSNorm
        # and RoPE kernels, our MLP function (apply_liger(swiglu=False)).
        ours = variant["kind"] != "naive"
        fused = variant.get("fused", ours)
        norm_mlp = variant.get("norm_mlp", ours)
        fuse_lora_layers(self.model) if fused else unfuse_lora_layers(self.model)
        unfuse_norm_mlp(self.model)
        if variant.get("liger") and not self.liger:
            apply_liger(self.model.get_base_model(), self.device, swiglu=False)
            self.liger = True
            log("  liger-kernel applied (process-wide: later approaches run with it too)")
        if norm_mlp:
            fuse_norm_mlp(self.model, rms_norm=not self.liger)
        attn = self.attn_of.get(variant["attn"], variant["attn"])
        self.model.set_attn_implementation(attn)
        self.module.chunk_size = variant.get("chunk", self.default_chunk)
        autocast = variant.get("autocast", True) and self.dtype == torch.bfloat16
        self.module.autocast_dtype = torch.bfloat16 if autocast else None
        self.module.skip_adapter_input_casts = not variant.get("cast")
        self.variant = variant
        return {"attn": attn, "loss_chunk": self.module.chunk_size, "autocast": autocast,
                "adapter_input_casts": bool(variant.get("cast")) or not autocast, "liger": self.liger,
                "offload_activations": bool(variant.get("offload")), "fused_lora": fused,
                "fused_norm_mlp": norm_mlp}

    def batch(self, rows) -> dict:
        from qwen_sft.batching import collate_padded, collate_padding_free

        kind = self.variant["kind"]
        if kind == "naive":
            return naive_batch(rows, self.pad_id, self.device)
        if kind == "ours-padded":
            b = collate_padded(rows, self.pad_id)
            return {k: b[k].to(self.device) for k in ("input_ids", "attention_mask", "targets")}
        b = collate_padding_free(rows)
        return {k: b[k].to(self.device) for k in ("input_ids", "position_ids", "targets")}

    def forward_backward(self, rows, batch):
        """The step's loss (per trained token), after its backward."""
        import torch

        from qwen_sft.batching import num_targets
        from qwen_sft.train import offload_saved_tensors

        if self.variant["kind"] == "naive":
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.module.autocast_dtype is not None):
                loss = self.model(**batch, use_cache=False).loss
            loss.backward()
            return loss
        with self.module.adapter_input_casts_off():  # held over backward too, as the training loop does
            with offload_saved_tensors(self.variant.get("offload", False), self.device):
                loss = self.module(**batch) / sum(num_targets(r) for r in rows)
            loss.backward()
        return loss

    def run(self, name: str, steps_rows, warmup: int, optimizer, flops_fn, deadline: float) -> dict:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        times, flops, tokens, losses = [], 0.0, 0, []
        for i, rows in enumerate(steps_rows):
            if time.perf_counter() > deadline:
                log(f"  {name}: time budget reached after {len(times)} measured steps")
                break
            batch = self.batch(rows)
            sync(self.device)
            t = time.perf_counter()
            loss = self.forward_backward(rows, batch)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync(self.device)
            elapsed = time.perf_counter() - t
            losses.append(float(loss.detach()))
            del loss, batch
            if i >= warmup:
                times.append(elapsed)
                flops += flops_fn(rows)
                tokens += sum(len(r.input_ids) for r in rows)
            log(f"  {name} step {i + 1}/{len(steps_rows)}{' (warmup)' if i < warmup else ''}: {elapsed * 1000:.0f} ms, "
                f"loss {losses[-1]:.4f}")
        out = {"measured_steps": len(times), "losses": losses}
        if times:
            out.update(
                tokens_per_s=tokens / sum(times), flops_per_s=flops / sum(times), step_ms=1000 * sum(times) / len(times)
            )
        if self.device.type == "cuda":
            out["peak_vram_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return out

    def profile(self, name: str, steps_rows, out_dir) -> dict:
        """GPU kernel time vs wall time of one step (no optimizer): far apart means launch-bound."""
        from torch.profiler import ProfilerActivity, profile

        def step(rows):
            self.forward_backward(rows, self.batch(rows))
            self.model.zero_grad(set_to_none=True)
            sync(self.device)

        step(steps_rows[0])
        cuda = self.device.type == "cuda"
        t = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            step(steps_rows[1])
        wall = time.perf_counter() - t
        table = prof.key_averages().table(
            sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=15
        )
        log(table)  # its footer has the step's total self CPU and self CUDA (kernel) time
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "profile.txt").write_text(table)
        log(f"profile {name}: wall {wall * 1000:.0f} ms under the profiler")
        return {"variant": name, "wall_ms_profiled": wall * 1000}


def predict_peaks(report: dict, base: dict, rank: int, steps_rows, lora_copy: int, cuda: bool, deadline: float) -> None:
    """`qwen-sft plan`'s prediction for every approach that is a training config, beside what was measured: the
    plan's peak for the check's longest step (one micro-batch a step, as the check runs), plus the check's own copy
    of the LoRA start weights, plus the plan's CUDA margin. Computed on the CPU after the measurements."""
    from qwen_sft.config import build_config
    from qwen_sft.batching import collate_padded, collate_padding_free
    from qwen_sft.plan import core, memory
    from qwen_sft.plan.arch import from_config

    arch = from_config(dict(base), "gpu_check", "bench/gpu_check.py")
    rows = max(steps_rows, key=lambda rs: sum(len(r.input_ids) for r in rs))
    table = []
    for key, r in report["results"].items():
        name = key.split("#")[0]
        if name not in PLAN_CONFIG or time.perf_counter() > deadline:
            continue
        cfg = build_config({"lora_rank": rank, "lora_alpha": 2 * rank, "gradient_checkpointing": True, "bf16": cuda,
                            "gradient_accumulation_steps": 1, **PLAN_CONFIG[name]})
        batch = collate_padding_free(rows) if cfg.padding_free else collate_padded(rows, 0)
        m = memory.measure(arch, cfg, {k: v for k, v in batch.items()}, cuda)
        r["predicted_peak_gib"] = (m.peak.bytes + lora_copy) / 2**30 + (core.CALIBRATION["margin_gib"] if cuda else 0)
        if "peak_vram_gb" in r:
            table.append((key, r["predicted_peak_gib"], r["peak_vram_gb"]))
    report["plan_calibration"] = core.CALIBRATION
    if table:
        log("| approach | predicted by qwen-sft plan | measured | measured - predicted |")
        for key, pred, meas in table:
            log(f"| {key} | {pred:.2f} GiB | {meas:.2f} GiB | {meas - pred:+.2f} |")


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (runs on CPU too): a dry run of the script")
    ap.add_argument("--model", default="qwen3-4b", choices=["qwen3-4b", "qwen3.5-4b"],
                    help="the architecture checked (random weights, no download)")
    ap.add_argument("--seq", type=int, default=None, help="cutoff: rows are 0.75-1.0 x this long (default 4096; tiny "
                                                          "256)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=None, help="LoRA rank (default 64; tiny 8)")
    ap.add_argument("--warmup", type=int, default=None, help="warmup steps (default 2; tiny 1)")
    ap.add_argument("--steps", type=int, default=None, help="measured steps (default 6; tiny 2)")
    ap.add_argument("--prompt-share", type=float, default=0.3, help="untrained share at the start of each row")
    ap.add_argument("--attn", default="auto", help="ours' attention: auto (qwen-sft's pick: flash_attention_2 when "
                                                   "installed, else sdpa_packed) | sdpa_packed | sdpa | "
                                                   "flash_attention_2")
    ap.add_argument("--approaches", default=",".join(APPROACHES))
    ap.add_argument("--rounds", type=int, default=2,
                    help="measure the approach list this many times, interleaved (later rounds are named name#2, ...); "
                         "the first approaches of a process run slow on a GPU, so the ratios use the last round")
    ap.add_argument("--profile", default=None, help="after the approaches, profile one step of this variant "
                                                    "(torch.profiler)")
    ap.add_argument("--budget-s", type=float, default=420, help="stop measuring when the script has run this long")
    ap.add_argument("--no-predict", dest="predict", action="store_false",
                    help="skip `qwen-sft plan`'s prediction of each approach's peak (CPU, after the measurements)")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="directory for gpu_check.json (default $OUT)")
    a = ap.parse_args()
    started = time.perf_counter()
    deadline = started + a.budget_s

    seq = a.seq or (256 if a.tiny else 4096)
    rank = a.rank or (8 if a.tiny else 64)
    warmup = a.warmup if a.warmup is not None else (1 if a.tiny else 2)
    steps = a.steps if a.steps is not None else (2 if a.tiny else 6)
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
              "args": vars(a), "results": {}}
    out_dir = Path(a.out) if a.out else None

    def finish(code: int = 0) -> int:
        report["wall_s"] = round(time.perf_counter() - started, 1)
        if out_dir:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2))
            log(f"wrote {out_dir / 'gpu_check.json'}")
        return code

    log(f"date: {report['date']}")
    try:
        import torch
        import transformers
        import peft
    except ImportError as e:
        log(f"SKIPPED: a package is missing ({e}); the check needs torch, transformers>=5 and peft")
        report["skipped"] = str(e)
        return finish(0)
    report["versions"] = {"python": platform.python_version(), "torch": torch.__version__,
                          "transformers": transformers.__version__, "peft": peft.__version__}
    log("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))

    cuda = torch.cuda.is_available()
    if not cuda and not a.tiny:
        log("SKIPPED: no CUDA device here. This check needs an H100/H200-class GPU (run bench/gpu_check.sh there); "
            "use --tiny for a CPU dry run of the script.")
        report["skipped"] = "no CUDA device"
        return finish(0)
    try:
        return finish(run_check(a, report, cuda, seq, rank, warmup, steps, deadline))
    except Exception as e:  # noqa: BLE001 - always leave a report behind
        kind = "OOM" if is_oom(e) else f"{type(e).__name__}: {e}"[:500]
        log(f"FAILED outside the measured loops: {kind}")
        report["error"] = kind
        return finish(1)


def run_check(a, report: dict, cuda: bool, seq: int, rank: int, warmup: int, steps: int, deadline: float) -> int:
    import torch

    device = torch.device("cuda" if cuda else "cpu")
    card = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    report["device"] = card
    log(
        f"device: {card}"
        + (f", {torch.cuda.get_device_properties(device).total_memory / 2**30:.1f} GiB" if cuda else "")
    )
    dtype = torch.bfloat16 if cuda else torch.float32  # bf16 matmuls crawl on most CPUs: the dry run uses fp32

    from transformers import AutoConfig, AutoModelForCausalLM

    from qwen_sft.config import build_config
    from qwen_sft.families import family_of
    from qwen_sft.loss import CausalLMLoss
    from qwen_sft.model import wrap_lora

    # ---- the card's matmul rate
    n, iters = (8192, 30) if cuda else (512, 5)
    peak = matmul_rate(device, dtype, n, iters)
    report["matmul_tflops"] = peak / 1e12
    log(f"measured {str(dtype).replace('torch.', '')} matmul rate ({n}^3 x {iters}): {peak / 1e12:.3g} TFLOP/s")

    # ---- model: Qwen3-4B (or Qwen3.5-4B) architecture, random weights, built on the device
    base = model_config(a.model, a.tiny)
    from qwen_sft.layers import attention
    from qwen_sft.model import pick_attention

    attention.register()
    attn = pick_attention(build_config({}), device) if a.attn == "auto" else a.attn
    plain_attn = "flash_attention_2" if attn == "flash_attention_2" else "sdpa"
    attn_of = {"default": attn, "plain": plain_attn}
    config = AutoConfig.for_model(**base)
    config.use_cache = False
    t = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    model = model.to(device)  # a no-op when the device context was honoured
    model.config.use_cache = False
    family = family_of(config)
    if family.keep_rows_apart is not None:  # as load_base_model does
        family.keep_rows_apart(model)
    cfg = build_config({"lora_rank": rank, "lora_alpha": 2 * rank, "gradient_checkpointing": True, "bf16": cuda})
    model = wrap_lora(model, cfg)
    model.train()
    module = CausalLMLoss(model, cfg.loss_chunk_size)
    n_decoder = sum(
        p.numel() for n_, p in model.named_parameters() if ".layers." in n_ and "lora_" not in n_ and p.dim() == 2
    )
    n_lora = sum(p.numel() for n_, p in model.named_parameters() if "lora_" in n_)
    report["model"] = {
        "architecture": a.model,
        "family": family.name,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "vocab": config.vocab_size,
        "params": sum(p.numel() for p in model.parameters()),
        "decoder_linear_params": n_decoder,
        "lora_params": n_lora,
        "lora_rank": rank,
        "attn_implementation": attn,
        "dtype": str(dtype).replace("torch.", ""),
        "seq": seq,
        "batch": a.batch,
        "gradient_checkpointing": True,
    }
    log(f"model: {report['model']['params'] / 1e6:,.1f} M parameters ({n_decoder / 1e6:,.1f} M in decoder linears, "
        f"{n_lora / 1e6:.2f} M LoRA r{rank}), {config.num_hidden_layers} layers, attention {attn}, "
        f"built in {time.perf_counter() - t:.0f}s")
    if cuda:
        report["model_vram_gb"] = torch.cuda.memory_allocated(device) / 2**30
        log(f"model + LoRA weights on the GPU: {report['model_vram_gb']:.2f} GiB")

    steps_rows = make_rows(warmup + steps, a.batch, seq, a.prompt_share, config.vocab_size, seed=0)
    tokens = sum(len(r.input_ids) for rows in steps_rows for r in rows)
    padded = sum(a.batch * max(len(r.input_ids) for r in rows) for rows in steps_rows)
    log(f"rows: {a.batch} per step, {int(seq * 0.75)}-{seq} tokens, {a.prompt_share:.0%} prompt; "
        f"padded batches hold {padded / tokens - 1:.1%} padding")
    pad_id = config.eos_token_id if isinstance(config.eos_token_id, int) else 151643
    flops_fn = lambda rows: step_flops(config, rows, n_decoder, n_lora)  # noqa: E731
    if family.stateful_layers:
        # short rows, several per packed row: enough to show a leak, cheap at this size
        check_rows = make_rows(2, 4, min(seq, 512), a.prompt_share, config.vocab_size, seed=1)
        module.autocast_dtype = torch.bfloat16 if dtype == torch.bfloat16 else None
        report["packing_check"] = packing_check(module.eval(), check_rows, device)  # eval: no dropout
        module.train()
        log(f"packing check: packed vs one at a time, max relative loss difference "
            f"{report['packing_check']['max_rel_diff']:.2e} "
            f"({'kernels with cu_seqlens' if report['packing_check']['kernels'] else 'one call per example'})")

    # Every approach starts from the same LoRA weights and RNG state, so their first-step losses agree.
    lora_init = {n_: p.detach().clone() for n_, p in model.named_parameters() if p.requires_grad}
    runner = Runner(model, module, device, dtype, pad_id, attn_of, cfg.loss_chunk_size)
    names = [x for x in a.approaches.split(",") if x]
    if family.liger is None:  # liger is not wired for this family; flex_attention's mask does not reach DeltaNet
        skipped = [n_ for n_ in names if VARIANTS.get(n_, {}).get("liger") or (family.stateful_layers and "flex" in n_)]
        if skipped:
            log(f"not for {family.name}: {', '.join(skipped)}")
        names = [n_ for n_ in names if n_ not in skipped]
    # Rounds are interleaved within three phases: liger (process-wide once applied) only after every
    # round of the approaches without it, flex_attention (long compile) last.
    phase = lambda n_: 2 if "flex" in n_ else 1 if VARIANTS.get(n_.split("#")[0], {}).get("liger") else 0  # noqa: E731
    keys = [n_ if k == 1 or "#" in n_ else f"{n_}#{k}"
            for p_ in (0, 1, 2) for k in range(1, a.rounds + 1) for n_ in names if phase(n_) == p_]
    last = {n_: (n_ if a.rounds == 1 or "#" in n_ else f"{n_}#{a.rounds}") for n_ in names}
    for key in keys:
        name = key.split("#")[0]  # "ours#2": ours measured again, later (order effects)
        if name not in VARIANTS:
            log(f"unknown approach {name!r}; skipping")
            continue
        log(f"[{key}]")
        with torch.no_grad():
            for n_, p in model.named_parameters():
                if n_ in lora_init:
                    p.copy_(lora_init[n_])
        torch.manual_seed(1)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        try:
            setup = runner.setup(VARIANTS[name])
            r = runner.run(key, steps_rows, warmup, optimizer, flops_fn, deadline)
            if "flops_per_s" in r:
                r["mfu"] = r["flops_per_s"] / peak
            r.update(setup)
        except Exception as e:  # noqa: BLE001 - report, keep going with the other approach
            if not is_oom(e):
                log(f"  {key}: FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                r = {"error": f"{type(e).__name__}: {e}"[:500]}
            else:
                r = {"error": "OOM"}
                if cuda:
                    r["peak_vram_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                log(f"  {key}: out of memory")
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        report["results"][key] = r
        if a.out:  # after every approach, so a later hang or kill still leaves these results
            Path(a.out).mkdir(parents=True, exist_ok=True)
            (Path(a.out) / "gpu_check.json").write_text(json.dumps(report, indent=2))
    if a.profile in VARIANTS:
        runner.setup(VARIANTS[a.profile])
        report["profile"] = runner.profile(a.profile, steps_rows, a.out)
    if a.predict:
        lora_copy = sum(t.numel() * t.element_size() for t in lora_init.values())
        predict_peaks(report, base, rank, steps_rows, lora_copy, cuda, deadline + 40)

    # ---- table
    log("")
    log(f"{card}, {report['date']}, {report['model']['params'] / 1e9:.3g} B params, seq {seq}, batch {a.batch}, "
        f"LoRA r{rank}, grad checkpointing, {attn}, matmul rate measured {peak / 1e12:.3g} TFLOP/s")
    head = f"| {'approach':13} | {'tokens/s':>10} | {'step ms':>8} | {'MFU':>6} | {'peak VRAM GiB':>13} |"
    log(head)
    log("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    res = report["results"]
    for name, r in res.items():
        if "tokens_per_s" in r:
            vram = f"{r['peak_vram_gb']:.2f}" if "peak_vram_gb" in r else "n/a (CPU)"
            log(f"| {name:13} | {r['tokens_per_s']:>10.0f} | {r['step_ms']:>8.0f} | {r['mfu']:>6.1%} | {vram:>13} |")
        else:
            log(f"| {name:13} | {r.get('error', 'no measured step')[:60]:>10} | {'':>8} | {'':>6} | "
                f"{(str(round(r['peak_vram_gb'], 2)) if 'peak_vram_gb' in r else ''):>13} |")
    o, nv = res.get(last.get("ours", "ours"), {}), res.get(last.get("naive", "naive"), {})
    if "tokens_per_s" in o and "tokens_per_s" in nv:
        report["ratios"] = {"tokens_per_s": o["tokens_per_s"] / nv["tokens_per_s"]}
        line = f"ours / naive (last round): tokens/s x{report['ratios']['tokens_per_s']:.2f}"
        if "peak_vram_gb" in o and "peak_vram_gb" in nv:
            report["ratios"]["peak_vram"] = o["peak_vram_gb"] / nv["peak_vram_gb"]
            line += f", peak VRAM x{report['ratios']['peak_vram']:.2f}"
        log(line)
    firsts = {n_: r["losses"][0] for n_, r in res.items() if r.get("losses")}
    if firsts:  # same LoRA init, RNG and rows: these should agree to bf16 precision
        log("first-step loss (same start for all): " + ", ".join(f"{n_} {v:.4f}" for n_, v in firsts.items()))
    ok = all("tokens_per_s" in r or r.get("error") == "OOM" for r in res.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
