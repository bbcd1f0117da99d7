"""What the page shows of a run, read from its run directory (the truth, whoever started the run).

A run directory is found by scanning the workspace; its state comes from the trainer's live record
(live.jsonl, read incrementally: only the bytes appended since the last look), or, for a run trained before
the live record existed, from its metrics.json and loss_history.json. Whether a "running" run still runs
is live.trainer_alive's answer; a run the UI launched is also known by its launch file (procs.py) from the
moment its process starts until the trainer writes its first line.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import live
from . import configs
from ..errors import STOPPED_BEFORE_START
from ..fileio import nofollow, read_text
from .context import ApiError, Settings, inside, relative, subfolders
from .procs import LAUNCH_FILE, LOG_FILE, Launcher

MAX_DEPTH = 6  # workspace/sft/outputs/training/<run> is 4 deep
SKIP = {"node_modules", "__pycache__", "site-packages", "venv", "lora_adapters", "logs"}
SCAN_EVERY_S = 3.0
LOG_TAIL_BYTES = 64 * 1024
# The settings the runs table and the comparison show next to the losses.
KEY_SETTINGS = ("lora_rank", "lora_alpha", "learning_rate", "per_device_train_batch_size",
                "gradient_accumulation_steps", "max_steps", "num_train_epochs", "cutoff_len")


def is_run_dir(path: Path) -> bool:
    if (path / live.FILE).is_file() or (path / LAUNCH_FILE).is_file():
        return True
    return (path / "config.yaml").is_file() and (
        (path / "data_report.json").is_file() or (path / "metrics.json").is_file()
    )


@dataclass
class RunState:
    """A run's live record, folded line by line (apply)."""

    offset: int = 0
    status: str | None = None  # running | finished | stopped | failed; None: no record yet
    phase: str | None = None
    session_time: float = 0.0  # when the latest session (a start or a resume) wrote its first line
    updated: float = 0.0
    config: dict | None = None
    proc: dict = field(default_factory=dict)  # pid, pid_start, host of the latest session
    step: int | None = None
    total_steps: int | None = None
    lr: float | None = None
    tokens_per_second: float | None = None
    memory_gb: float | None = None
    eta_s: float | None = None
    error: str | None = None
    detail: str | None = None
    message: str | None = None
    checkpoint: str | None = None
    metrics: dict | None = None
    points: list = field(default_factory=list)  # {"step", "loss"?, "eval_loss"?, "lr"?, "tokens_per_second"?}
    rev: int = 0  # +1 whenever earlier points are replaced (a resumed session redoes steps): readers start over

    def apply(self, rec: dict) -> None:
        status = rec.get("status")
        self.updated = rec.get("time", self.updated)
        if status == "running" and rec.get("phase") == "setup":
            self.session_time = self.updated
            self.config = rec.get("config") or self.config
            self.proc = {k: rec.get(k) for k in ("pid", "pid_start", "host")}
            self.error = self.detail = self.message = self.eta_s = None
        if status:
            self.status = status
        self.phase = rec.get("phase", self.phase)
        for key in ("step", "total_steps", "lr", "tokens_per_second", "eta_s", "error", "detail", "message",
                    "checkpoint", "metrics"):
            if key in rec:
                setattr(self, key, rec[key])
        if rec.get("memory_gb") is not None:
            self.memory_gb = max(self.memory_gb or 0.0, rec["memory_gb"])
        if rec.get("phase") == "train" and isinstance(rec.get("step"), int):
            self.add_point({"step": rec["step"], **{k: rec[k] for k in ("loss", "eval_loss", "lr", "tokens_per_second")
                                                    if rec.get(k) is not None}})

    def add_point(self, point: dict) -> None:
        if self.points and self.points[-1]["step"] >= point["step"]:
            # A resumed session redoes the steps after its checkpoint (its values replace the old session's), or
            # adds to its checkpoint's step (the eval a stop interrupted).
            kept = [p for p in self.points if p["step"] <= point["step"]]
            if kept and kept[-1]["step"] == point["step"]:
                point = {**kept.pop(), **point}
            self.points = kept
            self.rev += 1
        self.points.append(point)


class RunStore:
    def __init__(self, settings: Settings, launcher: Launcher):
        self.settings, self.launcher = settings, launcher
        self.workspace = settings.workspace
        self._states: dict[Path, RunState] = {}
        self._locks: dict[Path, threading.Lock] = {}  # a run's state is read by one request thread at a time
        self._files_cache: dict[Path, tuple] = {}
        self._dirs: list[Path] = []
        self._scanned = 0.0

    # ---------------------------------------------------------------- finding runs

    def run_dirs(self) -> list[Path]:
        if time.monotonic() - self._scanned > SCAN_EVERY_S:
            found: list[Path] = []
            self._scan(self.workspace, 0, found)
            self._dirs, self._scanned = found, time.monotonic()
        return self._dirs + [d for d in self.launcher.run_dirs() if d not in self._dirs]

    def rescan(self) -> None:
        """Look for run directories again at the next question (a run was moved to or from the trash)."""
        self._scanned = 0.0

    def _scan(self, folder: Path, depth: int, found: list[Path]) -> None:
        if is_run_dir(folder):
            found.append(folder)
            return  # a run directory holds no other run
        if depth >= MAX_DEPTH:
            return
        for sub in subfolders(folder, SKIP):
            self._scan(sub, depth + 1, found)

    def resolve(self, run_id: str | None) -> Path:
        """The run directory a request names (a path relative to the workspace)."""
        if not run_id:
            raise ApiError(400, "run: missing")
        path = inside(self.workspace, run_id, "run")
        if not path.is_dir() or not (is_run_dir(path) or path in self.launcher.run_dirs()):
            raise ApiError(404, f"run: {run_id} is not a run directory")
        return path

    # ---------------------------------------------------------------- reading one run

    def state(self, run_dir: Path) -> RunState:
        # Requests read runs in worker threads (never on the event loop): one reader of a run's record at a time,
        # so that two do not fold the same lines twice; a run stuck on its files holds up readers of that run only.
        with self._locks.setdefault(run_dir, threading.Lock()):
            return self._state(run_dir)

    def _state(self, run_dir: Path) -> RunState:
        path = run_dir / live.FILE
        try:
            info = os.lstat(path)
        except OSError:
            return self._from_files(run_dir)
        # A link is not the run's own record (it is never read through one), and a FIFO or device is no record
        # (opening a FIFO waits for a writer for good): the run's saved files instead.
        if not stat.S_ISREG(info.st_mode):
            return self._from_files(run_dir)
        size = info.st_size
        st = self._states.get(run_dir)
        if st is None or size < st.offset:  # new, or the file was replaced: read it all again
            st = self._states[run_dir] = RunState()
        records, st.offset = live.read_records(path, st.offset)
        for rec in records:
            st.apply(rec)
        return st

    def _from_files(self, run_dir: Path) -> RunState:
        """A run without a live record (trained before it existed): its saved config, metrics and loss history."""
        names = ("config.yaml", "metrics.json", "loss_history.json")
        key = tuple(_mtime(run_dir / n) for n in names)
        cached = self._files_cache.get(run_dir)
        if cached and cached[0] == key:
            return cached[1]
        st = RunState()
        st.config = _read_yaml(run_dir / "config.yaml")
        st.metrics = _read_json(run_dir / "metrics.json")
        for h in _read_json(run_dir / "loss_history.json") or []:
            if isinstance(h, dict) and isinstance(h.get("step"), int):
                if st.points and st.points[-1]["step"] == h["step"]:
                    st.points[-1].update(h)
                else:
                    st.add_point(dict(h))
        if st.metrics:
            st.status, st.step = "finished", st.metrics.get("train_steps")
            st.total_steps = st.step
        st.updated = max(k for k in key if k is not None) if any(k is not None for k in key) else 0.0
        self._files_cache[run_dir] = (key, st)
        return st

    def summary(self, run_dir: Path) -> dict:
        st = self.state(run_dir)
        cfg = st.config or {}
        launch = self.launcher.launch(run_dir)
        out = {
            "id": relative(self.workspace, run_dir), "name": run_dir.name, "status": st.status or "unknown",
            "phase": st.phase, "step": st.step, "total_steps": st.total_steps, "eta_s": st.eta_s,
            "loss": _last(st.points, "loss"), "eval_loss": _last(st.points, "eval_loss"),
            "tokens_per_second": st.tokens_per_second, "memory_gb": st.memory_gb,
            "base_model": cfg.get("model_name_or_path"), "dataset": cfg.get("dataset"),
            "settings": {k: cfg.get(k) for k in KEY_SETTINGS if k in cfg},
            "started": st.session_time or None, "updated": st.updated or None, "error": st.error,
            "message": st.message, "checkpoint": st.checkpoint, "host": st.proc.get("host"), "pid": st.proc.get("pid"),
            "launched": launch is not None, "stops": self.launcher.stops(run_dir, st.session_time), "alive": False,
        }
        if st.metrics:
            m = st.metrics
            out.update(loss=m.get("final_train_loss", out["loss"]), eval_loss=m.get("eval_loss") or out["eval_loss"],
                       tokens_per_second=m.get("train_tokens_per_second"), memory_gb=m.get("peak_memory_gb"))
        self._liveness(out, st, launch, run_dir)
        return out

    def _liveness(self, out: dict, st: RunState, launch: dict | None, run_dir: Path) -> None:
        """Is the run's process alive, and what does that make its status?"""
        if launch is not None and launch["time"] > st.session_time:
            # The UI launched a process that has not written its first line (yet).
            if launch["alive"]:
                out.update(status="starting", alive=True, pid=launch["pid"], host=launch["host"])
            elif out["stops"]:  # stopped before it set up the run directory (how it exits then does not matter)
                out.update(status="stopped", message=STOPPED_BEFORE_START, checkpoint=None)
            else:
                code = launch.get("returncode")
                out.update(status="failed", error="the trainer "
                                                  f"exited{f' with code {code}' if code is not None else ''} "
                                                  f"before it started the run: {last_log_line(run_dir) or 'no output'}")
            return
        if st.status != "running":
            return
        alive = live.trainer_alive(st.proc, run_dir)
        if alive is None:  # on another node of a multi-node run, or another machine sharing the directory
            out.update(alive=None)
        elif alive or (launch is not None and launch["alive"]):
            out.update(alive=True, status="stopping" if out["stops"] else "running")
        elif out["stops"] > 1:
            out.update(status="stopped", message="stopped at once by a second Stop (no checkpoint at this step)",
                       checkpoint=_latest_checkpoint(run_dir))
        else:
            out.update(status="died", error=f"the trainer (pid {st.proc.get('pid')}) ended without a final status: "
                                            "killed "
                                            f"(SIGKILL, out of memory) or interrupted twice; last log line: "
                                            f"{last_log_line(run_dir) or '(no log: not started from this UI)'}")

    def summaries(self) -> list[dict]:
        runs = [self.summary(d) for d in self.run_dirs() if d.is_dir()]
        return sorted(runs, key=lambda r: -(r["updated"] or r["started"] or 0))

    def detail(self, run_dir: Path) -> dict:
        from ..data.report import format_report

        st = self.state(run_dir)
        out = self.summary(run_dir)
        report = _read_json(run_dir / "data_report.json")
        try:
            report_text = format_report(report) if report else None
        except (KeyError, TypeError):  # a report from another version
            report_text = None
        checkpoints = _checkpoints(run_dir)
        out.update(
            config=st.config,
            points=st.points,
            rev=st.rev,
            detail=st.detail,
            data_report=report,
            data_report_text=report_text,
            checkpoints=[{"name": p.name, "path": relative(self.workspace, p)} for p in checkpoints],
            config_file=relative(self.workspace, run_dir / "config.yaml")
            if (run_dir / "config.yaml").is_file()
            else None,
            log=log_tail(run_dir),
            log_file=relative(self.workspace, run_dir / LOG_FILE) if (run_dir / LOG_FILE).exists() else None,
        )
        launch = self.launcher.launch(run_dir)
        out["retry"] = configs.launch_values(launch.get("argv")) if launch else None  # the launch's settings
        out["can_stop"] = bool(out["alive"]) and out["host"] in (None, self.launcher.host)
        out["can_resume"] = (not out["alive"] and out["status"] not in ("finished", "starting") and bool(checkpoints)
                             and st.config is not None)
        return out


# ---------------------------------------------------------------- files


def log_tail(run_dir: Path, lines: int = 60, name: str = LOG_FILE) -> list[str]:
    """The last lines of the log of a run the UI started, or of another log in its directory (progress bars:
    the last state of each line)."""
    path = run_dir / name
    try:
        with open(path, "rb", opener=nofollow) as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - LOG_TAIL_BYTES))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    out = [line.rstrip("\r").split("\r")[-1] for line in data.split("\n")]
    while out and not out[-1].strip():
        out.pop()
    return out[-lines:]


def last_log_line(run_dir: Path, name: str = LOG_FILE) -> str | None:
    return next((line.strip() for line in reversed(log_tail(run_dir, 20, name)) if line.strip()), None)


def _checkpoints(run_dir: Path) -> list[Path]:
    from ..checkpoint import list_checkpoints, read_run_id

    return list_checkpoints(run_dir, read_run_id(run_dir))  # the directory's own run's: what auto resumes from


def _latest_checkpoint(run_dir: Path) -> str | None:
    found = _checkpoints(run_dir)
    return str(found[-1]) if found else None


def _last(points: list, key: str):
    return next((p[key] for p in reversed(points) if key in p), None)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _read_json(path: Path):
    try:
        return json.loads(read_text(path))
    except (OSError, ValueError):
        return None


def _read_yaml(path: Path) -> dict | None:
    try:
        data = yaml.safe_load(read_text(path))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None
