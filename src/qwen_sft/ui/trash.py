"""The runs page's trash (/api/trash): a run directory moved aside into `{workspace}/.trash/`, and back (undo).

Nothing is deleted. Moving a run puts it in a folder of its own, `.trash/{time}-{hex}/{name}`, beside a record
`trashed.json` ({"from": its path in the workspace, "time"}); restoring moves it back to where it was, refused
when that name is taken again. Both are one os.rename inside the workspace, which moves the directory entry and
never follows a link: a run named through a symbolic link, a `.trash` that is a link or not a directory, and a
lock file that is not a regular file are refused. A run is never moved while it trains: its lock is held by
the UI for the move itself (runlock.hold), so a trainer that holds it refuses the move and one that starts
meanwhile is refused; and not while the UI runs a merge or an eval of it. The workspace scan skips hidden
folders, so a trashed run leaves the runs table; emptying `.trash/` is left to the user.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import runlock
from ..errors import UserError
from ..fileio import read_text, write_text
from .configs import json_body
from .context import ApiError, inside, relative

TRASH = ".trash"
RECORD = "trashed.json"


def _no_link(ws: Path, name: str, what: str) -> Path:
    """`name` inside the workspace, refused when any part of it is a symbolic link (it is moved by that name)."""
    if not isinstance(name, str):
        raise ApiError(400, f"{what}: expected a path in the workspace")
    path = inside(ws, name, what)
    if Path(os.path.normpath(ws / name)) != path:
        raise ApiError(409, f"{what}: {name} is reached through a symbolic link; the UI moves only the workspace's own "
                            "folders")
    return path


def trash_dir(ws: Path) -> Path:
    folder = ws / TRASH
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ApiError(409, f"{TRASH} in the workspace is not a folder of its own (a link or a file); move it away "
                            "first")
    folder.mkdir(exist_ok=True)
    return folder


def busy_reason(ui, run_dir: Path) -> str | None:
    """Why the run cannot be moved now (it trains, a merge or eval of it runs), or None."""
    rid = relative(ui.settings.workspace, run_dir)
    lock = run_dir / runlock.LOCK_NAME
    if lock.is_symlink() or (lock.exists() and not lock.is_file()):
        return f"{rid}/{runlock.LOCK_NAME} is not a regular file; the UI leaves this run alone"
    owner = runlock.run_owner(run_dir)
    if owner is not None:
        return f"a trainer holds its lock (pid {owner.get('pid', '?')} on {owner.get('host', '?')}); stop it first"
    if ui.store.summary(run_dir)["alive"] is not False:
        return "it is training (or starting); stop it first"
    running = [j for j in ui.jobs.list(owner=rid) if j.status in ("running", "cancelling")]
    if running:
        return f"a {running[0].kind} of it is running; wait for it or cancel it"
    return None


def put(ui, run_id) -> dict:
    ws = ui.settings.workspace
    run_dir = _no_link(ws, run_id, "run")
    ui.store.resolve(run_id)  # a run directory (404 otherwise)
    if run_dir == ws:
        raise ApiError(400, "run: the workspace itself is not moved")
    rid = relative(ws, run_dir)
    reason = busy_reason(ui, run_dir)
    if reason:
        raise ApiError(409, f"{rid} was not moved: {reason}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    entry = trash_dir(ws) / f"{stamp}-{secrets.token_hex(3)}"
    entry.mkdir()
    write_text(entry / RECORD, json.dumps({"from": rid, "time": time.time()}))
    try:
        with runlock.hold(run_dir):  # a trainer starting meanwhile is refused; one that holds it refuses us
            os.rename(run_dir, entry / run_dir.name)
    except (UserError, OSError) as e:
        (entry / RECORD).unlink(missing_ok=True)
        entry.rmdir()
        raise ApiError(409, f"{rid} was not moved: {e}") from None
    ui.store.rescan()
    return {"id": entry.name, "run": rid, "to": relative(ws, entry / run_dir.name),
            "message": f"{rid} moved to {relative(ws, entry / run_dir.name)}"}


def entries(ws: Path) -> list[dict]:
    folder = ws / TRASH
    if folder.is_symlink() or not folder.is_dir():
        return []
    out = []
    for e in sorted(os.scandir(folder), key=lambda e: e.name, reverse=True):
        if not e.is_dir(follow_symlinks=False):
            continue
        try:
            rec = json.loads(read_text(Path(e.path) / RECORD))
        except (OSError, ValueError):
            continue  # not one of ours
        if isinstance(rec, dict) and isinstance(rec.get("from"), str):
            out.append({"id": e.name, "run": rec["from"], "time": rec.get("time")})
    return out


def restore(ui, entry_id) -> dict:
    ws = ui.settings.workspace
    if not isinstance(entry_id, str) or not entry_id or "/" in entry_id or entry_id.startswith("."):
        raise ApiError(400, "id: a trash entry")
    found = next((e for e in entries(ws) if e["id"] == entry_id), None)
    if found is None:
        raise ApiError(404, f"id: {entry_id} is not in {TRASH}")
    entry = ws / TRASH / entry_id
    target = _no_link(ws, found["run"], "run")
    moved = entry / target.name
    if moved.is_symlink() or not moved.is_dir():
        raise ApiError(409, f"{relative(ws, moved)} is not the moved run directory; restored nothing")
    if os.path.lexists(target):
        raise ApiError(409, f"{found['run']} exists again; restored nothing (move or rename it first)")
    target.parent.mkdir(parents=True, exist_ok=True)
    _no_link(ws, relative(ws, target.parent), "run")  # made just now, or a folder of the workspace's own
    os.rename(moved, target)
    (entry / RECORD).unlink(missing_ok=True)
    try:
        entry.rmdir()
    except OSError:
        pass  # something else was put there: left as it is
    ui.store.rescan()
    return {"run": found["run"], "message": f"{found['run']} restored"}


def routes() -> list[Route]:
    return [Route("/put", put_route, methods=["POST"]), Route("/restore", restore_route, methods=["POST"]),
            Route("/list", list_route)]


async def put_route(request: Request):
    ui = request.app.state.ui
    body = await json_body(request)
    return JSONResponse(await run_in_threadpool(put, ui, body.get("run")))


async def restore_route(request: Request):
    ui = request.app.state.ui
    body = await json_body(request)
    return JSONResponse(await run_in_threadpool(restore, ui, body.get("id")))


async def list_route(request: Request):
    ws = request.app.state.ui.settings.workspace
    return JSONResponse({"entries": await run_in_threadpool(entries, ws)})
