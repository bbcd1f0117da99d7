"""`qwen-sft demo`: the whole pipeline, offline, on a tiny stand-in of a model family (families.py).

tiny random Qwen3 or Qwen3.5 (real tokenizer + chat template) -> sample data -> LoRA training -> merge with
validation -> greedy chat, before and after. Runs in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import UserError

BANNER = """\
NOTE: this demo uses a TINY, RANDOMLY INITIALISED stand-in with the Qwen3 architecture and the real
Qwen3 tokenizer and chat template (about 10 M parameters, almost all of them the 151,936-token
embedding). It shows the pipeline works end to end; it is not a useful model. The same commands
run on Qwen3-4B by setting `model_name_or_path: Qwen/Qwen3-4B` in the config."""
BANNER_QWEN3_5 = """\
NOTE: this demo uses a TINY, RANDOMLY INITIALISED stand-in with the Qwen3.5 architecture (3 Gated DeltaNet
layers and 1 full-attention layer, saved like the published checkpoints with a vision tower and an MTP head)
and the real Qwen3.5 tokenizer and chat template (Qwen3.5-4B's; about 16 M parameters, almost all of them the
248,320-row embedding). It shows the pipeline works end to end; it is not a useful model. The same commands
run on Qwen3.5-4B by setting `model_name_or_path: Qwen/Qwen3.5-4B` in the config."""


# Without --steps the demo trains until the loss is memorised, not for a step count fitted to one CPU and release
# (80 steps left Thinking-2507's longer replies at 5-6 of 8 answers): rounds of ROUND_STEPS, each resuming the last
# one's checkpoint (so the whole is one run, exactly as if it had been asked for at once), until the loss logged
# over the last logging window is at most LOSS_TARGET, or MAX_STEPS.
LOSS_TARGET = 0.02  # mean cross-entropy per trained token: every token's probability ~0.98 on average, a margin
ROUND_STEPS = 40
MAX_STEPS = 400


def demo_config(workdir: Path, model_dir: Path, data: Path, steps: int, resume: bool = False) -> dict:
    """The demo's training config for a run of `steps` steps; resume: go on from the run's last checkpoint."""
    return {
        "model_name_or_path": str(model_dir),
        "dataset": str(data),
        "lora_rank": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "learning_rate": 5e-3,  # high: 8 rows to memorise in a minute
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "max_steps": steps,
        "warmup_ratio": 0.0,
        "lr_scheduler_type": "constant",
        "bf16": False,
        "gradient_checkpointing": False,
        "cutoff_len": 256,
        "output_dir": str(workdir / "training"),
        "run_name": "demo",
        "logging_steps": 10,
        "save_steps": steps,
        "overwrite_output_dir": not resume,
        "resume_from_checkpoint": "auto" if resume else None,
    }


def train_demo(workdir: Path, model_dir: Path, data: Path, steps: int | None) -> tuple[dict, list[float], object]:
    """Train the demo's adapter: `steps` steps, or rounds until LOSS_TARGET (module constants). Returns the last
    round's metrics, the logged losses of the whole run and its config."""
    from .config import build_config
    from .train import train

    done = 0
    while True:
        total = steps if steps else min(done + ROUND_STEPS, MAX_STEPS)
        cfg = build_config(demo_config(workdir, model_dir, data, total, resume=done > 0), "demo")
        metrics = train(cfg)
        history = json.loads((cfg.run_dir / "loss_history.json").read_text())
        losses = [h["loss"] for h in history if "loss" in h]
        done = total
        if steps or losses[-1] <= LOSS_TARGET or done >= MAX_STEPS:
            return metrics, losses, cfg
        print(f"step {done}: loss {losses[-1]:.4f} > {LOSS_TARGET}: training on", flush=True)


def greedy_answers(model, tokenizer, questions: list[str], thinking: bool, max_new_tokens: int = 32,
                   raw: bool = False) -> list[str]:
    """Greedy replies' answers (after any think block); raw: the whole reply with special tokens, which a random
    model mostly emits."""
    from .evaluation.metrics import split_reasoning
    from .generate import generate_reply

    replies = [generate_reply(model, tokenizer, [{"role": "user", "content": q}], max_new_tokens, thinking, greedy=True)
               for q in questions]
    return [tokenizer.decode(r.token_ids) if raw else split_reasoning(r.text)[1] for r in replies]


TEMPLATES = ("hybrid", "instruct-2507", "thinking-2507", "qwen3.5")


def run_demo(workdir: Path, steps: int | None = None, template: str = "hybrid") -> int:
    """template: the chat template (and config / sampling defaults) of the checkpoint family the stand-in plays:
    hybrid Qwen3, Qwen3-Instruct-2507, Qwen3-Thinking-2507 (which trains rows with short reasoning), or qwen3.5
    (a Qwen3.5-4B-shaped checkpoint: vision tower, MTP head, Gated DeltaNet layers)."""
    from transformers import AutoModelForCausalLM

    from .data.formats import parse_row, write_jsonl
    from .samples import DEMO_PAIRS, demo_rows
    from .data.template import served_thinking
    from .merge import merge, validate
    from .model import build_tiny_model
    from .data.tokenizer import load_tokenizer
    from .standins import build_tiny_qwen3_5

    if template not in TEMPLATES:
        raise UserError(f"--template {template}: choose one of {', '.join(TEMPLATES)}")
    qwen3_5 = template == "qwen3.5"
    banner = BANNER_QWEN3_5 if qwen3_5 else BANNER
    print(banner, "\n", flush=True)
    # Re-running the demo replaces its own earlier output, and never a directory it did not make.
    marker = workdir / ".qwen-sft-demo"
    if workdir.exists() and any(workdir.iterdir()):
        if not marker.exists():
            raise UserError(f"{workdir}: exists and was not made by the demo; pass another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    marker.touch()

    if qwen3_5:
        print("[1/5] building the tiny Qwen3.5 stand-in (Qwen3.5-4B's chat template)", flush=True)
        model_dir = build_tiny_qwen3_5(workdir / "tiny-qwen3.5", seed=0, checkpoint="Qwen3.5-4B")
    else:
        print(f"[1/5] building the tiny Qwen3 stand-in ({template} chat template)", flush=True)
        model_dir = build_tiny_model(workdir / "tiny-qwen3", seed=0, variant=template)
    tokenizer = load_tokenizer(str(model_dir))
    thinking = served_thinking(tokenizer, {})  # enable_thinking: auto, as the training config below
    questions = [q for q, _ in DEMO_PAIRS]
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    # Special tokens kept: the random base mostly emits them, and an empty string would hide that.
    before = greedy_answers(base, tokenizer, questions, thinking, max_new_tokens=8, raw=True)
    del base

    print("[2/5] writing the demo data" + (" (with a short reasoning per row)" if thinking else ""), flush=True)
    data = workdir / "data" / "demo.jsonl"
    write_jsonl([parse_row(r, None) for r in demo_rows(reasoning=thinking)], data)

    print(f"[3/5] LoRA training for {steps} steps" if steps else
          f"[3/5] LoRA training until the loss is at most {LOSS_TARGET} (at most {MAX_STEPS} steps)", flush=True)
    metrics, losses, cfg = train_demo(workdir, model_dir, data, steps)
    print(f"loss: first logged {losses[0]:.3f} -> last {losses[-1]:.3f} after {cfg.max_steps} steps", flush=True)

    print("[4/5] merging the adapter into the base (float32) and validating", flush=True)
    merged_dir = workdir / "merged"
    merge(str(model_dir), str(cfg.run_dir / "lora_adapters"), str(merged_dir), dtype="float32")
    report = validate(
        str(model_dir), str(cfg.run_dir / "lora_adapters"), str(merged_dir), questions[:3], dtype="float32"
    )
    if not report.ok:
        raise UserError(f"merge validation failed: {report}")

    print("[5/5] greedy answers from the merged model, then the eval table (base vs tuned)", flush=True)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    after = greedy_answers(merged, load_tokenizer(str(merged_dir)), questions, thinking, max_new_tokens=48)
    hits = 0
    for (q, want), b, a in zip(DEMO_PAIRS, before, after):
        ok = a == want
        hits += ok
        print(f"\nQ: {q}\n  trained answer : {want}\n  base (random)  : {b[:70]!r}\n  after LoRA     : {a!r}  "
              f"{'OK' if ok else 'MISMATCH'}")
    print(f"\n{hits}/{len(DEMO_PAIRS)} trained answers reproduced by the merged model; "
          f"train tokens/s {metrics['train_tokens_per_second']:.0f}; outputs in {workdir}")

    # The eval table (qwen-sft eval). On the training rows here: the demo has no held-out split.
    from .data.formats import load_dataset
    from .evaluation.passes import evaluate_model
    from .evaluation.report import print_table, write_report

    report = evaluate_model(merged_dir, load_dataset(data).conversations, base=str(model_dir), max_new_tokens=24)
    print()
    print_table(report)
    write_report(report, workdir / "eval")
    print("\n" + banner)
    return 0 if hits == len(DEMO_PAIRS) else 1
