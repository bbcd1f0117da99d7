"""The chat area (/api/chat): two panes on the same prompt (say base vs tuned), each model in a worker process.

A worker is `python -m qwen_sft.ui.chatworker MODEL` (chatworker.py), started by the UI and ended by it: loading
other models ends the workers no pane uses any more (their memory goes with the process), and a worker that
crashes fails its generations with the reason while the UI stays up (the next load starts a fresh one). A pane
showing the base of an adapter that the other pane shows is served by that adapter's worker with the adapter
disabled, not by a second copy of the base.

A generation is a POST whose answer is a stream of server-sent events (`text`, then `done` or `error`), read by
the page with fetch; closing it, or /api/chat/stop, cancels the generation at its next token.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .configs import json_body
from .context import ApiError, relative
from ..runfiles import is_adapter_dir
from .models import adapter_base, model_ref
from .store import last_log_line

END_GRACE_S = 5.0
MAX_MESSAGES, MAX_CHARS = 200, 1_000_000
LIMITS = {"temperature": (1e-3, 10.0), "top_p": (1e-3, 1.0), "top_k": (0, 10_000), "max_new_tokens": (1, 32_768)}


class Worker:
    """One model in one child process; events routed by generation id to the requests waiting for them."""

    def __init__(self, key: str, model: str, workspace: Path, log: Path):
        self.key, self.model, self.log = key, model, log
        self.state, self.info, self.error = "loading", None, None
        self.started = time.time()
        self.listeners: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._lock = threading.Lock()
        with open(log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "qwen_sft.ui.chatworker", model], cwd=workspace,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, text=True, encoding="utf-8", bufsize=1,
                                         start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a library printing to stdout: not ours
            if ev.get("event") == "ready":
                self.state, self.info = "ready", ev
            elif ev.get("event") == "failed":
                self.state, self.error = "failed", ev.get("message")
            else:
                self._deliver(ev.get("id"), ev)
        code = self.proc.wait()
        if self.state in ("loading", "ready"):
            self.state = "crashed"
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            self.error = f"the model worker ended ({how}): {self.last_log_line() or 'no output'}"
        for rid in list(self.listeners):
            self._deliver(rid, {"event": "error", "id": rid, "message": self.error or "the model worker ended"})

    def _deliver(self, rid, ev: dict) -> None:
        target = self.listeners.get(rid)
        if target is not None:
            loop, q = target
            loop.call_soon_threadsafe(q.put_nowait, ev)

    def send(self, cmd: dict) -> None:
        with self._lock:
            try:
                self.proc.stdin.write(json.dumps(cmd, ensure_ascii=False) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                raise ApiError(409, self.error or "the model worker has ended; load the model again") from None

    def end(self) -> None:
        """Close its stdin (it exits), then SIGTERM and SIGKILL its process group if it lingers."""
        self.state = "ended"
        with self._lock:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

        def escalate():
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    self.proc.wait(timeout=END_GRACE_S)
                    return
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, sig)  # our child, not yet reaped: its own session

        threading.Thread(target=escalate, daemon=True).start()

    def last_log_line(self) -> str | None:
        return last_log_line(self.log.parent, self.log.name)

    def describe(self, workspace: Path) -> dict:
        return {"key": relative(workspace, Path(self.key)) if Path(self.key).is_absolute() else self.key,
                "state": self.state, "error": self.error, "info": self.info, "pid": self.proc.pid,
                "started": self.started}


class ChatWorkers:
    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.workers: dict[str, Worker] = {}
        self.panes: list[dict] = []
        self.logs = Path(tempfile.mkdtemp(prefix="qwen-sft-ui-chat-"))  # the workers' stderr
        atexit.register(shutil.rmtree, self.logs, ignore_errors=True)
        self._lock = threading.Lock()

    def plan(self, names: list[str]) -> list[dict]:
        """Which worker serves each pane, and with the adapter on or off."""
        ws = self.workspace
        refs = [model_ref(ws, n, f"pane {i + 1}") for i, n in enumerate(names)]
        adapters = {r: adapter_base(ws, Path(r)) for r in refs if Path(r).is_dir() and is_adapter_dir(Path(r))}
        panes = []
        for name, ref in zip(names, refs):
            if ref in adapters:
                panes.append({"model": name, "worker": ref, "adapter": True})
                continue
            host = next((a for a, base in adapters.items() if base == ref), None)
            panes.append({"model": name, "worker": host or ref, "adapter": False if host else None})
        return panes

    def load(self, names: list[str]) -> dict:
        panes = self.plan(names)
        with self._lock:
            wanted = {p["worker"] for p in panes}
            for key in [k for k in self.workers if k not in wanted]:
                self.workers.pop(key).end()  # no pane uses it: its process ends, its memory is freed
            for key in wanted:
                w = self.workers.get(key)
                if w is None or w.state in ("failed", "crashed", "ended"):
                    if w is not None:
                        w.end()
                    log = self.logs / f"worker-{secrets.token_hex(4)}.log"
                    self.workers[key] = Worker(key, key, self.workspace, log)
            self.panes = panes
        return self.state()

    def unload(self) -> None:
        with self._lock:
            for w in self.workers.values():
                w.end()
            self.workers.clear()
            self.panes = []

    def state(self) -> dict:
        return {"panes": [{**p, "worker": relative(self.workspace, Path(p["worker"])) if Path(p["worker"]).is_absolute()
                           else p["worker"]} for p in self.panes],
                "workers": [w.describe(self.workspace) for w in self.workers.values()]}

    def for_pane(self, name: str) -> tuple[Worker, dict]:
        pane = next((p for p in self.panes if p["model"] == name), None)
        worker = self.workers.get(pane["worker"]) if pane else None
        if worker is None:
            raise ApiError(409, f"{name}: not loaded; load it first")
        if worker.state != "ready":
            raise ApiError(409, worker.error or f"{name}: still loading")
        return worker, pane


# ---------------------------------------------------------------- requests


def _number(body: dict, key: str, kind=float):
    value = body.get(key)
    if value is None:
        return None
    lo, hi = LIMITS[key]
    number = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))  # NaN, inf: no
    if isinstance(value, bool) or not number or (kind is int and int(value) != value):
        shown = repr(value)[:40]
        raise ApiError(400, f"{key}: expected a {'whole ' if kind is int else ''}number, got {shown}",
                       {key: [f"{key}: expected a number"]})
    if not lo <= value <= hi:
        raise ApiError(400, f"{key}: must be in [{lo:g}, {hi:g}], got {value}", {key: [f"{key}: must be in [{lo:g}, "
                                                                                       f"{hi:g}]"]})
    return kind(value)


BODY_KEYS = ("model", "messages", "system", "enable_thinking", "max_new_tokens", "sampling")
SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k")


def generation_command(body: dict) -> dict:
    for keys, given, where in ((BODY_KEYS, body, ""), (SAMPLING_KEYS, body.get("sampling"), "sampling.")):
        unknown = [k for k in given if k not in keys] if isinstance(given, dict) else []
        if unknown:  # a setting that would be ignored (a typo, a misplaced key) is refused, not dropped
            raise ApiError(400, f"{where}{unknown[0]}: not a generation setting (settable: "
                                f"{where}{f', {where}'.join(keys)})",
                           {unknown[0]: [f"{unknown[0]}: not a generation setting"]})
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
        raise ApiError(400, f"messages: a list of 1 to {MAX_MESSAGES} messages")
    for m in messages:
        if (
            not isinstance(m, dict)
            or m.get("role") not in ("user", "assistant")
            or not isinstance(m.get("content"), str)
        ):
            raise ApiError(400, "messages: each is {role: user | assistant, content: text}")
    if messages[-1]["role"] != "user":
        raise ApiError(400, "messages: the last one is the user's")
    system = body.get("system") or ""
    if not isinstance(system, str):
        raise ApiError(400, "system: text")
    if sum(len(m["content"]) for m in messages) + len(system) > MAX_CHARS:
        raise ApiError(413, f"the conversation is over {MAX_CHARS} characters")
    thinking = body.get("enable_thinking")
    if thinking not in (None, True, False):
        raise ApiError(400, "enable_thinking: true, false or null (the model's own)")
    sampling = body.get("sampling") or {}
    if not isinstance(sampling, dict) or not isinstance(sampling.get("do_sample", False), bool):
        raise ApiError(400, "sampling: {do_sample: true | false, temperature, top_p, top_k}")
    return {"cmd": "generate", "messages": ([{"role": "system", "content": system}] if system.strip() else []) + [
                {"role": m["role"], "content": m["content"]} for m in messages],
            "enable_thinking": thinking, "max_new_tokens": _number(body, "max_new_tokens", int) or 512,
            "sampling": {"do_sample": sampling.get("do_sample"), "temperature": _number(sampling, "temperature"),
                         "top_p": _number(sampling, "top_p"), "top_k": _number(sampling, "top_k", int)}}


def routes() -> list[Route]:
    return [
        Route("/load", post_load, methods=["POST"]), Route("/state", get_state),
        Route("/unload", post_unload, methods=["POST"]), Route("/generate", post_generate, methods=["POST"]),
        Route("/stop", post_stop, methods=["POST"]),
    ]


async def post_load(request: Request):
    chat = request.app.state.ui.chat
    names = (await json_body(request)).get("panes")
    if not isinstance(names, list) or not 1 <= len(names) <= 2 or not all(isinstance(n, str) for n in names):
        raise ApiError(400, "panes: one or two models (paths in the workspace, or hub ids)")
    return JSONResponse(await run_in_threadpool(chat.load, names))


async def get_state(request: Request):
    return JSONResponse(request.app.state.ui.chat.state())


async def post_unload(request: Request):
    await run_in_threadpool(request.app.state.ui.chat.unload)
    return JSONResponse({"ok": True})


async def post_generate(request: Request):
    chat = request.app.state.ui.chat
    body = await json_body(request)
    cmd = generation_command(body)  # first: a bad setting is named whether or not the model is loaded
    if not isinstance(body.get("model"), str):
        raise ApiError(400, "model: the pane's model (text)")
    worker, pane = chat.for_pane(body["model"])
    rid = secrets.token_hex(8)
    cmd.update(id=rid, adapter=pane["adapter"] is not False, model_name=pane["model"])
    q: asyncio.Queue = asyncio.Queue()
    ahead = len(worker.listeners)  # generations this worker finishes first (it answers one at a time)
    worker.listeners[rid] = (asyncio.get_running_loop(), q)
    try:
        worker.send(cmd)
    except ApiError:
        worker.listeners.pop(rid, None)
        raise

    async def stream():
        finished = False
        yield f"event: start\ndata: {json.dumps({'id': rid, 'model': pane['model'], 'ahead': ahead})}\n\n"
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(q.get(), timeout=15)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"event: {ev['event']}\ndata: {json.dumps(ev, ensure_ascii=False)}\n\n"
                if ev["event"] in ("done", "error"):
                    finished = True
                    return
        finally:
            worker.listeners.pop(rid, None)
            if not finished:  # the page went away: stop generating for it
                try:
                    worker.send({"cmd": "cancel", "id": rid})
                except ApiError:
                    pass

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def post_stop(request: Request):
    chat = request.app.state.ui.chat
    rid = str((await json_body(request)).get("id"))
    for w in list(chat.workers.values()):
        if rid in w.listeners:
            w.send({"cmd": "cancel", "id": rid})
            return JSONResponse({"ok": True})
    raise ApiError(404, f"generation {rid}: not running")
