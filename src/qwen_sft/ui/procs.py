"""Starting and stopping trainers: `qwen-sft train` as an argv list (never a shell), in a session of its own.

A run the UI starts is `[python, -m, qwen_sft.cli, train, CONFIG, key=value ...]` with the workspace as its
working directory, stdout and stderr appended to `{run_dir}/train.log`, and `start_new_session`: it is not in
the UI's process group, so it outlives the page, a Ctrl-C in the UI's terminal, and the UI itself. The
launch is noted in `{run_dir}/ui_launch.json` (argv, pid, its start time, host), which is how a restarted UI
knows the process before the trainer's live record names it.

Stop sends SIGINT to that one process, named by pid (never a pattern), and only once its identity is proven:
this UI's own child not yet reaped, the holder of the run directory's lock, or a process whose start time is the
one recorded (live.identity_proven). The trainer saves a checkpoint at the next step boundary and exits with 3
(a `qwen-sft train` supervising several processes passes it on); a second Stop sends it again, and the trainer
exits at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from .. import live
from ..data.formats import WORKSPACE_ENV
from ..fileio import nofollow, read_text, write_text
from .context import ApiError, own, relative

LAUNCH_FILE = "ui_launch.json"
LOG_FILE = "train.log"
STOP_SIGNAL = signal.SIGINT  # SIGINT, not SIGTERM: the trainer reads a second SIGTERM within 1 s as the same stop


class Launcher:
    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.host = socket.gethostname()
        self._children: dict[Path, subprocess.Popen] = {}  # launched by this UI process (reaped here)
        self._stops: dict[Path, tuple[int, float]] = {}  # stops sent, and when the first was

    def start(self, run_dir: Path, argv: list[str]) -> dict:
        run_dir.mkdir(parents=True, exist_ok=True)
        # it reads no data file outside the workspace (formats.py)
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "TQDM_MININTERVAL": "5",  # a short log: a progress bar line each 5 s
            WORKSPACE_ENV: str(self.workspace),
        }
        with open(own(run_dir, LOG_FILE), "ab", opener=nofollow) as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} qwen-sft ui: {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(argv, cwd=self.workspace, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self._children[run_dir] = proc
        self._stops.pop(run_dir, None)
        info = {"argv": argv, "pid": proc.pid, "pid_start": live.process_start_time(proc.pid), "host": self.host,
                "time": time.time()}
        write_text(run_dir / LAUNCH_FILE, json.dumps(info, indent=2))
        return info

    def launch(self, run_dir: Path) -> dict | None:
        """The latest launch from a UI into run_dir, with `alive` (and `returncode` when this UI launched it)."""
        try:
            info = json.loads(read_text(run_dir / LAUNCH_FILE))
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or not isinstance(info.get("time"), (int, float)):
            return None
        child = self._children.get(run_dir)
        if child is not None and child.pid == info.get("pid"):
            info["returncode"] = child.poll()  # also reaps it: an exited child is not left a zombie
        info["alive"] = bool(live.trainer_alive(info))
        return info

    def run_dirs(self) -> list[Path]:
        return list(self._children)

    def stops(self, run_dir: Path, since: float = 0.0) -> int:
        """Stops sent to the run's process since `since` (the start of its current session)."""
        count, first = self._stops.get(run_dir, (0, 0.0))
        return count if first >= since else 0

    def stop(self, run_dir: Path, record_proc: dict) -> int:
        """Signal the run's process: the one launched here if it still runs, else the one its live record names.
        Returns how many stops it has been sent; raises ProcessLookupError when neither runs on this host."""
        launch = self.launch(run_dir)
        target = launch if launch is not None and launch["alive"] else record_proc
        if not live.trainer_alive(target):
            raise ProcessLookupError(target.get("pid"))
        child = self._children.get(run_dir)
        ours = child is not None and child.pid == target["pid"] and child.poll() is None  # unreaped: never reused
        if not (ours or live.identity_proven(target, run_dir)):
            raise ApiError(409, f"{relative(self.workspace, run_dir)}: pid {target['pid']} is not proven to be this "
                                "run's trainer (it does not hold the run's lock, and the record gives no start time "
                                "that matches it), so it was not signalled; if it is the trainer, stop it where it "
                                f"runs (Ctrl-C, or kill -INT {target['pid']})")
        os.kill(target["pid"], STOP_SIGNAL)  # PermissionError: another user's process
        count, first = self._stops.get(run_dir, (0, time.time()))
        self._stops[run_dir] = (count + 1, first)
        return count + 1
