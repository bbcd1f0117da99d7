#!/usr/bin/env python
"""CPU benchmark: a plain transformers Trainer + PEFT LoRA run vs qwen-sft's trainer, side by side.

    python bench/bench_train.py                              # default: 3-4 min on 2 quiet cores
    python bench/bench_train.py --ablations all --repeats 1  # plus each of our techniques turned off
    python bench/bench_train.py --family qwen3.5 --long-rows 0 --cutoff 512 --ablations ""  # tiny Qwen3.5

Not a test: it prints a table and writes results.json into the work directory (--workdir).

--family qwen3.5: the tiny Qwen3.5 stand-in instead (standins.build_tiny_qwen3_5: Qwen3.5-4B's layout and
real 248,320-row vocabulary at width 64, saved as the published ConditionalGeneration checkpoints are, with
Qwen3.5-4B's tokenizer and template); both trainers load its text-only causal LM and train LoRA on every
projection (lora_target_modules all-projections: attention, linear attention and MLP). Naive runs each padded
row through transformers' own Gated DeltaNet forward (right padding keeps rows exact); ours packs rows and
resets the recurrent state per example (layers/recurrent.py). The full [B, T, 248,320] logits of the naive run take
about 1 GB per 512 tokens of a micro-batch row: keep --cutoff and --long-rows small on a shared machine.

What is compared (same tiny random Qwen3-architecture model with the real 151,936-token vocab, same
encoded rows and label masks, same examples per optimizer step, same number of steps, same LoRA
(r16 alpha 32 dropout 0.05 on all 7 projections), same AdamW + lr schedule + grad clipping, same seed,
float32, gradient checkpointing on for both, as in the seed config). Data: generate_samples(--rows)
plus --long-rows multi-turn rows chained from 6-14 samples (a long tail up to ~1.5k tokens), shuffled,
trimmed to whole optimizer steps; by default exactly one epoch, so every approach trains on the same
rows and meets the same longest rows (peak memory is the worst micro-batch of the epoch).

  naive          transformers Trainer + peft get_peft_model; DataCollatorForSeq2Seq right padding to
                 the micro-batch max; the model's own forward with labels (full [B, T, vocab] logits,
                 ForCausalLMLoss normalized by num_items_in_batch across the accumulation steps);
                 random order (group_by_length off).
  ours           qwen_sft.train.train() with its defaults (padding-free micro-batches, trained-position
                 chunked CE, group_by_length off): the naive run's exact micro-batches, so "ours vs
                 naive" is also the loss-equality check.
  naive-grouped  naive, reading length-grouped micro-batches (what group_by_length does; the seed
                 config had it on). Default ablation: pairs with "ours-grouped" on identical batches.
  ours-grouped   ours with group_by_length=true (the seed config's setting).
  ours-pf, ours-chunk, ours-all  (--ablations all) ours with padding_free=false; with a full-logits
                 loss (CausalLMLoss swapped for a full-logits module inside the child process; src/ is
                 not edited); with both padding-free and chunked CE off.

Each run is its own fresh subprocess, so peak memory (ru_maxrss of the child) is per approach.
--repeats N runs every approach N times, interleaved; tokens/s is the best run (other people's load on
a shared machine only ever slows a run down), peak memory the largest.

Fairness notes (each one is a choice made so that only the compute path differs):
  - The naive Trainer reads exactly the micro-batches of qwen-sft's StepPlan (group_by_length=false for
    naive, =true for naive-grouped), listed in order and read with train_sampling_strategy="sequential".
    A seeded shuffle is what "random" sampling does anyway; this makes the per-step losses comparable.
  - The Trainer gets the same optimizer and scheduler objects as ours (torch AdamW, weight decay 0, our
    warmup+cosine schedule): HF's cosine schedule starts warmup at lr 0, ours at lr/(warmup+1), which
    would make the losses differ for a reason that has nothing to do with speed.
  - Tokens/s = real (non-pad) input tokens processed / seconds in the training loop, for both (Trainer:
    its train_runtime; ours: its train_runtime, which starts at the loop too). tok/CPU-s divides by the
    process's user+system CPU seconds inside the loop instead (a second view under a noisy machine).
  - Loss = mean over the last --loss-window optimizer steps of each step's loss per trained token.
    Trainer (transformers 5) divides each micro-batch's summed CE by num_items_in_batch (trained
    positions of the whole step, counted on labels[..., 1:]) and sums the micro-batches: per-step
    loss per trained token, the same definition as ours (logging_steps=1 for both). "run loss" is the
    token-weighted mean over the whole run.
  - No tensorboard / checkpoint writing in either loop (report_to none, no saves inside the timed loop).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()

ABLATIONS = {
    "naive-grouped": "naive, reading length-grouped micro-batches (like HF group_by_length; the seed config had it on)",
    "ours-pf": "ours, padding_free=false (right-padded micro-batches)",
    "ours-chunk": "ours, full-logits loss instead of trained-position chunked CE",
    "ours-grouped": "ours, group_by_length=true (naive-grouped's exact micro-batches)",
    "ours-all": "ours, padding-free and chunked CE off (should be close to naive)",
    "ours-nolive": "ours with the live run record (live.jsonl, written at every step here: logging_steps=1) off",
}


# ---------------------------------------------------------------- data


def build_rows(n_rows: int, n_long: int, seed: int) -> list:
    """generate_samples rows plus n_long long multi-turn rows (6-14 chained exchanges each)."""
    from qwen_sft.data.formats import parse_row
    from qwen_sft.samples import generate_samples

    convs = [parse_row(r, None) for r in generate_samples(n_rows, seed=seed)]
    rng = random.Random(seed + 1)
    pool = [parse_row(r, None) for r in generate_samples(n_long * 14, seed=seed + 1)]
    longs = []
    for _ in range(n_long):
        parts = rng.sample(pool, rng.randint(6, 14))
        msgs = [m for m in parts[0].messages]
        for p in parts[1:]:
            msgs += [m for m in p.messages if m["role"] != "system"]
        conv = parse_row({"messages": msgs}, None)
        longs.append(conv)
    out = convs + longs
    rng.shuffle(out)
    return out


def length_summary(lengths: list[int]) -> str:
    s = sorted(lengths)
    q = lambda p: s[min(len(s) - 1, int(p * len(s)))]  # noqa: E731
    return (f"{len(s)} rows, tokens min {s[0]} / p10 {q(0.1)} / p50 {q(0.5)} / p90 {q(0.9)} / max {s[-1]}, "
            f"mean {sum(s) / len(s):.0f}, total {sum(s)}")


# ---------------------------------------------------------------- children


def base_config(spec: dict, run_name: str, **over) -> dict:
    cfg = {
        "model_name_or_path": spec["model_dir"],
        "dataset": spec["data"],
        "bf16": False,  # float32 (CPU would pick it anyway)
        "lora_rank": 16,
        "lora_alpha": 32,
        "per_device_train_batch_size": spec["batch"],
        "gradient_accumulation_steps": spec["accum"],
        "max_steps": spec["steps"],
        "learning_rate": spec["lr"],
        "seed": spec["seed"],
        "cutoff_len": spec["cutoff"],
        "output_dir": spec["out"],
        "run_name": run_name,
        "logging_steps": 1,
        "save_steps": 10**9,
        "report_to": "none",
        "overwrite_output_dir": True,
    }
    cfg.update(over)
    return cfg


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def mark() -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process (user + system, all threads), peak RSS GB so far)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 2**20


def loop_window(begin, end) -> dict:
    return {
        "loop_wall_s": end[0] - begin[0],
        "loop_cpu_s": end[1] - begin[1],
        "rss_at_loop_start_gb": round(begin[2], 3),
    }


def child_ours(spec: dict, name: str) -> dict:
    import qwen_sft.train as qtrain
    from qwen_sft.config import build_config

    over = {}
    if name in ("ours-pf", "ours-all"):
        over["padding_free"] = False
    if name == "ours-grouped":
        over["group_by_length"] = True
    if name in ("ours-chunk", "ours-all"):
        from qwen_sft.loss import CausalLMLoss, full_logits_loss

        class FullLogitsLoss(CausalLMLoss):
            """The model's full [.., vocab] logits, then CE summed over trained targets."""

            def forward(self, input_ids, targets, position_ids=None, attention_mask=None):
                out = self.causal_lm()(input_ids=input_ids, position_ids=position_ids,
                                       attention_mask=attention_mask, use_cache=False)
                return full_logits_loss(out.logits, targets)

        qtrain.CausalLMLoss = FullLogitsLoss  # train.py looks the name up at call time
    if name == "ours-nolive":
        from qwen_sft import live

        live.LiveRecord.start = lambda self, *args: None  # never opened: every later call is a no-op
    # Time stamps around the loop: train() creates its progress bar right after starting its clock
    # and closes it right after the last step.
    marks = {}
    make_bar = qtrain._progress

    def progress(*args, **kw):
        bar = make_bar(*args, **kw)
        marks["begin"] = mark()
        close = bar.close

        def closing():
            marks.setdefault("end", mark())
            close()

        bar.close = closing
        return bar

    qtrain._progress = progress
    cfg = build_config(base_config(spec, name, **over), "bench")
    m = qtrain.train(cfg)
    history = json.loads((cfg.run_dir / "loss_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    return {"tokens": m["train_tokens"], "runtime_s": m["train_runtime"], "peak_gb": m["peak_memory_gb"],
            "step_losses": losses, "trained_tokens": m["train_trained_tokens"], "steps": m["train_steps"],
            "run_loss": m["train_loss"],
            **loop_window(marks["begin"], marks["end"])}


def child_naive(spec: dict, name: str = "naive") -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from qwen_sft.batching import StepPlan, num_targets
    from qwen_sft.config import build_config
    from qwen_sft.data.dataset import encode_all
    from qwen_sft.model import load_base_model, wrap_lora
    from qwen_sft.data.tokenizer import load_tokenizer
    from qwen_sft.train import make_scheduler

    # attention as a plain HF run gets it (qwen-sft's own default is sdpa_packed)
    cfg = build_config(base_config(spec, name, attn_implementation="sdpa"), "bench")
    grouped = name == "naive-grouped"
    # Same order of seeding / loading / LoRA init as qwen_sft.train (so the LoRA A matrices match).
    torch.manual_seed(cfg.seed)
    tok = load_tokenizer(cfg.model_name_or_path)
    rows, _ = encode_all(cfg, tok)
    model = wrap_lora(load_base_model(cfg, torch.device("cpu")), cfg)  # get_peft_model + grad checkpointing

    # The exact micro-batches qwen-sft plans with group_by_length=false (naive-grouped: =true), read in order.
    plan = StepPlan([len(r.input_ids) for r in rows], cfg.per_device_train_batch_size,
                    cfg.gradient_accumulation_steps, cfg.seed, grouped, cfg.num_train_epochs, cfg.max_steps)
    order = []
    for s in range(plan.total_steps):
        micro = plan.step_batches(s)
        assert len(micro) == cfg.gradient_accumulation_steps and all(
            len(b) == cfg.per_device_train_batch_size for b in micro
        ), "rows must be a multiple of batch x accum (the parent trims them)"
        order += [i for b in micro for i in b]
    dataset = [{"input_ids": rows[i].input_ids.tolist(), "attention_mask": [1] * len(rows[i].input_ids),
                "labels": rows[i].labels.tolist()} for i in order]
    tokens = sum(len(rows[i].input_ids) for i in order)
    b = cfg.per_device_train_batch_size
    padded = sum(b * max(len(rows[i].input_ids) for i in order[k:k + b]) for k in range(0, len(order), b))
    trained = sum(num_targets(rows[i]) for i in order)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, plan.total_steps)

    losses, marks = [], {}

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            marks["begin"] = mark()

        def on_train_end(self, args, state, control, **kw):
            marks["end"] = mark()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    args = TrainingArguments(
        output_dir=str(Path(spec["out"]) / name),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        max_grad_norm=cfg.max_grad_norm,
        train_sampling_strategy="sequential",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
        use_cpu=True,
        bf16=False,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
                      optimizers=(optimizer, scheduler), callbacks=[Record()])
    out = trainer.train()
    peak = peak_rss_gb()
    per_step = b * cfg.gradient_accumulation_steps
    step_trained = [sum(num_targets(rows[i]) for i in order[k:k + per_step]) for k in range(0, len(order), per_step)]
    run_loss = sum(x * n for x, n in zip(losses, step_trained)) / sum(step_trained)
    return {
        "tokens": tokens,
        "runtime_s": out.metrics["train_runtime"],
        "peak_gb": round(peak, 3),
        "step_losses": losses,
        "trained_tokens": trained,
        "steps": trainer.state.global_step,
        "run_loss": run_loss,
        "padded_tokens": padded,
        "model_accepts_loss_kwargs": trainer.model_accepts_loss_kwargs,
        **loop_window(marks["begin"], marks["end"]),
    }


def run_child(name: str, spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    result = child_naive(spec, name) if name.startswith("naive") else child_ours(spec, name)
    result["peak_gb_self"] = round(peak_rss_gb(), 3)
    Path(spec["out"], f"{name}.json").write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------- parent


def fmt_row(cols, widths):
    return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cols, widths)) + " |"


def run_one(name: str, spec: dict, spec_path: Path, work: Path, loss_window: int, rep: int) -> dict | None:
    t = time.perf_counter()
    load = os.getloadavg()[0]
    log = work / f"{name}.{rep}.log"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, str(HERE), "--child", name, "--spec", str(spec_path)],
                              stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        print(f"{name}: FAILED (exit {proc.returncode}); last lines of {log}:", flush=True)
        print("".join(open(log).readlines()[-15:]), flush=True)
        return None
    r = json.loads(Path(spec["out"], f"{name}.json").read_text())
    r["tok_s"] = r["tokens"] / r["runtime_s"]
    r["tok_cpu_s"] = r["tokens"] / r["loop_cpu_s"]
    w = r["step_losses"][-loss_window:]
    r["final_loss"] = sum(w) / len(w)
    r["wall_s"] = time.perf_counter() - t
    r["load_before"] = load
    r["load_after"] = os.getloadavg()[0]
    print(f"{name} (run {rep + 1}): {r['tok_s']:.0f} tok/s, {r['tok_cpu_s']:.0f} tok/CPU-s, peak {r['peak_gb']:.3f} "
          "GB, "
          f"final loss {r['final_loss']:.4f} ({r['steps']} steps, {r['tokens']} tokens, {r['trained_tokens']} trained, "
          f"loop {r['runtime_s']:.1f}s wall / {r['loop_cpu_s']:.1f}s CPU; peak RSS before the loop "
          f"{r['rss_at_loop_start_gb']:.3f} GB; subprocess {r['wall_s']:.0f}s; "
          f"1-min load avg {load:.2f} -> {r['load_after']:.2f})", flush=True)
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=0,
                    help="optimizer steps per approach (default 0: exactly one epoch, so every approach trains on "
                         "every row once and meets the same longest rows)")
    ap.add_argument("--batch", type=int, default=2, help="per-device micro-batch size B (seed default 2)")
    ap.add_argument("--accum", type=int, default=4, help="gradient accumulation steps G (seed default 8; 4 keeps the "
                                                         "run short)")
    ap.add_argument("--rows", type=int, default=64, help="generate_samples rows (plus --long-rows)")
    ap.add_argument("--long-rows", type=int, default=None, help="extra long multi-turn rows (default rows/8)")
    ap.add_argument("--lr", type=float, default=1e-3,
                    help="learning rate for both (higher than the 4B default 5e-5 so the loss visibly moves "
                         "and the loss-equality check means something)")
    ap.add_argument("--cutoff", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every child")
    ap.add_argument("--loss-window", type=int, default=4, help="final loss = mean of the last N steps' losses")
    ap.add_argument("--repeats", type=int, default=2,
                    help="run every approach N times, interleaved; tokens/s = the best run (others' load is noise)")
    ap.add_argument("--ablations", default="naive-grouped,ours-grouped",
                    help=f"comma list of {', '.join(ABLATIONS)}, 'all', or '' (default: ours-grouped and "
                         "naive-grouped, a second pair on identical micro-batches)")
    ap.add_argument("--only", default="", help="comma list: run only these approaches (e.g. naive,ours)")
    ap.add_argument("--workdir", default=None, help="where the model, data and results go (default: a temp dir)")
    ap.add_argument("--family", default="qwen3", choices=["qwen3", "qwen3.5"],
                    help="the tiny stand-in trained: Qwen3 (default) or Qwen3.5 (Gated DeltaNet layers, vision tower)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        run_child(a.child, Path(a.spec))
        return 0

    ablations = list(ABLATIONS) if a.ablations == "all" else [x for x in a.ablations.split(",") if x]
    names = ["naive", "ours", *ablations]
    if a.only:
        names = [x for x in a.only.split(",") if x]
    for x in names:
        if x not in ("naive", "ours", *ABLATIONS):
            ap.error(f"unknown approach {x!r}; choose from naive, ours, {', '.join(ABLATIONS)}")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="qwen-sft-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    from transformers import AutoTokenizer

    from qwen_sft.assets import qwen3_5_checkpoint_dir, qwen3_tokenizer_dir
    from qwen_sft.data.encode import EncodeOptions, encode
    from qwen_sft.data.formats import write_jsonl
    from qwen_sft.model import build_tiny_model
    from qwen_sft.standins import build_tiny_qwen3_5

    t0 = time.perf_counter()
    if a.family == "qwen3.5":
        model_dir = build_tiny_qwen3_5(work / "tiny-qwen3.5", seed=0)
        tok_dir = qwen3_5_checkpoint_dir("Qwen3.5-4B")
    else:
        model_dir = build_tiny_model(work / "tiny-qwen3", seed=0)
        tok_dir = qwen3_tokenizer_dir()
    convs = build_rows(a.rows, a.rows // 8 if a.long_rows is None else a.long_rows, seed=0)
    per_step = a.batch * a.accum
    keep = len(convs) // per_step * per_step
    if keep == 0:
        ap.error(f"--rows too small for batch x accum = {per_step}")
    convs = convs[:keep]  # full micro-batches and steps only, so both trainers see identical steps
    if a.steps <= 0:
        a.steps = len(convs) // per_step
    data = work / "data" / "bench.jsonl"
    write_jsonl(convs, data)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    enc = [s for c in convs for e in [encode(c, tok, EncodeOptions(cutoff_len=a.cutoff))] for s in [e] + e.more]
    lengths = [len(e.input_ids) for e in enc]
    trained_share = sum(e.num_trained for e in enc) / sum(lengths)
    spec = {"model_dir": str(model_dir), "data": str(data), "batch": a.batch, "accum": a.accum, "steps": a.steps,
            "lr": a.lr, "seed": a.seed, "cutoff": a.cutoff, "out": str(work / "runs"), "threads": a.threads}
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    Path(spec["out"]).mkdir(exist_ok=True)
    print(f"model: tiny {a.family} stand-in ({model_dir.name}); data: {length_summary(lengths)}; trained-token share "
          f"{trained_share:.1%}", flush=True)
    print(f"run: {a.steps} steps x {a.batch} rows x {a.accum} accumulation = {a.steps * per_step} rows "
          f"({a.steps * per_step / len(convs):.2f} epochs), lr {a.lr}, seed {a.seed}, {a.threads} threads, "
          f"{a.repeats} repeat(s), workdir {work} (setup {time.perf_counter() - t0:.0f}s)", flush=True)

    runs: dict[str, list] = {n: [] for n in names}
    for rep in range(a.repeats):
        for name in names:
            r = run_one(name, spec, spec_path, work, a.loss_window, rep)
            if r is not None:
                runs[name].append(r)

    # Best-of-N throughput (other people's load only ever slows a run down); the largest peak memory.
    results = {}
    for name, rs in runs.items():
        if rs:
            best = max(rs, key=lambda r: r["tok_s"])
            results[name] = {**best, "peak_gb": max(r["peak_gb"] for r in rs),
                             "tok_cpu_s": max(r["tok_cpu_s"] for r in rs), "runs": len(rs)}
        else:
            results[name] = None
    base = results.get("naive")
    widths = [13, 8, 9, 11, 10, 8, 7, 10, 13]
    print()
    if base:
        print(f"naive micro-batches: {base['padded_tokens']} padded positions for {base['tokens']} real tokens "
              f"({base['padded_tokens'] / base['tokens'] - 1:.0%} padding)")
    print(
        fmt_row(
            [
                "approach",
                "tokens/s",
                "tok/CPU-s",
                "peak mem GB",
                "final loss",
                "run loss",
                "tok/s x",
                "peak mem x",
                "final - naive",
            ],
            widths,
        )
    )
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for name in names:
        r = results[name]
        if r is None:
            print(fmt_row([name, "failed"] + [""] * 7, widths))
            continue
        ratios = ([f"{r['tok_s'] / base['tok_s']:.2f}", f"{r['peak_gb'] / base['peak_gb']:.2f}",
                   f"{r['final_loss'] - base['final_loss']:+.4f}"] if base else ["", "", ""])
        print(fmt_row([name, f"{r['tok_s']:.0f}", f"{r['tok_cpu_s']:.0f}", f"{r['peak_gb']:.3f}",
                       f"{r['final_loss']:.4f}", f"{r['run_loss']:.4f}", *ratios], widths))
    print()
    for name in names:
        if name in ABLATIONS:
            print(f"  {name}: {ABLATIONS[name]}")
    if base and results.get("ours"):
        o = results["ours"]
        print(f"\nours / naive: tokens/s x{o['tok_s'] / base['tok_s']:.2f} (target >= 4), peak memory "
              f"x{o['peak_gb'] / base['peak_gb']:.2f} (target <= 0.5), final loss "
              f"{o['final_loss'] - base['final_loss']:+.4f} "
              f"(target |d| <= 0.02); whole-run loss per trained token "
              f"{o['run_loss']:.4f} vs {base['run_loss']:.4f} ({o['run_loss'] - base['run_loss']:+.4f})")
    for ours_name, naive_name in (("ours", "naive"), ("ours-grouped", "naive-grouped")):
        g, n = results.get(ours_name), results.get(naive_name)
        if g and n:
            diffs = [abs(x - y) for x, y in zip(g["step_losses"], n["step_losses"])]
            print(f"same micro-batches ({ours_name} vs {naive_name}): tokens/s x{g['tok_s'] / n['tok_s']:.2f}, peak "
                  "memory "
                  f"x{g['peak_gb'] / n['peak_gb']:.2f}, final loss {g['final_loss'] - n['final_loss']:+.4f}, max "
                  "|per-step "
                  f"loss difference| {max(diffs):.4f} over {len(diffs)} steps, trained tokens {g['trained_tokens']} vs "
                  f"{n['trained_tokens']}")
    on, off = results.get("ours"), results.get("ours-nolive")
    if on and off:
        print(f"live record on / off: tokens/s x{on['tok_s'] / off['tok_s']:.3f} ({on['tok_s']:.0f} vs "
              f"{off['tok_s']:.0f}), "
              f"final loss {on['final_loss'] - off['final_loss']:+.4f}")
    summary = {"args": vars(a), "data": length_summary(lengths), "trained_share": trained_share,
               "python": platform.python_version(), "results": results, "runs": runs}
    (work / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"\nresults: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
