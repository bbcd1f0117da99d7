"""Long work the UI runs for the page (a data check, a merge, an eval): a child process, its log, progress, cancel.

A job is one child process started from an argv list (never a shell) with the workspace as working directory,
in a session of its own, stdout and stderr appended to a log file. Its progress is read from that log: the last
line `progress: DONE/TOTAL WHAT` (the UI's own children print those), else the last line, with the time it has
run. Cancel sends SIGINT to the job's process group (its own session: the child and what it started, nothing
else; named by the pid of a child this process has not reaped, so never a reused pid), then SIGKILL if it has
not ended after KILL_AFTER_S. A job may write a JSON result file; the page reads it when the job has finished.

Jobs are this UI process's children, listed in its memory; what they make (a merged model, an eval report) is
in files, which the pages read whoever made them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..data.formats import WORKSPACE_ENV
from ..fileio import nofollow, read_text
from .context import ApiError
from .store import log_tail

KILL_AFTER_S = 10.0
KEEP_FINISHED = 50  # finished jobs remembered (the newest)
PROGRESS = re.compile(r"^progress: (\d+)/(\d+)\s*(.*)$")


@dataclass
class Job:
    id: str
    kind: str  # check | merge | eval
    title: str
    argv: list[str]
    log: Path
    result: Path | None = None
    owner: str | None = None  # the run (or data file) the job works for: one job of a kind per owner at a time
    proc: subprocess.Popen | None = field(default=None, repr=False)
    started: float = 0.0
    ended: float | None = None
    returncode: int | None = None
    cancelled: bool = False

    def poll(self) -> None:
        if self.returncode is None and self.proc is not None:
            code = self.proc.poll()
            if code is not None:
                self.returncode, self.ended = code, time.time()

    @property
    def status(self) -> str:
        self.poll()
        if self.returncode is None:
            return "cancelling" if self.cancelled else "running"
        if self.cancelled:
            return "cancelled"
        return "finished" if self.returncode == 0 else "failed"

    def summary(self, lines: int = 40) -> dict:
        status = self.status
        tail = log_tail(self.log.parent, lines, self.log.name)
        progress = {"done": None, "total": None, "text": next((t for t in reversed(tail) if t.strip()), "")}
        for line in reversed(tail):
            m = PROGRESS.match(line.strip())
            if m:
                progress.update(done=int(m[1]), total=int(m[2]), text=m[3])
                break
        out = {"id": self.id, "kind": self.kind, "title": self.title, "owner": self.owner, "status": status,
               "started": self.started, "ended": self.ended, "elapsed_s": (self.ended or time.time()) - self.started,
               "returncode": self.returncode, "progress": progress, "log": tail, "error": None, "result": None}
        if status == "failed":
            # The CLI's own one-line error ("error: ..."), else the last line.
            out["error"] = next((t[7:] for t in reversed(tail) if t.startswith("error: ")), progress["text"] or
                                f"exited with code {self.returncode}")
        if status in ("finished", "failed") and self.result is not None and self.result.is_file():
            try:
                out["result"] = json.loads(read_text(self.result))
            except (OSError, ValueError):
                pass
        return out


class Jobs:
    def __init__(self, workspace: Path):
        self.workspace = workspace
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, title: str, argv: list[str], log: Path, result: Path | None = None,
              owner: str | None = None) -> Job:
        with self._lock:
            busy = self.running(kind, owner) if owner else None
            if busy is not None:
                raise ApiError(409, f"a {kind} of {owner} is running already; wait for it or cancel it")
            job = Job(secrets.token_hex(6), kind, title, argv, log, result, owner)
            log.parent.mkdir(parents=True, exist_ok=True)
            if result is not None:
                result.unlink(missing_ok=True)  # a result of an earlier job of the same name is not this one's
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1",
                   WORKSPACE_ENV: str(self.workspace)}  # it reads no data file outside the workspace (formats.py)
            with open(log, "ab", opener=nofollow) as f:
                f.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} qwen-sft ui: {' '.join(argv)}\n".encode())
                f.flush()
                job.proc = subprocess.Popen(argv, cwd=self.workspace, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                            stderr=subprocess.STDOUT, start_new_session=True)
            job.started = time.time()
            self._jobs[job.id] = job
            self._forget_old()
            return job

    def running(self, kind: str, owner: str) -> Job | None:
        return next((j for j in self._jobs.values() if j.kind == kind and j.owner == owner
                     and j.status in ("running", "cancelling")), None)

    def get(self, job_id: str | None) -> Job:
        if job_id is not None and not isinstance(job_id, str):
            raise ApiError(400, f"id: expected a job id (text), got {type(job_id).__name__}")
        job = self._jobs.get(job_id or "")
        if job is None:
            raise ApiError(404, f"job {job_id!r}: no such job (jobs are remembered until the UI restarts)")
        return job

    def list(self, kind: str | None = None, owner: str | None = None) -> list[Job]:
        return [
            j for j in self._jobs.values() if (kind is None or j.kind == kind) and (owner is None or j.owner == owner)
        ]

    def cancel(self, job: Job) -> None:
        """SIGINT to the job's process group now, SIGKILL after KILL_AFTER_S if it still runs."""
        job.poll()
        if job.returncode is not None:
            return
        job.cancelled = True
        _signal_group(job, signal.SIGINT)

        def kill_later():
            time.sleep(KILL_AFTER_S)
            _signal_group(job, signal.SIGKILL)

        threading.Thread(target=kill_later, daemon=True).start()

    def _forget_old(self) -> None:
        done = sorted((j for j in self._jobs.values() if j.status not in ("running", "cancelling")),
                      key=lambda j: j.started)
        for j in done[:max(0, len(done) - KEEP_FINISHED)]:
            del self._jobs[j.id]


def _signal_group(job: Job, sig: int) -> None:
    job.poll()
    if job.returncode is not None:  # reaped: its pid may belong to another process now
        return
    try:
        os.killpg(job.proc.pid, sig)  # its own session: pgid == pid
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- routes (/api/jobs)


def routes() -> list[Route]:
    return [Route("/get", get_job), Route("/list", list_jobs), Route("/cancel", post_cancel, methods=["POST"])]


async def get_job(request: Request):
    jobs = request.app.state.ui.jobs
    return JSONResponse(await run_in_threadpool(lambda: jobs.get(request.query_params.get("id")).summary()))


async def list_jobs(request: Request):
    jobs = request.app.state.ui.jobs
    q = request.query_params
    return JSONResponse({"jobs": await run_in_threadpool(
        lambda: [j.summary(lines=5) for j in jobs.list(q.get("kind"), q.get("owner"))])})


async def post_cancel(request: Request):
    from .configs import json_body

    jobs = request.app.state.ui.jobs
    job = jobs.get((await json_body(request)).get("id"))
    jobs.cancel(job)
    return JSONResponse(await run_in_threadpool(job.summary))
