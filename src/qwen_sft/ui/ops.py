"""Merge and eval from a run's page (/api/ops): `qwen-sft merge --validate` and `qwen-sft eval` as jobs.

Both are the CLI itself (argv lists, never a shell) run in the workspace, with their output appended to a log
in the run directory; what they make goes into the run directory too, where the page finds it whoever ran them:
- merge: `qwen-sft merge RUN/lora_adapters -o RUN/merged --validate --dtype D [--overwrite]`, log RUN/merge.log;
  the page shows the validation report (the lines merge prints) and whether it passed;
- eval: `qwen-sft eval MODEL --data FILE... --out RUN/eval --n N --max_new_tokens M`, log RUN/eval.log; the page
  shows metrics.json as a base / tuned table and generations.jsonl side by side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .configs import json_body
from ..fileio import nofollow, read_text
from ..runfiles import DTYPE_NAMES, EVAL_KEYS
from .context import ApiError, inside, own, relative
from .data import data_path
from .models import adapter_base
from .heldout import SPLIT_FILE
from .store import _read_json, _read_yaml, log_tail

MERGED, EVAL = "merged", "eval"
MERGE_LOG, EVAL_LOG = "merge.log", "eval.log"
VALIDATION = "validation"  # the eval data choice "the run's own validation split"
MAX_GENERATIONS = 100


def heldout_choices(store, run_dir: Path) -> dict:
    """What the eval's held-out data defaults to: the run's validation split ({val_size, val_rows}, or None when
    it held nothing out), and the run's training data (files the page warns about when chosen)."""
    cfg = _read_yaml(run_dir / "config.yaml") or store.state(run_dir).config or {}
    data = cfg.get("dataset")
    train = []
    for d in [data] if isinstance(data, str) else [d for d in data or [] if isinstance(d, str)]:
        try:  # as the data page names files: relative to the workspace
            train.append(relative(store.workspace, inside(store.workspace, d, "dataset")))
        except ApiError:
            train.append(d)
    val_size = cfg.get("val_size") or 0
    report = _read_json(run_dir / "data_report.json") or {}
    split = (
        {"val_size": val_size, "val_rows": report.get("val_rows")}
        if isinstance(val_size, (int, float)) and val_size > 0
        else None
    )
    return {"split": split, "train_data": train}


def run_parts(ui, run_id: str | None) -> tuple[Path, Path]:
    """(run directory, its adapter directory); refused while the run trains or when it saved no adapter."""
    run_dir = ui.store.resolve(run_id)
    adapter = own(run_dir, "lora_adapters")
    summary = ui.store.summary(run_dir)
    if summary["alive"] is not False:
        raise ApiError(409, f"{summary['id']} is still training; merge and evaluate it when it has finished")
    if not (adapter / "adapter_config.json").is_file():
        raise ApiError(409, f"{summary['id']} has no saved adapter (lora_adapters/ is written when a run finishes)")
    return run_dir, adapter


def validation(lines: list[str]) -> dict:
    """The validation report in merge's log: its lines, and whether it passed."""
    start = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith("validation of ")), None)
    if start is None:
        return {"lines": [], "passed": None}
    report = lines[start:]
    end = next(
        (i for i, t in enumerate(report) if t.startswith("validation PASSED") or t.startswith("validation FAILED")),
        None,
    )
    if end is None:
        return {"lines": report, "passed": None}
    failed = report[end].startswith("validation FAILED")
    tail = [t for t in report[end + 1:] if t.startswith("  ")] if failed else []
    return {"lines": report[:end + 1] + tail, "passed": not failed}


def _session(lines: list[str]) -> list[str]:
    """The lines of a log's last session (after the last '==== ... qwen-sft ui:' header)."""
    start = max((i for i, t in enumerate(lines) if t.startswith("==== ")), default=-1)
    return lines[start + 1:]


def eval_result(out: Path) -> dict | None:
    if out.is_symlink():  # not the run's own (context.own)
        return None
    try:
        metrics = json.loads(read_text(out / "metrics.json"))
    except (OSError, ValueError):
        return None
    table = [{"key": k, "base": (metrics.get("base") or {}).get(k), "tuned": (metrics.get("tuned") or {}).get(k)}
             for k in EVAL_KEYS]
    return {"metrics": metrics, "table": table}


def generations(out: Path, start: int, count: int) -> list[dict]:
    rows = []
    if out.is_symlink():  # not the run's own (context.own)
        return rows
    try:
        with open(out / "generations.jsonl", encoding="utf-8", opener=nofollow) as f:
            for i, line in enumerate(f):
                if i >= start + count:
                    break
                if i >= start and line.strip():
                    r = json.loads(line)
                    rows.append(
                        {k: r.get(k) for k in ("index", "source", "prompt", "reference")}
                        | {
                            role: {k: (r.get(role) or {}).get(k) for k in ("text", "stopped", "new_tokens", "rouge_l")}
                            for role in ("base", "tuned")
                        }
                    )
    except (OSError, ValueError):
        pass
    return rows


def routes() -> list[Route]:
    return [Route("/status", get_status), Route("/merge", post_merge, methods=["POST"]),
            Route("/eval", post_eval, methods=["POST"]), Route("/generations", get_generations)]


async def get_status(request: Request):
    return JSONResponse(await run_in_threadpool(run_status, request.app.state.ui, request.query_params.get("run")))


def run_status(ui, run_id) -> dict:
    run_dir = ui.store.resolve(run_id)
    ws, rid = ui.settings.workspace, relative(ui.settings.workspace, run_dir)
    merge_lines = _session(log_tail(run_dir, 400, MERGE_LOG))
    jobs = {kind: next((j.summary() for j in sorted(ui.jobs.list(kind, rid), key=lambda j: -j.started)), None)
            for kind in ("merge", "eval")}
    adapter = run_dir / "lora_adapters"
    merged = run_dir / MERGED
    # A symbolic link is not the run's own (context.own): shown as absent, refused by merge and eval.
    has_adapter = not adapter.is_symlink() and (adapter / "adapter_config.json").is_file()
    try:
        base = adapter_base(ws, adapter) if has_adapter else None
        base = relative(ws, Path(base)) if base and Path(base).is_absolute() else base
    except ApiError:
        base = None  # its base is outside the workspace: merge and eval say so when asked
    return {
        "run": rid,
        "adapter": relative(ws, adapter) if has_adapter else None,
        "base": base,
        "merged": {
            "path": relative(ws, merged),
            "exists": not merged.is_symlink() and (merged / "config.json").is_file(),
            "validation": validation(merge_lines),
            "log": merge_lines[-40:],
        },
        "eval": {
            "path": relative(ws, run_dir / EVAL),
            "result": eval_result(run_dir / EVAL),
            "log": _session(log_tail(run_dir, 60, EVAL_LOG))[-40:],
        },
        "jobs": jobs,
        "dtypes": list(DTYPE_NAMES),
        **heldout_choices(ui.store, run_dir),
    }


async def post_merge(request: Request):
    body = await json_body(request)
    return JSONResponse(await run_in_threadpool(start_merge, request.app.state.ui, body))


def start_merge(ui, body: dict) -> dict:
    run_dir, adapter = run_parts(ui, body.get("run"))
    ws = ui.settings.workspace
    adapter_base(ws, adapter)  # its base must be in the workspace (or a hub id)
    dtype = body.get("dtype") or "bfloat16"
    if dtype not in DTYPE_NAMES:
        raise ApiError(400, f"dtype: one of {', '.join(DTYPE_NAMES)}", {"dtype": ["dtype: one of "
                                                                                  f"{', '.join(DTYPE_NAMES)}"]})
    out = own(run_dir, MERGED)
    if out.exists() and body.get("overwrite") is not True:
        raise ApiError(409, f"{relative(ws, out)} exists; tick 'replace' to merge again (the old one is replaced only "
                            "once the new one has passed validation)")
    argv = [sys.executable, "-m", "qwen_sft.cli", "merge", relative(ws, adapter), "-o", relative(ws, out),
            "--validate", "--dtype", dtype] + (["--overwrite"] if out.exists() else [])
    rid = relative(ws, run_dir)
    job = ui.jobs.start("merge", f"merge {rid}", argv, own(run_dir, MERGE_LOG), owner=rid)
    return job.summary()


async def post_eval(request: Request):
    body = await json_body(request)
    return JSONResponse(await run_in_threadpool(start_eval, request.app.state.ui, body))


def start_eval(ui, body: dict) -> dict:
    run_dir, adapter = run_parts(ui, body.get("run"))
    ws = ui.settings.workspace
    which = body.get("model") or "adapter"
    if which not in ("adapter", "merged"):
        raise ApiError(400, "model: adapter or merged")
    model = adapter if which == "adapter" else own(run_dir, MERGED)
    if which == "merged" and not (model / "config.json").is_file():
        raise ApiError(409, "no merged model yet: merge first (or evaluate the adapter)")
    adapter_base(ws, adapter)
    files = body.get("data")
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not files:
        raise ApiError(400, "data: choose the held-out data file(s)", {"data": ["data: choose a file"]})
    split = files == [VALIDATION]  # the run's own validation split (heldout.py writes it, then evaluates)
    if split and not heldout_choices(ui.store, run_dir)["split"]:
        raise ApiError(409, "data: this run held no rows out (val_size 0); choose a held-out data file")
    paths = [] if split else [data_path(ws, f) for f in files]
    n, tokens = body.get("n", 20), body.get("max_new_tokens", 128)
    for key, value, least in (("n", n, 0), ("max_new_tokens", tokens, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ApiError(400, f"{key}: a whole number >= {least}", {key: [f"{key}: a whole number >= {least}"]})
    rid = relative(ws, run_dir)
    args = [
        relative(ws, model),
        "--out",
        relative(ws, own(run_dir, EVAL)),
        "--n",
        str(n),
        "--max_new_tokens",
        str(tokens),
    ]
    if split:
        own(run_dir, SPLIT_FILE)
        argv = [sys.executable, "-m", "qwen_sft.ui.heldout", rid, "--", *args]
    else:
        argv = [sys.executable, "-m", "qwen_sft.cli", "eval", *args, "--data", *[relative(ws, p) for p in paths]]
    job = ui.jobs.start("eval", f"eval {rid}", argv, own(run_dir, EVAL_LOG), owner=rid)
    return job.summary()


async def get_generations(request: Request):
    ui = request.app.state.ui
    q = request.query_params
    try:
        start, count = max(int(q.get("start", 0)), 0), min(max(int(q.get("count", 20)), 1), MAX_GENERATIONS)
    except ValueError:
        raise ApiError(400, "start, count: whole numbers") from None
    return JSONResponse(await run_in_threadpool(
        lambda: {"rows": generations(ui.store.resolve(q.get("run")) / EVAL, start, count)}))
