"""One owner per run directory: the training process holds `{run_dir}/.qwen-sft.lock` for the run's whole life.

The lock is `fcntl.flock` on an open file: the kernel releases it when the process ends, however it ends
(SIGKILL, OOM killer, a crash), so a lock left by a dead run is never mistaken for a live one and no age or
timeout is involved. The file also holds the holder's pid, host and start time, so that a refused second run
can name it, and so that other clients (the web UI) can ask `run_owner(run_dir)` who trains there.

flock is not to be trusted across machines (NFS): a lock file that names another host is not taken over
even when flock grants it; the message says how to clear it once that run is known to be gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".qwen-sft.lock"
_held: dict[int, Path] = {}  # fd -> run_dir, of this process's locks


def _close_in_child() -> None:
    # A forked child (a DataLoader worker) shares the lock's open file: close its copy, so that a worker left
    # running for a moment after its trainer died does not keep the run directory locked. (Closing a duplicate
    # does not release the parent's lock; only LOCK_UN or the last close does.)
    for fd in list(_held):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _read(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def pid_alive(pid) -> bool:
    """Does a process with this pid run on this host (signal 0: nothing is sent)? The one pid check of the
    package (the data cache's builds, run locks, the live record's fallback off Linux)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _describe(info: dict) -> str:
    started = info.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else ""
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}{when}"


def run_owner(run_dir: str | Path) -> dict | None:
    """Who trains in run_dir now: {"pid", "host", "started", "argv", "same_host"}, or None when nobody does.

    A holder on another host cannot be checked from here; it is returned as recorded (same_host False)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        info = _read(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: live (here, or on another host over a filesystem where flock works)
            return {**info, "same_host": info.get("host") == socket.gethostname()}
        fcntl.flock(fd, fcntl.LOCK_UN)
        if info and info.get("host") != socket.gethostname():
            return {**info, "same_host": False}
        return None
    finally:
        os.close(fd)


@contextmanager
def hold(run_dir: Path):
    """Hold run_dir's lock until the block ends (or the process does); refuse when another run holds it."""
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = _read(path)
        raise UserError(f"{run_dir} is in use by another training run ({_describe(info)}); wait for it to end or stop "
                        "it, or train into another run_name") from None
    try:
        stale = _read(path)
        host = socket.gethostname()
        if stale.get("host") not in (None, host):
            raise UserError(f"{run_dir} is locked by a run on another host ({_describe(stale)}), which cannot be "
                            f"checked from {host}; if that run has ended, delete {path} and start again")
        if stale.get("pid") is not None:
            state = "still running, but it no longer holds the lock" if pid_alive(stale.get("pid")) else "not running"
            print(f"note: {run_dir}: taking over the lock left by an earlier run that ended without releasing it "
                  f"({_describe(stale)}; {state})", file=sys.stderr, flush=True)
        info = {"pid": os.getpid(), "host": host, "started": time.time(), "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)  # the file is left as it was found
        raise
    _held[fd] = run_dir
    try:
        yield info
    finally:
        _held.pop(fd, None)
        try:
            os.ftruncate(fd, 0)  # a clean end leaves an empty lock file: nothing stale to report
        finally:
            os.close(fd)  # releases the flock
