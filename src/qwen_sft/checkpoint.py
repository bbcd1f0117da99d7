"""Atomic checkpoints, auto-resume, and the run record that guards resume.

A checkpoint is written into a temp directory next to its target, every file flushed and fsynced,
a COMPLETE marker written last, then the directory renamed into place. `auto` only ever picks a
directory named checkpoint-N that holds the marker, so a run killed mid-save is never resumed from
a half-written checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import UserError

MARKER = "COMPLETE"
CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
# Run-record fields that must match to resume; anything else may change (e.g. logging_steps).
# train_split_hash covers what the files alone do not: val_size, skip_invalid, data_format, cutoff_len,
# thinking mode, template (the encoded train rows themselves, in order).
RESUME_KEYS = ("dataset_hash", "train_split_hash", "base_model", "tokenizer_hash", "lora", "cutoff_len",
               "enable_thinking", "train_on", "packing", "per_device_train_batch_size", "gradient_accumulation_steps",
               "seed", "group_by_length", "world_size")


# ---------------------------------------------------------------- run record


def file_hash(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def tokenizer_hash(tokenizer) -> str:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256((vocab + (tokenizer.chat_template or "")).encode()).hexdigest()


def run_record(cfg, data_files: list[str], tokenizer, world_size: int = 1, train_split_hash: str = "",
               dataset_hash: str | None = None) -> dict:
    """train_split_hash: the encoded train rows' fingerprint (data.rowstore.Rows.fingerprint: their tokens,
    labels and order, without reading them again). dataset_hash: file_hash(data_files) when the caller has it."""
    import peft
    import transformers

    return {
        "dataset_hash": dataset_hash or file_hash(data_files),
        "train_split_hash": train_split_hash,
        "packing": cfg.packing,
        "dataset_files": data_files,
        "base_model": cfg.model_name_or_path,
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "lora": {"r": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": cfg.lora_target_modules,
                 "dora": cfg.use_dora, "rslora": cfg.use_rslora},
        "cutoff_len": cfg.cutoff_len,
        "enable_thinking": cfg.enable_thinking,
        "train_on": cfg.train_on,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "seed": cfg.seed,
        "group_by_length": cfg.group_by_length,
        "world_size": world_size,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }


def record_diff(old: dict, new: dict) -> list[str]:
    return [f"{k}: checkpoint has {old.get(k)!r}, this run has {new.get(k)!r}" for k in RESUME_KEYS if old.get(k) != new.get(k)]


# ---------------------------------------------------------------- find


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CKPT_RE.match(p.name)) and (p / MARKER).exists()]
    return [p for _, p in sorted(found)]


def resolve_resume(spec: str | None, run_dir: Path) -> Path | None:
    if not spec:
        return None
    if spec == "auto":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(spec)
    if not path.is_dir():
        raise UserError(f"resume_from_checkpoint: {path} not found; pass a checkpoint-N directory, or auto")
    if not (path / MARKER).exists():
        raise UserError(f"resume_from_checkpoint: {path} is not a complete checkpoint (no {MARKER} marker)")
    return path


# ---------------------------------------------------------------- save / load


def publish_dir(tmp: Path, out: Path) -> None:
    """Rename tmp to out; an existing out is moved aside first and deleted only once tmp is in place."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    try:
        shutil.rmtree(old)
    finally:
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, adapter_state: dict, optimizer, scheduler, trainer_state: dict,
                    record: dict, keep: int, rank_rng_states: list[dict] | None = None) -> Path:
    """rank_rng_states: multi-process runs pass every rank's RNG state (rng-{rank}.pt); rng.pt is always this process's."""
    target = run_dir / f"checkpoint-{step}"
    tmp = run_dir / f".tmp-checkpoint-{step}-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in adapter_state.items()}, tmp / "adapter_model.safetensors")
        files = [("optimizer.pt", optimizer.state_dict()), ("scheduler.pt", scheduler.state_dict()), ("rng.pt", rng_state())]
        files += [(f"rng-{rank}.pt", state) for rank, state in enumerate(rank_rng_states or [])]
        for name, obj in files:
            with open(tmp / name, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
        _write_json(tmp / "trainer_state.json", trainer_state)
        _write_json(tmp / "run_record.json", record)
        _write_json(tmp / MARKER, {"step": step})
        _fsync_dir(tmp)
        publish_dir(tmp, target)  # replaces a checkpoint of the same step from an earlier attempt
        _fsync_dir(run_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise UserError(f"cannot write checkpoint {target}: {reason}; earlier checkpoints are intact") from None
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_run_record(path: Path) -> dict:
    """The run record a checkpoint was written with."""
    try:
        return json.loads((path / "run_record.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable run record ({e})") from None


def load_checkpoint(path: Path, optimizer, scheduler, rank: int = 0) -> tuple[dict, dict]:
    """Returns (adapter_state, trainer_state); restores optimizer, scheduler and this rank's RNG
    (rng-{rank}.pt when the checkpoint has one, else rng.pt). The run record: read_run_record."""
    adapter = load_file(path / "adapter_model.safetensors")
    # weights_only=True: tensors and plain containers only, never arbitrary pickled objects.
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng_file = path / f"rng-{rank}.pt"
    set_rng_state(torch.load(rng_file if rng_file.exists() else path / "rng.pt", weights_only=True))
    return adapter, json.loads((path / "trainer_state.json").read_text())
