"""The runs area (/api/runs): list, detail, live events, start, stop, resume, compare.

Every answer is read from the run directories at the moment it is asked (store.py): a page that reloads,
loses its connection or opens after a UI restart sees the same runs, whoever started them. That reading (and the
form's check, a start, a stop) runs in a worker thread, never on the event loop: a slow or stuck file (a lock file
that is a FIFO, a network filesystem) holds up its own request only.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import yaml
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from . import configs
from ..fileio import read_text
from .context import ApiError, relative
from .procs import LOG_FILE
from .store import _read_yaml, log_tail

HEARTBEAT_S = 15.0
MAX_COMPARED = 8


def routes() -> list[Route]:
    return [
        Route("/list", list_runs), Route("/detail", detail), Route("/log", log), Route("/compare", compare),
        Route("/events", events), Route("/start", start, methods=["POST"]), Route("/stop", stop, methods=["POST"]),
        Route("/resume", resume, methods=["POST"]),
    ]


async def list_runs(request: Request):
    return JSONResponse({"runs": await run_in_threadpool(request.app.state.ui.store.summaries)})


async def detail(request: Request):
    store = request.app.state.ui.store
    return JSONResponse(await run_in_threadpool(lambda: store.detail(store.resolve(request.query_params.get("run")))))


async def log(request: Request):
    store = request.app.state.ui.store
    try:
        lines = min(max(int(request.query_params.get("lines", "200")), 1), 2000)
    except ValueError:
        raise ApiError(400, "lines: expected a number") from None
    run_dir = await run_in_threadpool(store.resolve, request.query_params.get("run"))
    return JSONResponse({"lines": await run_in_threadpool(log_tail, run_dir, lines)})


async def compare(request: Request):
    return JSONResponse(
        await run_in_threadpool(compared, request.app.state.ui.store, request.query_params.getlist("run"))
    )


def compared(store, ids: list[str]) -> dict:
    """The chosen runs' curves, and the config keys on which they differ."""
    if not 1 <= len(ids) <= MAX_COMPARED:
        raise ApiError(400, f"run: name 1 to {MAX_COMPARED} runs")
    dirs = [store.resolve(i) for i in ids]
    runs = [store.detail(d) for d in dirs]
    configs = [trained_config(d, r["config"]) for d, r in zip(dirs, runs)]
    keys = list(dict.fromkeys(k for c in configs for k in c if k not in STARTED_KEYS))
    differences = []
    for key in keys:
        values = [c.get(key) for c in configs]
        if len({json.dumps(_canon(v), sort_keys=True) for v in values}) > 1:
            differences.append({"key": key, "values": values})
    keep = ("id", "name", "status", "step", "total_steps", "loss", "eval_loss", "tokens_per_second", "memory_gb",
            "base_model", "dataset", "settings", "points")
    return {"runs": [{k: r[k] for k in keep} for r in runs], "differences": differences}


# How a run was started, not what it trained (a resume's record): never a difference between runs.
STARTED_KEYS = ("resume_from_checkpoint", "force_resume", "overwrite_output_dir")


def trained_config(run_dir, config: dict | None) -> dict:
    """The settings a run trained with: its record's config, each "auto" replaced by what the trainer resolved it
    to where its config.yaml says (enable_thinking: the mode trained)."""
    cfg = dict(config or {})
    saved = _read_yaml(run_dir / "config.yaml") or {}
    for key, value in cfg.items():
        if value == "auto" and saved.get(key, "auto") != "auto":
            cfg[key] = saved[key]
    return cfg


def _canon(value):
    """A value as compared: 3 and 3.0 are the same number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, list, dict)):
        return value
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    return float(value)


# ---------------------------------------------------------------- live events


async def events(request: Request):
    """Server-sent events: `runs` (the runs table) whenever it changes, and with ?run=ID, `run` (that run's
    detail; after the first, only the points added since: `points_from` says where they go). Every
    (re)connection starts with the whole state, so a page that reloads or reconnects misses nothing."""
    ui = request.app.state.ui
    run_id = request.query_params.get("run")
    run_dir = await run_in_threadpool(ui.store.resolve, run_id) if run_id else None

    async def stream():
        yield "retry: 2000\n\n"
        last_runs, sent, beat = None, {}, time.monotonic()
        while True:
            out = []
            runs = json.dumps(await run_in_threadpool(ui.store.summaries))
            if runs != last_runs:
                out.append(f"event: runs\ndata: {runs}\n\n")
                last_runs = runs
            if run_dir is not None:
                update = await run_in_threadpool(run_update, ui.store, run_dir, sent)
                if update is not None:
                    out.append(f"event: run\ndata: {json.dumps(update)}\n\n")
            if not out and time.monotonic() - beat > HEARTBEAT_S:
                out.append(": keep-alive\n\n")
            if out:
                beat = time.monotonic()
                yield "".join(out)
            await asyncio.sleep(ui.settings.poll_s)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def run_update(store, run_dir, sent: dict) -> dict | None:
    """The run's detail if anything changed since `sent` (this stream's memory), points only from where it was."""
    summary = store.summary(run_dir)
    log_file = run_dir / LOG_FILE
    try:
        log_size = os.lstat(log_file).st_size  # the log's own size: never through a link (it is not read through one)
    except OSError:
        log_size = -1
    sig = json.dumps(summary, sort_keys=True, default=str) + str(log_size)
    if sent.get("sig") == sig:
        return None
    d = store.detail(run_dir)
    same_series = sent.get("rev") == d["rev"] and sent.get("started") == d["started"]
    start = sent["n"] if same_series and sent["n"] <= len(d["points"]) else 0
    sent.update(sig=sig, rev=d["rev"], started=d["started"], n=len(d["points"]))
    d["points"], d["points_from"] = d["points"][start:], start
    return d


# ---------------------------------------------------------------- actions


async def start(request: Request):
    ui = request.app.state.ui
    body = await configs.json_body(request)

    def work():
        result = configs.check(ui.settings, body.get("base"), body.get("values") or {}, ui.busy)
        if not result["ok"]:
            raise ApiError(422, "; ".join(result["general"]) or "the config has problems (see the fields)",
                           result["errors"])
        ui.launcher.start(result["run_dir"], result["argv"])
        return {"run": relative(ui.settings.workspace, result["run_dir"]), "command": result["command"]}

    return JSONResponse(await run_in_threadpool(work))


async def stop(request: Request):
    ui = request.app.state.ui
    body = await configs.json_body(request)
    return JSONResponse(await run_in_threadpool(stop_run, ui, body.get("run")))


def stop_run(ui, run_id) -> dict:
    run_dir = ui.store.resolve(run_id)
    summary = ui.store.summary(run_dir)
    if summary["alive"] is None:
        raise ApiError(409, f"this run's trainer runs on {summary['host']}; stop it there")
    try:
        n = ui.launcher.stop(run_dir, ui.store.state(run_dir).proc)
    except ProcessLookupError:
        raise ApiError(409, f"{summary['id']} is not running") from None
    except PermissionError:
        raise ApiError(403, f"{summary['id']}: its trainer belongs to another user") from None
    if n > 1:
        message = "second stop sent: the trainer exits at once, without saving"
    elif summary["status"] == "starting" or summary["phase"] == "setup":  # no step yet: nothing to save
        message = "stop sent: the run has not started training; it ends before its first step, with nothing to save"
    else:
        message = ("stop sent: the trainer saves a checkpoint at the next step boundary, then exits (Stop again to "
                   "end it at once, without saving)")
    return {"stops": n, "message": message}


async def resume(request: Request):
    ui = request.app.state.ui
    body = await configs.json_body(request)
    return JSONResponse(await run_in_threadpool(resume_run, ui, body.get("run")))


def resume_run(ui, run_id) -> dict:
    """Resume a run from its last complete checkpoint: its own config.yaml with resume_from_checkpoint=auto."""
    run_dir = ui.store.resolve(run_id)
    d = ui.store.detail(run_dir)
    if d["alive"] is not False:
        raise ApiError(409, f"{d['id']} is running; stop it first")
    if d["status"] == "finished":
        raise ApiError(409, f"{d['id']} has finished; start a new run from its config to train further")
    if not d["checkpoints"]:
        raise ApiError(409, f"{d['id']} has no complete checkpoint to resume from")
    cfg_file = run_dir / "config.yaml"
    try:
        cfg = yaml.safe_load(read_text(cfg_file))
    except (OSError, yaml.YAMLError) as e:
        raise ApiError(409, f"{d['id']}: cannot read its config.yaml ({e})") from None
    base = relative(ui.settings.workspace, cfg_file)
    result = configs.check(ui.settings, base, configs.resume_values(ui.settings, run_dir, cfg or {}), ui.busy)
    if not result["ok"]:
        problems = result["general"] + [p for ps in result["errors"].values() for p in ps]
        raise ApiError(422, "cannot resume: " + "; ".join(problems), result["errors"])
    ui.launcher.start(run_dir, result["argv"])
    return {"run": d["id"], "command": result["command"]}
