"""The one ASGI app: a router per area under /api, the static page, and the security layer in front of all.

A new area (#16: data, chat, merge, eval) is a module with `routes()` mounted here under /api/<area>, and a
page in static/app.js; it gets the security layer, the error format and the browser-test setup for free.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from . import chat, configs, data, jobs, models, ops, plan, runs, trash
from .context import ApiError, Settings
from .procs import Launcher
from .security import Guard
from .store import RunStore

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("qwen_sft.ui")


class UI:
    """What the routers share (request.app.state.ui)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.launcher = Launcher(settings.workspace)
        self.store = RunStore(settings, self.launcher)
        self.jobs = jobs.Jobs(settings.workspace)  # checks, merges, evals (#16)
        self.data = data.DataArea(settings.workspace)
        self.chat = chat.ChatWorkers(settings.workspace)

    def busy(self, run_dir: Path) -> bool:
        """A trainer runs in run_dir (or may: it runs on another host)."""
        return run_dir.is_dir() and self.store.summary(run_dir)["alive"] is not False


def create_app(settings: Settings) -> Starlette:
    async def index(request: Request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def session(request: Request):
        return JSONResponse({"version": __version__, "workspace": str(settings.workspace),
                             "allow_remote_code": settings.allow_remote_code, "token": settings.token is not None})

    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message, "fields": exc.fields}, status_code=exc.status)

    async def not_found(request: Request, exc):
        return JSONResponse({"error": f"{request.url.path}: not found"}, status_code=404)

    async def server_error(request: Request, exc: Exception):
        log.exception("%s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/session", session),
            Mount("/api/runs", routes=runs.routes()),
            Mount("/api/configs", routes=configs.routes()),
            Mount("/api/data", routes=data.routes()),
            Mount("/api/models", routes=models.routes()),
            Mount("/api/jobs", routes=jobs.routes()),
            Mount("/api/chat", routes=chat.routes()),
            Mount("/api/ops", routes=ops.routes()),
            Mount("/api/trash", routes=trash.routes()),
            Route("/api/plan", plan.post_plan, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC)),
        ],
        middleware=[Middleware(Guard, settings=settings)],
        exception_handlers={ApiError: api_error, 404: not_found, Exception: server_error},
    )
    app.state.ui = UI(settings)
    return app
