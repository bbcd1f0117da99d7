"""The LoRA training recipe, top to bottom: setup -> train -> save.

Engine: accelerate (device placement, DDP / FSDP / DeepSpeed under `accelerate launch` or torchrun);
the loop itself is ours, so that loss normalization, data order and checkpoints are exactly what
the docs say (see docs/design.md).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import resource
import shutil
import signal
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ckpt
from . import distributed, launch, live, runlock
from .launch import GracefulStop
from .batching import Collator, StepPlan, pack_rows
from .config import TrainConfig, save_config
from .data.dataset import PreparedData, encode_and_split
from .data.report import enforce, format_report, save_report
from .data.template import check_options, resolve_thinking, template_options, template_rules
from .errors import STOPPED_BEFORE_START, StopRequested, UserError
from .fileio import read_text, replacing, write_text
from .loss import CausalLMLoss
from .families import family_of_path
from .model import load_base_model, lora_layout, wrap_lora
from .data.tokenizer import load_tokenizer, save_tokenizer

log = logging.getLogger("qwen_sft")
# Test hook: seconds to sleep after each optimizer step, so that process-fault tests can signal a
# run at a chosen step. Never set in normal use.
DEBUG_STEP_DELAY = float(os.environ.get("QWEN_SFT_DEBUG_STEP_DELAY", "0"))


@dataclass
class TrainState:
    step: int = 0
    trained_tokens: int = 0
    loss_sum: float = 0.0  # sum of per-token losses over the run, for the run's mean train loss
    history: list = field(default_factory=list)  # [{"step", "loss" | "eval_loss", "lr"}]
    # The logging window open at a checkpoint (one that falls between two logged steps: a stop, or save_steps not a
    # multiple of logging_steps) and the input tokens of the whole run: saved, so a resumed run logs what an
    # uninterrupted one does. (Checkpoints written before these fields resume with them at 0.)
    window_loss: float = 0.0  # sum of per-token losses of the steps since the last logged one
    window_tokens: int = 0
    input_tokens: int = 0  # input tokens of all ranks over the run (metrics' train_tokens)
    eval_pending: bool = False  # a stop interrupted the eval of this step: the resumed run repeats it first
    settings_changed: list = field(default_factory=list)  # [{"step", "changed": {key: [old, new]}}] of forced resumes


# ---------------------------------------------------------------- setup


def setup_run_dir(cfg: TrainConfig, owned: ExitStack) -> tuple[Path, str]:
    """Make and lock the run directory for this process's life (owned), then claim it: (run_dir, run id).

    One owner per run directory: a second training into it is refused naming the holder (runlock); a new run
    never mixes with another run's checkpoints or results (checkpoint.claim_run_dir)."""
    run_dir = cfg.run_dir
    ckpt.check_run_dir_path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{run_dir}: cannot create the run directory: {e.strerror or e}") from None
    owned.enter_context(runlock.hold(run_dir))
    run_id, _ = ckpt.claim_run_dir(cfg)
    return run_dir, run_id


def check_resume_record(resume_from: Path, old: dict, new: dict, force: bool) -> dict:
    """Refuse a resume whose data, model or run-defining settings differ from the checkpoint's (unless force);
    returns the settings that change, {key: [checkpoint's, this run's]}, applied as stated from here on."""
    refused, changed = ckpt.settings_diff(old.get("config"), new["config"])
    diff = ckpt.record_diff(old, new) + refused
    if diff and not force:
        raise UserError(f"{resume_from} was trained with other data or settings; refusing to resume:\n"
                        + "\n".join(f"  - {d}" for d in diff) + "\n(set them back to continue the run as it was, "
                        "or force_resume=true to resume with this run's settings from the checkpoint's step on)")
    return changed


def apply_settings(optimizer, scheduler, cfg: TrainConfig) -> None:
    """After a resume: this config's learning rate, schedule and weight decay, not the restored ones (the restored
    optimizer and scheduler would keep training at the checkpoint's). Unchanged settings give the restored values."""
    scheduler.base_lrs = [cfg.learning_rate for _ in optimizer.param_groups]
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"], group["weight_decay"] = cfg.learning_rate, cfg.weight_decay
        group["lr"] = cfg.learning_rate * factor(scheduler.last_epoch)  # as LambdaLR computes it
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def write_run_files(cfg: TrainConfig, report: dict, run_dir: Path, changed: dict, resume_from: Path | None) -> None:
    save_report(report, run_dir / "data_report.json")
    note = ""
    if changed:
        note = (
            f"resumed from {resume_from} with changed settings (the steps before it used the earlier values; "
            f"metrics.json settings_changed):\n" + "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        )
    save_config(cfg, run_dir / "config.yaml", note)


def make_optimizer(module, cfg: TrainConfig):
    """AdamW over the trainable parameters (the LoRA weights); plan builds the same."""
    return torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=cfg.learning_rate,
                             weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    warmup = int(math.ceil(cfg.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.lr_scheduler_type == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.lr_scheduler_type == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adapter_state(model, state_dict: dict | None = None) -> dict:
    """The LoRA weights; from `state_dict` (the PeftModel's, gathered) where the model's own are sharded."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, state_dict=state_dict)


def load_adapter_state(model, state: dict) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    if getattr(result, "unexpected_keys", None):
        raise UserError(f"checkpoint adapter has unexpected keys, e.g. {result.unexpected_keys[:3]}")


# ---------------------------------------------------------------- steps


def offload_saved_tensors(enabled: bool, device):
    """Around a forward: the tensors autograd saves for backward wait in CPU memory instead of the GPU.

    Non-reentrant checkpointing saves each layer's input through these hooks (its recomputation in
    backward runs outside them and stays on the GPU), so with gradient_checkpointing this moves the
    checkpoints, one [tokens x hidden] tensor per layer.
    """
    if not enabled:
        return nullcontext()
    return torch.autograd.graph.save_on_cpu(pin_memory=device.type == "cuda")


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def held_out_loss(module, loader, device, stop: GracefulStop | None = None, accelerator=None,
                  counted: int | None = None) -> float | None:
    """Mean loss per trained token over the held-out rows (None when interrupted).

    Several processes: each evaluates its share, the first `counted` micro-batches of its loader (the rest
    only keep the ranks' forward counts equal), and the sums are all-reduced: the global token-weighted mean.
    """
    module.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if stop is not None and stop.requested:
                module.train()
                return None
            n = int((batch["targets"] != -100).sum())
            if n:
                loss = float(module(**to_device(batch, device)))
                if counted is None or i < counted:
                    total += loss
                    count += n
    module.train()
    if accelerator is not None and accelerator.num_processes > 1:
        sums = accelerator.reduce(torch.tensor([total, count], dtype=torch.float64, device=device), "sum")
        total, count = float(sums[0]), int(sums[1])
    return total / max(count, 1)


def make_loader(collator: Collator, batches: list[list[int]], workers: int):
    from torch.utils.data import DataLoader

    # batch_size=None: every item is already a micro-batch of row indices; the collator builds it.
    # Its own generator: a DataLoader iterator otherwise draws a seed from the global RNG, which would
    # shift the dropout masks of a resumed run (new iterators start at other steps than originally).
    return DataLoader(
        batches,
        batch_size=None,
        shuffle=False,
        collate_fn=collator,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=_leave_process_group if workers else None,
    )


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _leave_process_group(worker_id: int) -> None:
    """DataLoader workers leave SIGINT / SIGTERM to the main process, which stops at a step boundary: torchrun
    signals each rank's whole process group, a terminal's Ctrl-C its foreground group, so a worker moves to a
    group of its own. It starts with the signals blocked (_start_workers): drop any that came before, unblock.
    Its parent can still terminate it, and it exits by itself when its parent dies (DataLoader's watchdog)."""
    os.setpgid(0, 0)
    while signal.sigtimedwait(STOP_SIGNALS, 0) is not None:
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _start_workers(loader):
    """iter(loader), with SIGINT / SIGTERM blocked while it forks its workers, so that none is killed before it
    leaves the process group; a signal that reached the main process meanwhile is delivered when the block ends."""
    if not loader.num_workers:
        return iter(loader)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    # ru_maxrss is in KiB on Linux: the process's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ---------------------------------------------------------------- the recipe


def train(cfg: TrainConfig, before_training=None) -> dict:
    """before_training: (cfg, data, accelerator) called once the data is ready, before the model loads: the CLI
    passes plan.gate.before_training (plan simulates this module's train_step, so train cannot import plan)."""
    # Signals are caught from the start: a stop during setup exits cleanly before the first step.
    # `owned` holds the run directory's lock until training ends, however it ends; the live record (live.py) notes
    # how it ends (finished, stopped: a StopRequested, or failed: any error) before the lock is released.
    with GracefulStop() as stop, ExitStack() as owned, live.LiveRecord() as record:
        launch.register_worker()
        metrics = _train(cfg, stop, owned, record, before_training)
        record.finish(metrics)
        return metrics


@dataclass
class Run:
    """One training session of a run directory, as setup builds it for the loop and the save."""

    cfg: TrainConfig  # enable_thinking resolved: the mode actually trained
    accelerator: object  # accelerate's: device, rank, world, collectives
    run_dir: Path
    tokenizer: object
    data: PreparedData  # train / val rows (memory-mapped) and the data report
    record: dict  # the run record each checkpoint carries (checkpoint.run_record)
    loss_fn: CausalLMLoss
    module: object  # loss_fn as accelerate wrapped it (DDP, FSDP, DeepSpeed)
    optimizer: object
    scheduler: object
    plan: StepPlan  # this rank's micro-batches of each step
    collator: Collator
    val_loader: object | None
    val_counted: int  # the eval micro-batches of this rank that count (evaluate)
    deepspeed: bool = False  # DeepSpeed steps inside backward (train_step)
    state: TrainState = field(default_factory=TrainState)
    writer: object | None = None  # tensorboard, main process only
    finished_metrics: dict | None = None  # a finished run resumed at its last step: nothing to train

    @property
    def device(self):
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def model(self):
        """The PeftModel, unwrapped."""
        return self.accelerator.unwrap_model(self.module).model


def _train(cfg: TrainConfig, stop: GracefulStop, owned: ExitStack, live_record: live.LiveRecord,
           before_training=None) -> dict:
    run = setup(cfg, stop, owned, live_record, before_training)
    if run.finished_metrics is not None:
        return run.finished_metrics
    runtime, run_tokens = train_steps(run, stop, live_record)
    return save(run, runtime, run_tokens)


# ---------------------------------------------------------------- the recipe: setup


def setup(cfg: TrainConfig, stop: GracefulStop, owned: ExitStack, live_record: live.LiveRecord,
          before_training=None) -> Run:
    if not stop.requested:  # (a stop while starting ends below, without reading the model's config from the hub)
        family_of_path(cfg.model_name_or_path, cfg.trust_remote_code)  # a model without a row: refused before any write
    accelerator = distributed.make_accelerator(cfg)  # DDP, or the FSDP / DeepSpeed plugin of distributed_strategy
    is_main = accelerator.is_main_process
    run_dir, run_id = setup_run_dir(cfg, owned) if is_main else (cfg.run_dir, None)
    live_record.start(run_dir, cfg, is_main)
    if stop.requested and accelerator.num_processes == 1:  # stopped while starting: no model loaded for nothing
        raise StopRequested(STOPPED_BEFORE_START)  # (several processes agree on it before the first step)
    accelerator.wait_for_everyone()
    torch.manual_seed(cfg.seed)

    resume_from = ckpt.resolve_resume(cfg.resume_from_checkpoint, run_dir, ckpt.read_run_id(run_dir))
    tokenizer = load_tokenizer(cfg.model_name_or_path, cfg.trust_remote_code)
    # enable_thinking: auto becomes the mode the model's chat template serves (a mode it cannot serve is refused);
    # from here on, and in config.yaml, the mode actually trained.
    rules = template_rules(tokenizer, cfg.model_name_or_path)
    cfg = dataclasses.replace(cfg, enable_thinking=resolve_thinking(cfg.enable_thinking, rules, cfg.model_name_or_path))
    options = check_options(cfg, tokenizer, cfg.enable_thinking, cfg.model_name_or_path)
    if is_main:
        print(f"chat template: {rules.describe()}; enable_thinking {str(cfg.enable_thinking).lower()}"
              + "".join(f"; {k} {json.dumps(v)}" for k, v in options.items()), flush=True)
    # The rows come from the data cache, memory-mapped. Several processes on a machine: the first encodes (on
    # every core) and caches, the others wait, then map the same files. One process stops a long encode at a
    # Ctrl-C; several finish it and agree on the stop before the first step (a lone rank must not leave).
    with accelerator.local_main_process_first():
        data = encode_and_split(cfg, tokenizer, log=print if is_main else None,
                       stop=(lambda: stop.requested) if accelerator.num_processes == 1 else None)
    record = ckpt.run_record(cfg, data.report["files"], tokenizer, accelerator.num_processes, data.train.fingerprint(),
                             data.dataset_hash)
    record["run_id"] = run_id
    changed = {}
    if resume_from is not None:
        # Before anything is written: a refused resume leaves the run's config.yaml and data report as they were.
        changed = check_resume_record(resume_from, ckpt.read_run_record(resume_from), record, cfg.force_resume)
        if changed and is_main:
            print(
                "resuming with changed settings: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()),
                flush=True,
            )
    # A finished run that is resumed keeps its files as they are unless it trains (written below, once it does).
    finished = is_main and ckpt.run_finished(run_dir)
    if is_main:
        print(format_report(data.report), flush=True)
        if not finished:
            write_run_files(cfg, data.report, run_dir, changed, resume_from)
    enforce(data.report, cfg)
    if before_training is not None:
        before_training(cfg, data, accelerator)  # the plan's summary; on CUDA, no start that cannot fit (plan_check)

    model = wrap_lora(load_base_model(cfg, accelerator.device), cfg)
    loss_fn = CausalLMLoss(model, cfg.loss_chunk_size).to(accelerator.device)
    module, optimizer = distributed.wrap_model_and_optimizer(accelerator, loss_fn, lambda m: make_optimizer(m, cfg))
    if accelerator.num_processes > 1:
        # dropout: one stream per rank (the LoRA init is the same on all)
        torch.manual_seed(cfg.seed + accelerator.process_index)
    plan, collator, val_loader, val_counted = plan_steps(cfg, data, accelerator, tokenizer.pad_token_id)
    run = Run(
        cfg=cfg,
        accelerator=accelerator,
        run_dir=run_dir,
        tokenizer=tokenizer,
        data=data,
        record=record,
        loss_fn=loss_fn,
        module=module,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg, plan.total_steps),
        plan=plan,
        collator=collator,
        val_loader=val_loader,
        val_counted=val_counted,
        deepspeed=distributed.is_deepspeed(accelerator),
    )

    distributed.check_resume(accelerator, resume_from)
    if resume_from is not None:
        resume(run, resume_from, changed)
        if run.finished_metrics is not None:
            return run
    elif cfg.resume_from_checkpoint == "auto" and is_main:
        print("resume_from_checkpoint=auto: no complete checkpoint yet, starting fresh", flush=True)
    if finished:
        write_run_files(cfg, data.report, run_dir, changed, resume_from)
    if is_main and cfg.report_to == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(log_dir=str(run_dir / "logs"))
    return run


def plan_steps(cfg: TrainConfig, data: PreparedData, accelerator, pad_token_id: int):
    """(plan, collator, val_loader, val_counted) of this rank: which rows each step trains, and the eval share."""
    # Training units: single rows, or packs of rows (packing). Packs are made over the whole train split,
    # then each rank takes every world-th unit of the first len // world * world: all ranks get as many
    # units, so their plans have the same steps. The last len % world units are not trained.
    rank, world, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    lengths = data.train.lengths  # tokens per row, from the cache's offsets (no row is read)
    # Single rows are an [n, 1] index array: no Python object per row.
    units = pack_rows(lengths.tolist(), cfg.cutoff_len) if cfg.packing else np.arange(len(lengths)).reshape(-1, 1)
    used = len(units) // world * world
    if used == 0:
        raise UserError(f"{len(units)} train unit(s) for {world} processes: every process needs at least one")
    mine = units[rank:used:world]
    plan = StepPlan([sum(lengths[i] for i in u) for u in mine] if cfg.packing else lengths[mine[:, 0]],
                    cfg.per_device_train_batch_size,
                    cfg.gradient_accumulation_steps, cfg.seed, cfg.group_by_length, cfg.num_train_epochs, cfg.max_steps)
    collator = Collator(data.train, cfg.padding_free, pad_token_id, mine)
    val_batches = [list(range(i, min(i + cfg.per_device_train_batch_size, len(data.val))))
                   for i in range(0, len(data.val), cfg.per_device_train_batch_size)]
    # Eval: each rank takes every world-th micro-batch, topped up with repeats of the first (run, not counted) so
    # that all ranks run as many forwards (FSDP / ZeRO-3 gather weights in each one).
    val_mine = val_batches[rank::world]
    val_counted = len(val_mine)
    val_mine += val_batches[:1] * (math.ceil(len(val_batches) / world) - val_counted)
    val_loader = make_loader(Collator(data.val, cfg.padding_free, pad_token_id), val_mine, 0) if data.val else None
    if is_main and used < len(units):
        left = [data.train[i].source for u in units[used:] for i in u]
        print(f"{len(left)} train row(s) not trained: {len(units)} {'packs' if cfg.packing else 'rows'} do not split "
              f"evenly over {world} processes ({', '.join(left)})", flush=True)
    if is_main:
        print(f"train rows {len(data.train)}, val rows {len(data.val)}; global batch "
              f"{cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps} accumulation x {world} "
              "process(es) = "
              f"{cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world} rows per step; "
              f"{plan.steps_per_epoch} steps per epoch, {plan.total_steps} steps", flush=True)
    return plan, collator, val_loader, val_counted


def resume(run: Run, resume_from: Path, changed: dict) -> None:
    """The checkpoint's adapter, optimizer, scheduler and state into the run, with this config's settings
    (apply_settings). A finished run resumed at its last step: run.finished_metrics, nothing rewritten."""
    adapter, saved = ckpt.load_checkpoint(resume_from, run.optimizer, run.scheduler, run.accelerator.process_index)
    load_adapter_state(run.model, adapter)
    run.state = state = TrainState(**saved)
    apply_settings(run.optimizer, run.scheduler, run.cfg)
    if changed:
        state.settings_changed.append({"step": state.step, "changed": changed})
    if run.is_main:
        print(f"resumed from {resume_from} at step {state.step}", flush=True)
    total = run.plan.total_steps
    if state.step > total:  # else the adapter of that later step would be saved as this run's result
        raise UserError(f"{resume_from} is at step {state.step}, past this run's {total} steps; raise "
                        "max_steps or num_train_epochs, or resume an earlier checkpoint-N")
    if state.step == total and (run.run_dir / "metrics.json").exists():
        if run.is_main:
            print(f"{run.run_dir} already finished at step {state.step} of {total}; nothing to train "
                  "(raise max_steps or num_train_epochs to train further)", flush=True)
        run.accelerator.wait_for_everyone()
        run.finished_metrics = json.loads(read_text(run.run_dir / "metrics.json"))


# ---------------------------------------------------------------- the recipe: train


def train_steps(run: Run, stop: GracefulStop, live_record: live.LiveRecord) -> tuple[float, int]:
    """Train from run.state.step to the plan's last step; (runtime, input tokens) of this session.
    A stop saves a checkpoint at the step boundary and raises StopRequested."""
    cfg, state, plan, world = run.cfg, run.state, run.plan, run.world
    run.module.train()
    started, run_tokens = time.perf_counter(), 0  # run_tokens: this session's, for its throughput
    progress = _progress(plan.total_steps, state.step, disable=not run.is_main)
    # Several processes: a stop may have reached some ranks but not yet others (signals arrive, and ranks get
    # here, at different moments): agree, or the others would wait for the stopped rank in the first all-reduce
    # (gloo: a crash; NCCL: a hang until its timeout).
    stop_first = stop.requested
    if world > 1:
        stop_first = run.accelerator.reduce(torch.tensor(float(stop.requested), device=run.device), "sum").item() > 0
    if stop_first:
        raise StopRequested(STOPPED_BEFORE_START)

    if state.eval_pending and run.val_loader is not None:  # the eval a stop interrupted: part of that step
        state.eval_pending = not eval_and_log(run, stop, progress, interruptible=False)
    step_batches = _batches_from(plan, state.step, run.collator, cfg.dataloader_num_workers)
    while state.step < plan.total_steps:
        loss_value, global_tokens, input_tokens, stop_agreed = train_step(run, next(step_batches), stop)
        state.step += 1
        if DEBUG_STEP_DELAY:
            time.sleep(DEBUG_STEP_DELAY)
        run_tokens += input_tokens
        state.input_tokens += input_tokens
        state.trained_tokens += global_tokens
        state.loss_sum += loss_value * global_tokens
        state.window_loss += loss_value * global_tokens
        state.window_tokens += global_tokens
        lr = run.scheduler.get_last_lr()[0]
        elapsed = time.perf_counter() - started
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{run_tokens / max(elapsed, 1e-9):.0f}")

        if state.step % cfg.logging_steps == 0 or state.step == plan.total_steps:
            log_window(run, lr, run_tokens / max(elapsed, 1e-9))
        last = state.step == plan.total_steps
        if run.val_loader is not None and (state.step % cfg.eval_steps == 0 or last):
            # the last step's completes
            state.eval_pending = not eval_and_log(run, stop, progress, interruptible=not last)
        live_record.update(state, plan.total_steps, lr, run_tokens, elapsed, peak_memory_gb(run.device))
        # A stop on the last step just finishes the run (its result is written by save).
        stopping = (stop_agreed if world > 1 else stop.requested) and not last
        if stopping or state.step % cfg.save_steps == 0:
            save_checkpoint(run)
            if stopping:
                progress.close()
                raise StopRequested(f"stopped at step {state.step}; checkpoint saved to "
                                    f"{run.run_dir / f'checkpoint-{state.step}'}. Resume with "
                                    "resume_from_checkpoint=auto")
    progress.close()
    if stop.requested and run.is_main:
        print("stop requested on the last step: finishing the run", flush=True)
    return time.perf_counter() - started, run_tokens


def train_step(run: Run, micro: list[dict], stop: GracefulStop) -> tuple[float, int, int, bool]:
    """One optimizer step over its micro-batches: (loss per trained token, trained tokens and input tokens of all
    ranks, whether any rank was asked to stop: several processes only, else False)."""
    accelerator, device, world, cfg = run.accelerator, run.device, run.world, run.cfg
    # Trained tokens (the loss denominator) and input tokens of the whole step, summed over all ranks.
    # Counted on the CPU batches (no device sync); moved to the device only for the all-reduce.
    step_tokens = torch.tensor([sum(int((b["targets"] != -100).sum()) for b in micro),
                                sum(_input_tokens(b, cfg.padding_free) for b in micro)])
    if world > 1:
        step_tokens = accelerator.reduce(step_tokens.to(device), "sum").cpu()
    global_tokens, input_tokens = int(step_tokens[0]), int(step_tokens[1])
    if global_tokens == 0:
        raise UserError(f"step {run.state.step + 1}: no trained token in the whole step (rows {_rows(micro)})")
    deepspeed = run.deepspeed
    backward_kwargs = {"scale_wrt_gas": False} if deepspeed else {}  # the loss is already normalized per step
    step_loss = torch.zeros((), device=device)
    for i, batch in enumerate(micro):
        sync = i == len(micro) - 1
        if deepspeed:  # DeepSpeed steps (clip, optimizer, zero_grad) inside backward, at the step's last micro-batch
            accelerator.gradient_state._set_sync_gradients(sync)
        with accelerator.no_sync(run.module) if not sync and world > 1 else nullcontext(), \
                run.loss_fn.adapter_input_casts_off():
            with offload_saved_tensors(cfg.offload_activations, device):
                loss_sum = run.module(**to_device(batch, device))
            # Normalize by the trained tokens of the whole step on all ranks (DDP averages
            # gradients over ranks, hence x world): every token weighs the same.
            accelerator.backward(loss_sum * world / global_tokens, **backward_kwargs)
        step_loss += loss_sum.detach()
    stop_agreed = False
    if world > 1:  # the step's loss, and whether any rank was asked to stop: all ranks stop at the same step
        flag = torch.tensor(float(stop.requested), device=device)
        loss_total, stops = accelerator.reduce(torch.stack([step_loss, flag]), "sum").tolist()
        loss_value, stop_agreed = loss_total / global_tokens, stops > 0
    else:
        loss_value = float(step_loss) / global_tokens
    if not math.isfinite(loss_value):
        raise UserError(f"step {run.state.step + 1}: loss is {loss_value}; stopping without saving a checkpoint. "
                        f"Rows in this step: {_rows(micro)}. Try a lower learning_rate, or check these rows.")
    # All of the module's parameters (frozen ones have no grad): given those, accelerate clips by FSDP's global norm.
    if cfg.max_grad_norm > 0:
        accelerator.clip_grad_norm_(run.module.parameters(), cfg.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_value, global_tokens, input_tokens, stop_agreed


def log_window(run: Run, lr: float, tokens_per_second: float) -> None:
    """The mean loss of the steps since the last logged one, into the history (and tensorboard)."""
    state = run.state
    mean = state.window_loss / max(state.window_tokens, 1)
    state.history.append({"step": state.step, "loss": mean, "lr": lr})
    state.window_loss, state.window_tokens = 0.0, 0
    if run.writer:
        run.writer.add_scalar("train/loss", mean, state.step)
        run.writer.add_scalar("train/lr", lr, state.step)
        run.writer.add_scalar("train/tokens_per_second", tokens_per_second, state.step)


def eval_and_log(run: Run, stop: GracefulStop, progress, interruptible: bool) -> bool:
    """Eval loss at state.step, logged; False when a stop interrupted it (the resumed run then repeats it).
    Several processes: never interrupted (every rank must run the same forwards)."""
    state = run.state
    eval_loss = held_out_loss(
        run.module,
        run.val_loader,
        run.device,
        stop if interruptible and run.world == 1 else None,
        run.accelerator,
        run.val_counted,
    )
    if eval_loss is None:
        return False
    state.history.append({"step": state.step, "eval_loss": eval_loss})
    if run.writer:
        run.writer.add_scalar("eval/loss", eval_loss, state.step)
    progress.write(f"step {state.step}: eval_loss {eval_loss:.4f}")
    if run.writer and run.cfg.eval_sample_generations:  # (validate refuses it with sharded weights)
        from .evaluation.passes import log_sample_generations

        val = run.data.val  # a row's further sequences (data/encode.py) hold the same conversation: once each
        firsts = (i for i in range(len(val)) if not val[i].continues_row)
        shown = [val.conversation(i) for i in itertools.islice(firsts, run.cfg.eval_sample_generations)]
        log_sample_generations(run.model, run.tokenizer, shown, run.writer, state.step, run.cfg.enable_thinking,
                               max_new_tokens=64, options=template_options(run.cfg))
    return True


def save_checkpoint(run: Run) -> None:
    gathered = distributed.gathered_state_dict(run.accelerator, run.module)  # collectives: every rank takes part
    rng_states = distributed.all_rng_states(run.accelerator)
    if run.is_main:
        ckpt.save_checkpoint(run.run_dir, run.state.step, adapter_state(run.model, gathered), run.optimizer,
                             run.scheduler, run.state.__dict__, run.record, run.cfg.save_total_limit, rng_states)
    run.accelerator.wait_for_everyone()


# ---------------------------------------------------------------- the recipe: save


def save(run: Run, runtime: float, run_tokens: int) -> dict:
    """The adapter, metrics, loss history and curve of the finished run; its metrics."""
    state, device, world = run.state, run.device, run.world
    gathered = distributed.gathered_state_dict(run.accelerator, run.module)  # a collective under FSDP / ZeRO-3
    peaks = (
        run.accelerator.gather(torch.tensor([peak_memory_gb(device)], device=device)).tolist() if world > 1 else None
    )
    metrics = {
        "train_runtime": round(runtime, 3),
        "train_steps": state.step,
        "train_tokens": state.input_tokens,  # input tokens of all ranks, over the whole run (resumes included)
        "train_tokens_per_second": round(run_tokens / max(runtime, 1e-9), 2),
        "train_trained_tokens": state.trained_tokens,
        "train_loss": state.loss_sum / max(state.trained_tokens, 1),
        "final_train_loss": next((h["loss"] for h in reversed(state.history) if "loss" in h), None),
        "eval_loss": next((h["eval_loss"] for h in reversed(state.history) if "eval_loss" in h), None),
        "peak_memory_gb": round(peak_memory_gb(device), 3),  # rank 0's
        "device": str(device),
        "world_size": world,
    }
    if peaks is not None:
        metrics["peak_memory_gb_per_rank"] = [round(p, 3) for p in peaks]
    if state.settings_changed:
        metrics["settings_changed"] = state.settings_changed
    if run.is_main:
        run_dir = run.run_dir
        save_adapter(run.model, run.tokenizer, run.cfg, run_dir / "lora_adapters", gathered)
        write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
        write_text(run_dir / "loss_history.json", json.dumps(state.history, indent=2))
        plot_loss(state.history, run_dir / "loss_curve.png")
        if run.writer:
            run.writer.close()
        print(f"done: adapter in {run_dir / 'lora_adapters'}; " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()), flush=True)
    run.accelerator.wait_for_everyone()
    return metrics


def save_adapter(model, tokenizer, cfg: TrainConfig, out: Path, state_dict: dict | None = None) -> None:
    """PEFT adapter + tokenizer + chat template + our metadata, written atomically.

    state_dict: the PeftModel's gathered state dict where its weights are sharded (FSDP, ZeRO-3)."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    save_tokenizer(tokenizer, tmp)
    meta = {"base_model": cfg.model_name_or_path, "enable_thinking": cfg.enable_thinking,
            "template_kind": template_rules(tokenizer).kind, "train_on": cfg.train_on, "cutoff_len": cfg.cutoff_len,
            # what LoRA trained, per layer type (adapter_config.json lists the module names; a key of ours there
            # would make PEFT warn on every load that it is too old)
            "lora_layers": lora_layout(model),
            **template_options(cfg)}  # what chat, eval and merge --validate pass to the template
    (tmp / "qwen_sft.json").write_text(json.dumps(meta, indent=2))
    ckpt.publish_dir(tmp, out)


def plot_loss(history: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per trained token")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with replacing(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- helpers


def _batches_from(plan: StepPlan, start_step: int, collator: Collator, workers: int):
    """Yield the list of collated micro-batches of each step, from start_step on, epoch by epoch."""
    step = start_step
    while step < plan.total_steps:
        epoch = plan.epoch_of(step)
        last = min(plan.total_steps, (epoch + 1) * plan.steps_per_epoch)
        flat, sizes = plan.steps_batches(step, last)
        it = _start_workers(make_loader(collator, flat, workers))
        for n in sizes:
            yield [next(it) for _ in range(n)]
        step = last


def _input_tokens(batch: dict, padding_free: bool) -> int:
    return int(batch["input_ids"].numel()) if padding_free else int(batch["attention_mask"].sum())


def _rows(micro: list[dict]) -> str:
    ids = [r for b in micro for r in b["row_ids"]]
    return ", ".join(ids[:10]) + (f" (+{len(ids) - 10} more)" if len(ids) > 10 else "")


def _progress(total: int, initial: int, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=disable, dynamic_ncols=True)
