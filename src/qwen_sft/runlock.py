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
import math
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError
from .fileio import NotRegularFile, open_run_file, read_fd

LOCK_NAME = ".qwen-sft.lock"
READ_LIMIT = 1 << 20  # a lock file holds a line of JSON (pid, host, start time, argv)
LATEST = 253402300799  # 9999-12-31: the latest start time a clock can show
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


def _read(fd: int, path: Path) -> dict:
    """The lock file's fields, each only when it has its type (`_fields`); {} when it is empty or unreadable."""
    try:
        raw = json.loads(read_fd(fd, READ_LIMIT, path).decode("utf-8") or "{}")
    except (OSError, ValueError, RecursionError):
        return {}
    return _fields(raw)


def _fields(raw) -> dict:
    """pid (a positive int), host (text), started (a finite time a clock can show), argv (a list of text): a field
    of another type or range (a file edited by hand, written by something else, "started": 1e300 or NaN) is
    dropped, so that it names less of the holder and never fails a caller."""
    if not isinstance(raw, dict):
        return {}
    out = {}
    pid, host, started, argv = (raw.get(k) for k in ("pid", "host", "started", "argv"))
    if type(pid) is int and 0 < pid < 2**31:
        out["pid"] = pid
    if isinstance(host, str) and host:
        out["host"] = host
    if type(started) in (int, float) and math.isfinite(started) and 0 <= started <= LATEST:
        out["started"] = started
    if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
        out["argv"] = argv
    return out


def pid_alive(pid) -> bool:
    """Whether a process of this pid exists on this host (another user's counts; signal 0: nothing is sent). The
    one pid check of the package (run locks, the data cache's builds, the live record's fallback off Linux)."""
    if type(pid) is not int or not 0 < pid < 2**31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _describe(info: dict) -> str:
    try:
        when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
    except (KeyError, OverflowError, ValueError, OSError):
        when = ""
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}{when}"


def run_owner(run_dir: str | Path) -> dict | None:
    """Who trains in run_dir now: {"pid", "host", "started", "argv", "same_host"}, or None when nobody does.

    A holder on another host cannot be checked from here; it is returned as recorded (same_host False)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = open_run_file(path)  # a link, a FIFO, a directory there: no run can hold it (hold refuses them)
    except OSError:
        return None
    try:
        info = _read(fd, path)
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
    try:
        fd = open_run_file(path, os.O_RDWR | os.O_CREAT)  # never through a link: it would truncate the link's target
    except NotRegularFile as e:
        raise UserError(f"{path}: {e.strerror}; it is the run directory's lock file: remove it and start again") \
            from None
    except OSError as e:
        raise UserError(f"{path}: cannot open the run directory's lock file: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = _read(fd, path)
        os.close(fd)
        raise UserError(f"{run_dir} is in use by another training run ({_describe(info)}); wait for it to end or stop "
                        "it, or train into another run_name") from None
    try:
        stale = _read(fd, path)
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
