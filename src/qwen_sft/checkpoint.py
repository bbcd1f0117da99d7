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
import time
import uuid
from pathlib import Path

# torch is imported where a checkpoint is written or read: listing a run's checkpoints (the UI server) stays light.
from .errors import UserError
from .fileio import blocking_file, fsync_path, nofollow, open_run_file, read_text, side_name, write_text

MARKER = "COMPLETE"
CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
# The id of the run that owns a run directory's checkpoints and results; every checkpoint's run record names the
# run that wrote it, and pruning and resume_from_checkpoint=auto only ever see checkpoints of the directory's run.
RUN_ID_FILE = "run_id"
# What a run leaves in its directory besides its checkpoints: its results, its live record, and what merge and eval
# made of its adapter (the UI's merged/, eval/ and their logs). overwrite_output_dir moves them, with the
# checkpoints, into OVERWRITTEN/{the earlier run's id}/: a new run never shows an earlier run's validation, eval
# or merged model as its own, and nothing is deleted. Anything else in the directory (a user's files, the UI's
# train.log, which the new run is writing) stays where it is.
RUN_OUTPUTS = ("lora_adapters", "metrics.json", "loss_history.json", "loss_curve.png", "data_report.json",
               "config.yaml", "logs", "live.jsonl", "merged", "eval", "merge.log", "eval.log", RUN_ID_FILE)
OVERWRITTEN = "overwritten"
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
    """The run record's tokenizer: its vocabulary and chat template (kept with the tokenizer object)."""
    from .data.template import tokenizer_digest

    return tokenizer_digest(tokenizer, "run record", _vocab_and_template_hash)


def _vocab_and_template_hash(tokenizer) -> str:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256((vocab + (tokenizer.chat_template or "")).encode()).hexdigest()


def lora_targets(cfg, targets) -> list[str] | str:
    """The modules `targets` (cfg.lora_target_modules, or a checkpoint's record of it) adapts on the run's model
    family: all-projections as the family's list, anything else as it is. The word and the list it stands for are
    the same LoRA (the default was the list itself before #22)."""
    from .families import family_of_path, resolve_targets

    return resolve_targets(family_of_path(cfg.model_name_or_path, cfg.trust_remote_code), targets)


def run_record(cfg, data_files: list[str], tokenizer, world_size: int = 1, train_split_hash: str = "",
               dataset_hash: str | None = None) -> dict:
    """train_split_hash: the encoded train rows' fingerprint (data.rowstore.Rows.fingerprint: their tokens,
    labels and order, without reading them again). dataset_hash: file_hash(data_files) when the caller has it."""
    import peft
    import torch
    import transformers

    return {
        "dataset_hash": dataset_hash or file_hash(data_files),
        "train_split_hash": train_split_hash,
        "packing": cfg.packing,
        "dataset_files": data_files,
        "base_model": cfg.model_name_or_path,
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "lora": {"r": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": lora_targets(cfg, cfg.lora_target_modules),
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
        "config": cfg.to_dict(),  # the settings the checkpoint was trained with (settings_diff)
    }


def record_diff(old: dict, new: dict) -> list[str]:
    return [
        f"{k}: checkpoint has {old.get(k)!r}, this run has {new.get(k)!r}"
        for k in RESUME_KEYS
        if old.get(k) != new.get(k)
    ]


# Settings that change what a resumed run trains, beyond the run record's fields (data, model, LoRA shape, batch
# layout, seed, cutoff, thinking mode): a change is refused unless force_resume, which applies it from the
# checkpoint's step on. The run's length (max_steps, num_train_epochs) may change: extending a run is a resume.
MEANING_KEYS = ("learning_rate", "lr_scheduler_type", "warmup_ratio", "weight_decay", "max_grad_norm", "lora_dropout",
                "quantization_bit")
# The LoRA settings that decide the adapter's tensors (their shapes, which modules have them, DoRA's magnitudes):
# a checkpoint's weights and optimizer state fit only its own, so a change is refused even with force_resume.
# (lora_alpha and use_rslora only scale the update: force_resume applies them.)
SHAPE_KEYS = {"lora_rank": "r", "lora_target_modules": "targets", "use_dora": "dora"}
# Keys that only say how to start: never reported as a change.
START_KEYS = ("resume_from_checkpoint", "force_resume", "overwrite_output_dir")


def settings_diff(old: dict | None, new: dict) -> tuple[list[str], dict]:
    """(refused changes as 'key: checkpoint has a, this run has b', every changed key {key: [old, new]}).
    old None: a checkpoint written before settings were recorded, nothing to compare."""
    if not isinstance(old, dict):
        return [], {}
    changed = {k: [old.get(k), v] for k, v in new.items() if k not in START_KEYS and k in old and old[k] != v}
    refused = [f"{k}: checkpoint has {a!r}, this run has {b!r}" for k, (a, b) in changed.items() if k in MEANING_KEYS]
    return refused, changed


def check_lora_shape(resume_from: Path, cfg) -> None:
    """Refuse, before anything is written, a resume whose LoRA shape differs from the checkpoint's (SHAPE_KEYS)."""
    old = read_run_record(resume_from).get("lora")
    old = dict(old) if isinstance(old, dict) else {}
    now = {key: getattr(cfg, key) for key in SHAPE_KEYS}
    if "targets" in old:  # the modules on both sides: a recorded list and all-projections may be the same
        old["targets"] = lora_targets(cfg, old["targets"])
        now["lora_target_modules"] = lora_targets(cfg, cfg.lora_target_modules)
    diff = [f"{key}: checkpoint has {old[field]!r}, this run has {now[key]!r}"
            for key, field in SHAPE_KEYS.items() if field in old and old[field] != now[key]]
    if diff:
        raise UserError(f"resume_from_checkpoint {resume_from} has another LoRA shape ({'; '.join(diff)}): its adapter "
                        "and "
                        "optimizer state fit only its own, so not even force_resume can resume it; set them back, or "
                        "start a new run (another run_name, or overwrite_output_dir=true)")


# ---------------------------------------------------------------- find


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


def read_run_id(run_dir: Path) -> str | None:
    try:
        return read_text(run_dir / RUN_ID_FILE, limit=4096).strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def write_run_id(run_dir: Path, run_id: str) -> None:
    write_text(run_dir / RUN_ID_FILE, run_id + "\n")


def checkpoint_run_id(path: Path) -> str | None:
    """The run that wrote a checkpoint (None: written before run ids, or unreadable)."""
    try:
        record = json.loads(read_text(path / "run_record.json"))
    except (OSError, ValueError, RecursionError):
        return None
    return record.get("run_id") if isinstance(record, dict) else None


def list_checkpoints(run_dir: Path, run_id: str | None = None) -> list[Path]:
    """Complete checkpoints, oldest first; with run_id, only those that run wrote."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CKPT_RE.match(p.name)) and (p / MARKER).exists()]
    return [p for _, p in sorted(found) if run_id is None or checkpoint_run_id(p) == run_id]


def resolve_resume(spec: str | None, run_dir: Path, run_id: str | None = None) -> Path | None:
    """run_id: the directory's run (read_run_id); auto picks only its checkpoints (all, for a directory without one)."""
    if not spec:
        return None
    if spec == "auto":
        found = list_checkpoints(run_dir, run_id)
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
    old = Path(tempfile.mkdtemp(prefix=side_name(out.name, "old-", room=8), dir=out.parent))
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


def _write_json(path: Path, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, adapter_state: dict, optimizer, scheduler, trainer_state: dict,
                    record: dict, keep: int, rank_rng_states: list[dict] | None = None) -> Path:
    """rank_rng_states: multi-process runs pass every rank's RNG state (rng-{rank}.pt); rng.pt is always this
    process's."""
    import torch
    from safetensors.torch import save_file

    target = run_dir / f"checkpoint-{step}"
    tmp = run_dir / f".tmp-checkpoint-{step}-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in adapter_state.items()}, tmp / "adapter_model.safetensors"
        )
        files = [
            ("optimizer.pt", optimizer.state_dict()),
            ("scheduler.pt", scheduler.state_dict()),
            ("rng.pt", rng_state()),
        ]
        files += [(f"rng-{rank}.pt", state) for rank, state in enumerate(rank_rng_states or [])]
        for name, obj in files:
            with open(tmp / name, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
        _write_json(tmp / "trainer_state.json", trainer_state)
        _write_json(tmp / "run_record.json", record)
        _write_json(tmp / MARKER, {"step": step})
        fsync_path(tmp)
        publish_dir(tmp, target)  # replaces a checkpoint of the same step from an earlier attempt
        fsync_path(run_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise UserError(f"cannot write checkpoint {target}: {reason}; earlier checkpoints are intact") from None
    # Only this run's checkpoints, and never the one just written (a message will name it).
    for old in list_checkpoints(run_dir, record.get("run_id"))[:-keep]:
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def read_run_record(path: Path) -> dict:
    """The run record a checkpoint was written with."""
    try:
        record = json.loads(read_text(path / "run_record.json"))
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{path}: unreadable run record ({e})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}: unreadable run record (not a JSON object)")
    return record


def load_checkpoint(path: Path, optimizer, scheduler, rank: int = 0) -> tuple[dict, dict]:
    """Returns (adapter_state, trainer_state); restores optimizer, scheduler and this rank's RNG
    (rng-{rank}.pt when the checkpoint has one, else rng.pt). The run record: read_run_record."""
    from safetensors.torch import load_file

    weights = path / "adapter_model.safetensors"
    os.close(open_run_file(weights))  # a regular file, not a link (safetensors maps the name itself)
    adapter = load_file(weights)
    # weights_only=True: tensors and plain containers only, never arbitrary pickled objects.
    optimizer.load_state_dict(_torch_load(path / "optimizer.pt", map_location="cpu"))
    scheduler.load_state_dict(_torch_load(path / "scheduler.pt"))
    rng_file = path / f"rng-{rank}.pt"
    set_rng_state(_torch_load(rng_file if rng_file.exists() else path / "rng.pt"))
    return adapter, json.loads(read_text(path / "trainer_state.json"))


def _torch_load(path: Path, **kw):
    import torch

    with open(path, "rb", opener=nofollow) as f:
        return torch.load(f, weights_only=True, **kw)


# ---------------------------------------------------------------- run directory


def run_finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").exists() or (run_dir / "lora_adapters").exists()


def check_run_dir_path(run_dir: Path) -> None:
    """The run directory can be made: no part of its path is an existing file (output_dir naming a file)."""
    blocking = blocking_file(run_dir)
    if blocking is not None:
        raise UserError(f"{run_dir}: cannot be the run directory, {blocking} is a file; set output_dir / run_name to a "
                        "directory")


def _earlier_work(run_dir: Path) -> list[str]:
    """Names of what an earlier run left that a new run would lose or mix with: complete checkpoints and results."""
    return [p.name for p in list_checkpoints(run_dir)] + \
        [n for n in ("lora_adapters", "metrics.json") if (run_dir / n).exists()]


def _leftovers(run_dir: Path) -> list[str]:
    """Incomplete checkpoints (a save that was killed): nothing to resume from, moved aside with their run."""
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".tmp-checkpoint-")
                  or (CKPT_RE.match(p.name) and not (p / MARKER).exists())) if run_dir.is_dir() else []


def _move_aside(run_dir: Path, names: list[str], run_id: str | None) -> Path:
    """Move names of run_dir (renamed, never followed: a link moves as a link) into a new folder
    OVERWRITTEN/{run_id or the time}/ of run_dir; returns it. Refused, nothing moved, when OVERWRITTEN is a link or
    a file."""
    trash = run_dir / OVERWRITTEN
    if os.path.lexists(trash) and (trash.is_symlink() or not trash.is_dir()):
        raise UserError(f"overwrite_output_dir: {trash} is not a directory (a link or a file); the earlier run is "
                        "moved "
                        "there: remove it, or set another run_name")
    trash.mkdir(exist_ok=True)
    stem = run_id if run_id and re.fullmatch(r"[\w.-]+", run_id) else time.strftime("%Y%m%d-%H%M%S")
    dest, n = trash / stem, 1
    while True:
        try:
            dest.mkdir()
            break
        except FileExistsError:
            n += 1
            dest = trash / f"{stem}-{n}"
    moved = []
    for name in names:
        try:
            os.rename(run_dir / name, dest / name)
        except OSError as e:
            raise UserError(f"overwrite_output_dir: cannot move {run_dir / name} into {dest}: {e.strerror or e}"
                            + (f" (moved before it: {', '.join(moved)})" if moved else "")) from None
        moved.append(name)
    return dest


def _size_text(path: Path) -> str:
    total = sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())
    return f"{total / 2**30:.1f} GiB" if total >= 2**30 else f"{total / 2**20:.1f} MiB"


def claim_run_dir(cfg) -> tuple[str, Path | None]:
    """Decide, under the run directory's lock, whose run this directory is: returns (run id, checkpoint to resume).

    - a resume from this directory's own run continues it (its run id);
    - otherwise a new run starts (a fresh id): refused when the directory holds another run's checkpoints or
      results, unless overwrite_output_dir, which moves them (and what merge and eval made of them) into
      OVERWRITTEN/{the earlier run's id}/ first (said in one line).
    """
    run_dir, fix = cfg.run_dir, "set run_name to a new name, or overwrite_output_dir=true to train into it again"
    owner = read_run_id(run_dir)
    resume_from = resolve_resume(cfg.resume_from_checkpoint, run_dir, owner)
    if resume_from is not None:
        check_lora_shape(resume_from, cfg)
    if resume_from is not None and resume_from.resolve().parent == run_dir.resolve():
        from_run = checkpoint_run_id(resume_from)
        if owner is not None and from_run != owner:
            raise UserError(f"resume_from_checkpoint {resume_from} was written by run {from_run}, not by this "
                            f"directory's run {owner}; resume_from_checkpoint=auto resumes the latest of its own")
        run_id = from_run or owner or new_run_id()
        if run_id != owner:
            write_run_id(run_dir, run_id)
        return run_id, resume_from
    work = _earlier_work(run_dir)
    if work and not cfg.overwrite_output_dir:
        if run_finished(run_dir):
            if cfg.resume_from_checkpoint == "auto":
                raise UserError(f"{run_dir} already holds a finished run and has no complete checkpoint to resume "
                                f"from (resume_from_checkpoint=auto would start afresh and replace it); {fix}")
            if resume_from is not None:
                raise UserError(f"{run_dir} already holds a finished run; resume_from_checkpoint {resume_from} belongs "
                                f"to another run directory; {fix}")
            raise UserError(f"{run_dir} already holds a finished run; {fix}")
        if cfg.resume_from_checkpoint == "auto":  # checkpoints there, but none of the directory's run
            raise UserError(f"{run_dir} holds checkpoints of another run than its own ({', '.join(work)}; this "
                            f"directory's run is {owner}); set overwrite_output_dir=true to move them aside, or "
                            "another "
                            "run_name")
        raise UserError(f"{run_dir} holds checkpoints of an unfinished run ({', '.join(work)}): resume it with "
                        "resume_from_checkpoint=auto, or set overwrite_output_dir=true to move them aside and start "
                        "afresh, "
                        "or set another run_name")
    if cfg.overwrite_output_dir:
        earlier = [
            n for n in dict.fromkeys(work + _leftovers(run_dir) + list(RUN_OUTPUTS)) if os.path.lexists(run_dir / n)
        ]
        if earlier:
            dest = _move_aside(run_dir, earlier, owner)
            print(f"overwrite_output_dir: moved the earlier run's {', '.join(n for n in earlier if n != RUN_ID_FILE)} "
                  f"into {dest} ({_size_text(dest)}; delete it when you no longer need it)", flush=True)
    run_id = new_run_id()
    write_run_id(run_dir, run_id)
    return run_id, resume_from
