"""The plan of a run: peak GPU memory with what it is made of, time, and the changes that would make it fit.

Memory comes from memory.measure (the trainer's own step on stand-in tensors); a constant margin for what the
CUDA allocator holds beyond live tensors (cuBLAS workspaces, block rounding beyond 512 bytes), measured against the
H200 (CALIBRATION); several GPUs are modelled from the one-GPU figures (per_gpu). Time: the FLOPs of a token of this
run times the H200's measured efficiency, scaled by the card's published dense bf16 peak (timing).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time

from .. import config as config_mod
from . import cards
from .data import DataFacts, steps_and_tokens, worst_micro

GIB = 2**30
# What the simulation does not see on a CUDA card (cuBLAS / cuBLASLt workspaces, the allocator's rounding of large
# blocks): the mean of (measured - simulated) over the four approaches measured on the H200 (2026-11-27), simulated
# with the code those runs had (bench/memory_model.py --unfused --then-mask --compare, 2026-12-06: +0.119 to +0.120;
# bench/results/2026-12-06-plan-calibration.json; docs/benchmarks.md "Accuracy of qwen-sft plan"). ERROR: the
# tolerance train's gate allows; the fit's own residual is 0.001 GiB, but on one card and one model, so the looser
# residual of the first fit (0.035) is kept until a second card or model adds rows.
CALIBRATION = {"margin_gib": 0.119, "error_gib": 0.035,
               "source": "H200, 2026-11-27: 4 approaches of bench/gpu_check.py against bench/memory_model.py "
                         "--unfused --then-mask (docs/benchmarks.md)"}
# Time: model FLOP/s per published dense bf16 FLOP/s, measured on the H200 (qwen-sft's defaults of 2026-11-27 without
# liger, Qwen3-4B r64, 2 x 3072-4096 tokens: 9,850 tokens/s, 278.5 TFLOP/s by bench/gpu_check.py's count).
H200_TOKENS_PER_S, H200_MODEL_TFLOPS = 9850, 278.5
EFFICIENCY = H200_MODEL_TFLOPS / cards.BY_KEY["h200"].bf16_tflops
# Keys that change nothing in a step's memory (the cache of simulations ignores them).
NOT_MEMORY = {"model_name_or_path", "trust_remote_code", "dataset", "data_format", "skip_invalid", "enable_thinking",
              "train_on", "val_size", "max_dropped_share", "max_truncated_share", "max_duplicate_share",
              "max_no_reasoning_share", "preprocessing_num_workers", "data_cache_dir", "group_by_length",
              "dataloader_num_workers", "num_train_epochs", "max_steps", "learning_rate", "warmup_ratio",
              "lr_scheduler_type", "seed", "output_dir", "run_name", "logging_steps", "eval_steps",
              "eval_sample_generations", "save_steps", "save_total_limit", "report_to", "resume_from_checkpoint",
              "force_resume", "overwrite_output_dir", "plan_check", "cutoff_len", "per_device_train_batch_size",
              "lora_alpha", "weight_decay"}
_CACHE: collections.OrderedDict = collections.OrderedDict()


def measure_cached(arch, cfg, micro, cuda: bool):
    """memory.measure, remembered for the process (the UI asks again as fields change)."""
    from .memory import measure

    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_MEMORY}
    settings["accumulating"] = cfg.gradient_accumulation_steps > 1
    settings.pop("gradient_accumulation_steps", None)
    layout = tuple((k, tuple(v.shape), tuple(v.flatten().tolist()) if k == "position_ids" else int((v != -100).sum())
                    if k == "targets" else None) for k, v in sorted(micro.batch.items()) if k != "row_ids")
    key = (arch.family, repr(sorted(arch.config.items())), repr(sorted(settings.items())), layout, cuda)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    m = measure(arch, cfg, micro.batch, cuda)
    _CACHE[key] = m
    if len(_CACHE) > 64:
        _CACHE.popitem(last=False)
    return m


# ---------------------------------------------------------------- memory


def describe(segment) -> str:
    micro, direction, role = segment
    if role[0] == "opt":
        return "the optimizer step"
    what = {"head": "the loss (lm_head and cross-entropy chunks)", "embed": "the embedding",
            "first": "the first layer", "low": "the second layer", "high": "the second-last layer",
            "last": "the last layer", "mid": "a middle layer"}[role[0]]
    if len(role) > 1 and role[1]:
        what += f" (position {role[1] + 1} of the layer pattern)"
    return f"{'backward' if direction == 'bwd' else 'forward'} of {what}"


def memory_figures(m, cuda: bool) -> dict:
    """Peak (GiB) and its breakdown for one GPU."""
    seg = m.peak_segment()
    peak = m.peaks[seg]
    layer_tr = [p.parts["transient"] for s, p in m.peaks.items() if s[2][0] in ("first", "low", "high", "last", "mid")]
    loss_tr = [p.parts["transient"] for s, p in m.peaks.items() if s[2][0] == "head"]
    margin = CALIBRATION["margin_gib"] if cuda else 0.0
    parts = peak.parts
    breakdown = {
        "frozen_weights_gib": parts["frozen"] / GIB,
        "lora_weights_gib": parts["lora"] / GIB,
        "lora_grads_gib": parts["grads"] / GIB,
        "optimizer_state_gib": parts["optimizer"] / GIB,
        "saved_activations_gib": parts["saved"] / GIB,
        "transient_gib": parts["transient"] / GIB,
        "cuda_workspace_margin_gib": margin,
        "worst_layer_transient_gib": max(layer_tr, default=0) / GIB,
        "loss_chunk_transient_gib": max(loss_tr, default=0) / GIB,
    }
    return {"peak_gib": peak.bytes / GIB + margin, "peak_at": describe(seg), "breakdown": breakdown,
            "error_gib": CALIBRATION["error_gib"] if cuda else 0.0}


def per_gpu(fig: dict, m, cfg, gpus: int) -> dict:
    """The one-process figures under several processes (modelled, not simulated): DDP keeps a bucket copy of the
    LoRA gradients; FSDP / ZeRO-3 hold 1/N of the weights, gradients and optimizer state, plus two layers'
    frozen weights gathered at a time (the one running and the one prefetched); ZeRO-2 shards gradients and
    optimizer state."""
    if gpus <= 1:
        return {"peak_gib": fig["peak_gib"], "how": "one process"}
    b = fig["breakdown"]
    strategy = cfg.distributed_strategy
    if strategy == "ddp":
        return {"peak_gib": fig["peak_gib"] + m.lora / GIB, "how": "DDP: + its gradient buckets (a copy of the LoRA "
                "gradients)"}
    state = b["lora_grads_gib"] + b["optimizer_state_gib"]
    if strategy == "deepspeed_zero2":
        return {"peak_gib": fig["peak_gib"] - state * (1 - 1 / gpus), "how": f"ZeRO-2: gradients and optimizer "
                f"state split over {gpus} GPUs"}
    layer = m.counts.get("layer_frozen", 0) / max(m.layers, 1) / GIB
    sharded = b["frozen_weights_gib"] + b["lora_weights_gib"] + state
    return {"peak_gib": fig["peak_gib"] - sharded * (1 - 1 / gpus) + 2 * layer,
            "how": f"{strategy}: weights, gradients and optimizer state split over {gpus} GPUs, two layers gathered"}


# ---------------------------------------------------------------- time


def flops_per_token(m, cfg, arch, facts: DataFacts, micro) -> float:
    """Model FLOPs per input token, counted as bench/gpu_check.py counts them (recompute included): decoder
    matrices 6N (4N without checkpointing), LoRA 8N (6N), lm_head 4 x vocab x hidden per trained token, causal
    attention over each row's own context."""
    ckpt = cfg.gradient_checkpointing
    share = facts.trained_share if facts.trained_share is not None else micro.trained / max(micro.tokens, 1)
    c = arch.config
    attn_layers = sum(1 for t in c.get("layer_types") or ["full_attention"] * arch.layers if t == "full_attention")
    d_attn = c["num_attention_heads"] * (c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"])
    if facts.mean_sq_len is not None:
        context = (facts.mean_sq_len + 1) / 2  # sum over rows of L(L+1)/2, per token
    else:
        context = (min(cfg.cutoff_len, facts.max_len or cfg.cutoff_len) + 1) / 2
    return ((6 if ckpt else 4) * m.counts["decoder"] + (8 if ckpt else 6) * m.counts["lora"]
            + 4 * m.counts["head"] * share + (16 if ckpt else 12) * attn_layers * d_attn * context)


def timing(m, cfg, arch, facts: DataFacts, micro, card, gpus: int) -> dict:
    out = {
        "tokens_per_s": None,
        "tokens_per_s_source": None,
        "flops_per_token": flops_per_token(m, cfg, arch, facts, micro),
    }
    if card is None or card.bf16_tflops is None:
        why = ("no card named (--gpu)" if card is None else card.note if card.key in cards.BY_KEY else
               "the card's bf16 peak is not known (name the card with --gpu)")
        out["tokens_per_s_source"] = f"no time estimate: {why}"
        return out
    rate = EFFICIENCY * card.bf16_tflops * 1e12 / out["flops_per_token"] * gpus
    out["tokens_per_s"] = rate
    out["tokens_per_s_source"] = (
        f"estimate: {EFFICIENCY:.1%} of the card's published dense bf16 peak ({card.bf16_tflops:g} TFLOP/s"
        f"{f' x {gpus} GPUs, ideal scaling' if gpus > 1 else ''}), the efficiency qwen-sft measured on an H200 "
        f"(Qwen3-4B r64, 2 x 3072-4096 tokens: {H200_TOKENS_PER_S} tokens/s, its defaults of 2026-11-27 without "
        "liger); measured error on other cards and shapes: unknown"
        + ("; QLoRA's dequantization not counted" if cfg.quantization_bit else "")
        + ("; offload's PCIe copies not counted" if cfg.offload_activations else ""))
    return out


# ---------------------------------------------------------------- the plan


def _fits(peak: float, card) -> bool | None:
    return None if card is None else peak - CALIBRATION["error_gib"] <= card.usable_gib


def evaluate(arch, cfg, facts: DataFacts, card, gpus: int, cuda: bool) -> dict:
    """Memory (per GPU) of cfg on this data."""
    micro = worst_micro(cfg, facts)
    m = measure_cached(arch, cfg, micro, cuda)
    fig = memory_figures(m, cuda)
    gpu = per_gpu(fig, m, cfg, gpus)
    return {"micro": micro, "measured": m, "figures": fig, "per_gpu": gpu, "fits": _fits(gpu["peak_gib"], card)}


def plan(cfg, card=None, gpus: int = 1, facts: DataFacts | None = None, cuda: bool = True, suggest: bool = True,
         budget_s: float = 60.0, log=None) -> dict:
    """The plan of cfg as one JSON-able object (the CLI's --json, the UI's /api/plan)."""
    from .arch import resolve
    from .data import lookup

    started = time.perf_counter()
    arch = resolve(cfg.model_name_or_path)
    facts = facts if facts is not None else lookup(cfg, log)
    ev = evaluate(arch, cfg, facts, card, gpus, cuda)
    m, micro, fig = ev["measured"], ev["micro"], ev["figures"]
    t = timing(m, cfg, arch, facts, micro, card, gpus)
    run = steps_and_tokens(cfg, facts, gpus)
    wall = run["tokens"] / t["tokens_per_s"] if run["tokens"] and t["tokens_per_s"] else None
    out = {
        "model": {
            "name": cfg.model_name_or_path,
            "family": arch.family,
            "layers": arch.layers,
            "config_source": arch.source,
        },
        "card": card.to_dict() if card is not None else None,
        "gpus": gpus,
        "strategy": cfg.distributed_strategy if gpus > 1 else None,
        "device": "cuda" if cuda else "cpu",
        "micro_batch": {
            "rows": micro.rows,
            "tokens": micro.tokens,
            "trained_tokens": micro.trained,
            "what": micro.what,
        },
        "peak_gib": ev["per_gpu"]["peak_gib"],
        "peak_one_gpu_gib": fig["peak_gib"],
        "per_gpu_how": ev["per_gpu"]["how"],
        "peak_at": fig["peak_at"],
        "error_gib": fig["error_gib"],
        "breakdown": fig["breakdown"],
        "fits": ev["fits"],
        "tokens_per_s": t["tokens_per_s"],
        "tokens_per_s_source": t["tokens_per_s_source"],
        "flops_per_token": t["flops_per_token"],
        "steps": run["steps"],
        "steps_per_epoch": run["steps_per_epoch"],
        "train_tokens": run["tokens"],
        "wall_s": wall,
        "data": facts.to_dict(),
        "suggestions": [],
        "notes": notes(cfg, arch, cuda),
        "method": METHOD,
    }
    if suggest and ev["fits"] is False:
        out["suggestions"] = suggestions(arch, cfg, facts, card, gpus, cuda, started + budget_s)
    out["seconds"] = time.perf_counter() - started
    return out


METHOD = ("the trainer's own training step (train.train_step: model, LoRA, loss, AdamW) run on stand-in tensors on "
          "the CPU, counting live bytes; 2 and 3 repeats of the layer pattern simulated and extrapolated")


def notes(cfg, arch, cuda: bool) -> list[str]:
    out = []
    if cuda and cfg.liger_kernel is not False:
        out.append("liger-kernel (Triton) is not simulated; where it runs (liger_kernel auto with liger installed) "
                   "the peak is lower (-0.37 GiB measured on the H200 against the defaults of then)")
    if cuda and cfg.attn_implementation in ("auto", "flash_attention_2"):
        out.append("attention simulated as flash / cuDNN SDPA keeps it (sdpa_packed; flash_attention_2 keeps the same)")
    if arch.family == "qwen3_5":
        out.append("Qwen3.5's Gated DeltaNet layers simulated as flash-linear-attention's chunk kernel keeps them "
                   "(not measured on a GPU)")
    if cfg.quantization_bit:
        out.append("QLoRA: bitsandbytes' 4-bit Linear stood in (packed weights, a bf16 weight dequantized per "
                   "product; peft's prepare_model_for_kbit_training casts the other weights to float32); not "
                   "measured on a GPU")
    return out


# ---------------------------------------------------------------- what would make it fit


def candidates(cfg, cuda: bool):
    """(kind, {key: value}, why) in the order the trainer names them: the first that fits is the one to take."""
    b, acc = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    n = b // 2
    while n >= 1:
        yield (
            "micro-batch",
            {"per_device_train_batch_size": n, "gradient_accumulation_steps": math.ceil(b * acc / n)},
            "the same rows per optimizer step",
        )
        n //= 2
    if not cfg.gradient_checkpointing:
        yield "checkpointing", {"gradient_checkpointing": True}, "about 1/3 more compute"
    if cfg.gradient_checkpointing and not cfg.offload_activations:
        yield "offload", {"offload_activations": True}, "a PCIe copy of each layer's input, each way, per step"
    if cuda and not cfg.quantization_bit:
        yield "qlora", {"quantization_bit": 4}, "4-bit base weights (QLoRA): slower, slightly different results"
    r = cfg.lora_rank // 2
    while r >= 8:
        yield "rank", {"lora_rank": r, "lora_alpha": cfg.lora_alpha * r / cfg.lora_rank}, "a smaller adapter"
        r //= 2
    c = cfg.cutoff_len // 2
    while c >= 512:
        yield "cutoff", {"cutoff_len": c}, "longer rows are cut"
        c //= 2


def suggestions(arch, cfg, facts: DataFacts, card, gpus: int, cuda: bool, deadline: float) -> list[dict]:
    """Per kind of change, the mildest value that fits (or the strongest tried), each with its own peak; then more
    GPUs with a sharded strategy; then everything at once when nothing alone fits."""
    out, done = [], set()
    for kind, change, why in candidates(cfg, cuda):
        if kind in done:
            continue
        if time.perf_counter() > deadline:
            out.append({"kind": kind, "change": change, "why": why, "peak_gib": None, "fits": None,
                        "note": "not evaluated: the plan's time budget ran out"})
            done.add(kind)
            continue
        try:
            new = dataclasses.replace(cfg, **change).validate()
        except config_mod.ConfigError:
            continue
        ev = evaluate(arch, new, facts, card, gpus, cuda)
        entry = {"kind": kind, "change": change, "why": why, "peak_gib": ev["per_gpu"]["peak_gib"], "fits": ev["fits"]}
        if ev["fits"]:
            done.add(kind)
        out = [e for e in out if e["kind"] != kind] + [entry]
    base = evaluate(arch, cfg, facts, card, 1, cuda)
    strategy = cfg.distributed_strategy if cfg.distributed_strategy in config_mod.SHARDED_STRATEGIES else "fsdp"
    for n in (2, 4, 8):
        if n <= gpus:
            continue
        sharded = dataclasses.replace(cfg, distributed_strategy=strategy)
        gpu = per_gpu(base["figures"], base["measured"], sharded, n)
        fits = _fits(gpu["peak_gib"], card)
        out.append({"kind": "gpus", "change": {"distributed_strategy": strategy}, "gpus": n,
                    "why": f"qwen-sft train --nproc {n}; modelled, not simulated", "peak_gib": gpu["peak_gib"],
                    "fits": fits})
        if fits:
            break
    if not any(e["fits"] for e in out):
        change = {}
        for kind, c, _ in candidates(cfg, cuda):
            if kind in ("micro-batch", "checkpointing", "offload", "qlora"):
                change.update(c)
        if change:
            new = dataclasses.replace(cfg, **change).validate()
            ev = evaluate(arch, new, facts, card, gpus, cuda)
            out.append({"kind": "all", "change": change, "why": "every change that keeps the model and data",
                        "peak_gib": ev["per_gpu"]["peak_gib"], "fits": ev["fits"]})
    return sorted(out, key=lambda e: not e["fits"])  # the ones that fit first, each group in the trainer's order
