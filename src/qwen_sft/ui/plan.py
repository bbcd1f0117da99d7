"""POST /api/plan: `qwen-sft plan` for the start form, as the form's config stands.

Body: {"base": a base config (as /api/configs/check takes it), "values": {field: text typed}, "gpu": a card name?,
"memory": GiB?, "gpus": N?}. Answer: the object `qwen-sft plan --json` prints (peak_gib, fits, tokens_per_s,
wall_s, breakdown, card, suggestions, ...). The config is checked as the start form checks it (the CLI's validation,
every path inside the workspace); the plan runs in a worker thread (one at a time: plan.sim.LOCK), and an answer that
takes longer than PLAN_TIMEOUT_S is a 503 (the plan finishes in its thread and is remembered for the next ask).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import UserError
from .configs import base_path, check, json_body
from .context import ApiError, inside

PLAN_TIMEOUT_S = 90
SUGGESTIONS_BUDGET_S = 20


def workspace_paths(ws: Path, cfg):
    """cfg with its relative paths read from the workspace (train runs there; this server may not)."""
    def at(p):
        return str(ws / p) if p and not Path(p).is_absolute() else p

    model = cfg.model_name_or_path
    if not Path(model).is_absolute() and (ws / model).exists():
        model = str(ws / model)
    dataset = [at(d) for d in cfg.dataset] if isinstance(cfg.dataset, list) else at(cfg.dataset)
    cache_dir = cfg.data_cache_dir if cfg.data_cache_dir in (None, "auto") else at(cfg.data_cache_dir)
    return dataclasses.replace(cfg, model_name_or_path=model, dataset=dataset, output_dir=at(cfg.output_dir),
                               data_cache_dir=cache_dir)


def card_of(body: dict):
    from ..plan import cards
    from ..plan.command import local_card

    gpu, memory = body.get("gpu"), body.get("memory")
    if gpu not in (None, "") and memory not in (None, ""):
        raise ApiError(400, "gpu, memory: give one of them", {"gpu": ["give a card or its memory, not both"]})
    if gpu not in (None, ""):
        try:
            return cards.find(str(gpu))
        except UserError as e:
            raise ApiError(400, str(e), {"gpu": [str(e)]}) from None
    if memory not in (None, ""):
        try:
            gib = float(memory)
        except (TypeError, ValueError):
            gib = math.nan
        if not math.isfinite(gib) or gib <= 0:
            raise ApiError(400, f"memory: the card's memory in GiB, a number > 0, got {memory!r}",
                           {"memory": ["a number of GiB > 0"]})
        return cards.custom(gib)
    return local_card()


def plan_config(settings, body: dict):
    """The config the form describes, checked as the start form checks it; ApiError (400, by field) otherwise."""
    from ..config import load_config

    values = body.get("values") or {}
    result = check(settings, body.get("base"), values)  # the CLI's validation and the workspace rules
    errors = {k: v for k, v in result["errors"].items() if k != "run_name"}  # a finished run's name plans fine
    if errors or result["general"]:
        raise ApiError(400, "the config is not valid: " + "; ".join(
            [p for ps in errors.values() for p in ps] + result["general"]), errors)
    path, _ = base_path(settings, body.get("base"))
    cfg = load_config(path, [f"{k}={v}" for k, v in values.items()])
    inside(settings.workspace, str(Path(cfg.output_dir) / cfg.run_name), "run_name")
    return workspace_paths(settings.workspace, cfg)


async def post_plan(request: Request):
    from ..plan import core, report

    ui = request.app.state.ui
    body = await json_body(request)
    gpus = body.get("gpus", 1)
    if not isinstance(gpus, int) or isinstance(gpus, bool) or not 1 <= gpus <= 1024:
        raise ApiError(400, f"gpus: a whole number of GPUs >= 1, got {gpus!r}", {"gpus": ["a whole number >= 1"]})
    cfg = await run_in_threadpool(plan_config, ui.settings, body)
    card = await run_in_threadpool(card_of, body)

    def work():
        return core.plan(cfg, card, gpus=gpus, cuda=True, budget_s=SUGGESTIONS_BUDGET_S)

    try:
        result = await asyncio.wait_for(run_in_threadpool(work), PLAN_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise ApiError(503, f"plan: no answer within {PLAN_TIMEOUT_S} s (another plan may be running); ask again "
                            "in a moment") from None
    except UserError as e:
        raise ApiError(400, str(e)) from None
    return JSONResponse({**result, "breakdown_labels": report.LABELS})
