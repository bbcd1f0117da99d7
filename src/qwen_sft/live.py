"""The live run record: `{run_dir}/live.jsonl`, appended by the trainer, read by the UI (or `tail -f`).

The run directory is the truth about a run: whoever started it (the CLI, the UI, a SLURM script), the
trainer's main process appends one JSON object per line
  - when the run directory is set up: `status: running`, `phase: setup`, the resolved config, pid, host;
  - at each logged step and eval (and at least every HEARTBEAT_S seconds): step, total_steps, loss,
    eval_loss, lr, tokens_per_second, memory_gb, eta_s;
  - when it ends: `finished` (with its metrics), `stopped` (with the checkpoint to resume from) or
    `failed` (with the error line).
A line is written with one append (O_APPEND), so a reader sees whole lines (or, at worst, a last line still
being written, which it skips). Nothing is written before the run directory is set up: a refused start
(e.g. into a finished run) leaves that run's record as it was. Other processes of a multi-process run
write nothing. A write error (full disk) turns the record off with one warning; training goes on.

`trainer_alive` is the one place that decides whether a run's trainer still runs (the run directory's lock).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import sys
import time
from pathlib import Path

from . import runlock
from .fileio import READ_LIMIT, nofollow

FILE = "live.jsonl"
HEARTBEAT_S = 10.0  # a progress line at least this often between logged steps (progress, ETA, liveness)
ERROR_DETAIL_LINES = 40

log = logging.getLogger("qwen_sft")


PROC = Path("/proc")


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid, it names
    one process, so a pid reused by another process is not taken for the trainer. None: no such process
    (or no /proc: not Linux)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": the comm may hold spaces
    if fields[0] in ("Z", "X"):  # a zombie has finished: it only waits for its parent to read its exit code
        return None
    return int(fields[19])


def trainer_alive(record: dict, run_dir: Path | None = None) -> bool | None:
    """Does a trainer still run: the one holding run_dir's lock (runlock.py) when the directory has one, else the
    process `record` names (pid, its start time, host)? None when it runs on another host (cannot tell)."""
    if run_dir is not None and _lock_file(run_dir):
        owner = runlock.run_owner(run_dir)
        return None if owner is not None and not owner["same_host"] else owner is not None
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int):
        return False
    if host and host != socket.gethostname():
        return None
    if not (PROC / "self" / "stat").exists():  # not Linux: no start times, the pid alone
        return runlock.pid_alive(pid)
    start, expected = process_start_time(pid), record.get("pid_start")
    return start is not None and (expected is None or start == expected)


def _lock_file(run_dir: Path) -> bool:
    """run_dir has a lock file that a trainer can hold: a regular file, not a link to one. Anything else there (a
    FIFO, whose opening would wait for a writer for good; a device; a directory) is no trainer's lock."""
    try:
        return stat.S_ISREG(os.lstat(Path(run_dir) / runlock.LOCK_NAME).st_mode)
    except OSError:
        return False


def identity_proven(record: dict, run_dir: Path | None = None) -> bool:
    """Is the process `record` names (pid, pid_start) proven to be this run's trainer, so that it may be signalled:
    it holds run_dir's lock (on this host), or its start time matches the recorded one. A pid alone proves nothing:
    a live.jsonl can come from elsewhere (an upload, a copied workspace) and name any process."""
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if run_dir is not None and _lock_file(run_dir):
        owner = runlock.run_owner(run_dir)
        if owner is not None and owner["same_host"] and owner.get("pid") == pid:
            return True
    expected = record.get("pid_start")
    return isinstance(expected, int) and process_start_time(pid) == expected


def read_records(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """The whole lines of a live record from byte `offset` on (at most READ_LIMIT bytes of them: the next call reads
    on), and the offset after the last whole line."""
    try:
        with open(path, "rb", opener=nofollow) as f:  # a regular file only: a FIFO there would block the reader
            f.seek(offset)
            data = f.read(READ_LIMIT)
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
    records = []
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a torn line (a crash mid-write, a full disk): skip it, keep the rest
        if isinstance(rec, dict):
            records.append(rec)
    return records, offset + end


class LiveRecord:
    """The trainer's writer. A no-op until start() on the main process."""

    def __init__(self):
        self.path: Path | None = None
        self._last_write = 0.0
        self._last_tokens, self._last_elapsed = 0, 0.0
        self._first_step: int | None = None
        self._seen = 0  # history entries already recorded

    def __enter__(self) -> "LiveRecord":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None or self.path is None:
            return
        from .errors import StopRequested

        if isinstance(exc, StopRequested):
            from .checkpoint import list_checkpoints, read_run_id

            found = list_checkpoints(self.path.parent, read_run_id(self.path.parent))  # what auto resumes from
            self._write(status="stopped", message=str(exc), checkpoint=str(found[-1]) if found else None)
            return
        text = str(exc).strip() or type(exc).__name__
        lines = text.splitlines()
        from .errors import UserError

        error = lines[0] if isinstance(exc, UserError) else f"{type(exc).__name__}: {lines[0]}"
        if (
            lines[0].endswith(":") and len(lines) > 1
        ):  # "invalid config:" / "... refusing to resume:": add the first item
            error += " " + lines[1].strip()
        self._write(status="failed", error=error, detail="\n".join(lines[:ERROR_DETAIL_LINES]))

    def start(self, run_dir: Path, cfg, is_main: bool) -> None:
        if not is_main:
            return
        self.path = Path(run_dir) / FILE
        pid = os.getpid()
        self._write(status="running", phase="setup", config=cfg.to_dict(), pid=pid, pid_start=process_start_time(pid),
                    host=socket.gethostname(), argv=sys.argv[1:])

    def update(self, state, total_steps: int, lr: float, run_tokens: int, elapsed: float, memory_gb: float) -> None:
        """After each optimizer step (cheap: writes only at logged steps, evals, the last step and heartbeats).

        state: the trainer's TrainState; run_tokens and elapsed: this session's input tokens and loop seconds."""
        if self.path is None:
            return
        step, history = state.step, state.history
        if self._first_step is None:
            self._first_step = step - 1  # the step this session (a fresh run, or a resume) started from
            # History before it is the resumed checkpoint's (already recorded), except an eval of that step which
            # a stop interrupted and this session ran first.
            self._seen = next((i for i, h in enumerate(history) if h["step"] >= self._first_step), len(history))
        logged, earlier = {}, {}
        for h in history[self._seen:]:
            values = {k: v for k, v in h.items() if k in ("loss", "eval_loss")}
            (logged if h["step"] == step else earlier.setdefault(h["step"], {})).update(values)
        self._seen = len(history)
        for s, values in sorted(earlier.items()):
            self._write(status="running", phase="train", step=s, total_steps=total_steps, **values)
        now = time.monotonic()
        if not logged and step != total_steps and step != self._first_step + 1 and now - self._last_write < HEARTBEAT_S:
            return
        done = step - self._first_step
        span = elapsed - self._last_elapsed
        self._write(status="running", phase="train", step=step, total_steps=total_steps, lr=lr, **logged,
                    tokens_per_second=round((run_tokens - self._last_tokens) / span, 2) if span > 0 else None,
                    memory_gb=round(memory_gb, 3), eta_s=round(elapsed / done * (total_steps - step), 1))
        self._last_tokens, self._last_elapsed = run_tokens, elapsed

    def finish(self, metrics: dict) -> None:
        if self.path is not None:
            self._write(status="finished", metrics=metrics, step=metrics.get("train_steps"))

    def _write(self, **fields) -> None:
        line = (json.dumps({"time": round(time.time(), 3), **fields}, default=str) + "\n").encode()
        try:
            # Never through a symbolic link: a run directory from elsewhere must not make training append to any file.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, line)  # one write: readers never see half of a line from another write
            finally:
                os.close(fd)
        except OSError as e:
            log.warning("live record %s: cannot write (%s); training goes on without it", self.path, e.strerror or e)
            self.path = None
        self._last_write = time.monotonic()
