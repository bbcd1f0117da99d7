"""The start form: TrainConfig's own fields and help texts, checked by the CLI's own code.

The form starts from a base config (a shipped one, or a previous run's config.yaml) and sends only the
fields the user changed, as the strings typed: they become `key=value` overrides, exactly as on the command
line, and config.load_config(base, overrides) validates them (its problems come back by field). What the
form starts is therefore `qwen-sft train BASE key=value ...`, the command shown under it. On top of the
CLI's checks, the UI's own: every path inside the workspace, trust_remote_code only when the server allows
it, and no start into a run directory that is busy or holds a finished run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import sys
import typing
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..argcheck import run_name_problem
from ..config import ConfigError, TrainConfig, choices, dump_config, load_config, path_keys, takes_list
from ..config import value_text as fmt  # a config value as the form shows it, and as key=value reads it back
from ..errors import UserError
from .context import ApiError, Settings, inside, relative, valid_text

# The first field of each section of TrainConfig (a field added later joins the section above it).
SECTIONS = {
    "model_name_or_path": "Model",
    "lora_rank": "LoRA",
    "dataset": "Data",
    "per_device_train_batch_size": "Batching",
    "num_train_epochs": "Optimization",
    "output_dir": "Outputs and resume",
}
# Values that run code from elsewhere: settable from the page only with `qwen-sft ui --allow-remote-code`.
CODE_KEYS = ("trust_remote_code",)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name
# Every field of TrainConfig that names a file or directory (its `path` fact), each held inside the workspace by
# _ui_rules (the tests also find these fields by their help text, so that a new one cannot be left out).
PATH_FIELDS = path_keys()
# Values of path fields that name no path of the user's: the package's own cache, no cache, the run's own checkpoint.
NOT_A_PATH = {"data_cache_dir": ("auto", None), "resume_from_checkpoint": ("auto", None)}
PACKAGE = "package:"


def schema(settings: Settings) -> list[dict]:
    hints = typing.get_type_hints(TrainConfig)
    fields, section = [], None
    for f in dataclasses.fields(TrainConfig):
        section = SECTIONS.get(f.name, section)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        # A key that also takes a list (lora_target_modules) is typed, its words are in its help.
        kind = "choice" if choices(f.name) and not takes_list(f.name) else "bool" if hints[f.name] is bool else "text"
        fields.append(
            {
                "name": f.name,
                "help": f.metadata.get("help", ""),
                "default": fmt(default),
                "kind": kind,
                "choices": [fmt(c) for c in choices(f.name)]
                if kind == "choice"
                else (["true", "false"] if kind == "bool" else None),
                "section": section,
                "locked": f.name in CODE_KEYS and not settings.allow_remote_code,
            }
        )
    return fields


# ---------------------------------------------------------------- base configs


def package_configs() -> dict[str, Path]:
    """The configs shipped in the checkout the package runs from (sft/configs/*.yaml)."""
    from ..assets import CONFIG_DIR

    return {p.name: p for p in sorted(CONFIG_DIR.glob("*.yaml"))} if CONFIG_DIR.is_dir() else {}


def bases(settings: Settings, run_dirs: list[Path]) -> list[dict]:
    ws = settings.workspace
    out, seen = [], set()
    for p in sorted((ws / "sft" / "configs").glob("*.yaml")):
        out.append({"id": relative(ws, p.resolve()), "label": f"{p.name} (sft/configs)", "kind": "shipped"})
        seen.add(p.resolve())
    for name, p in package_configs().items():
        if p.resolve() not in seen:
            out.append({"id": PACKAGE + name, "label": f"{name} (shipped with qwen-sft)", "kind": "shipped"})
    for d in run_dirs:
        if (d / "config.yaml").is_file():
            out.append({"id": relative(ws, d / "config.yaml"), "label": f"run {relative(ws, d)}", "kind": "run"})
    return out


def is_local(workspace: Path, name: str) -> bool:
    """A model name that is a path (absolute, not of the form org/name, or its first folder exists in the
    workspace: a typo in a path) rather than a hub id, which is loaded from the Hugging Face cache."""
    p = Path(name)
    try:
        return (
            p.is_absolute()
            or not HUB_ID.match(name)
            or (workspace / name).exists()
            or (workspace / p.parts[0]).is_dir()
        )
    except OSError:  # a name the file system cannot hold: inside() says why
        return True


def base_path(settings: Settings, base: str | None) -> tuple[Path, str]:
    """The base config's path, and how the command line names it (relative to the workspace when inside)."""
    if not base:
        raise ApiError(400, "base: choose a config to start from")
    if not isinstance(base, str):
        raise ApiError(400, f"base: expected the name of a config (text), got {type(base).__name__}")
    if base.startswith(PACKAGE):
        found = package_configs().get(base[len(PACKAGE):])
        if found is None:
            raise ApiError(404, f"base: no shipped config {base[len(PACKAGE):]!r}")
        return found, str(found)
    path = inside(settings.workspace, base, "base")
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        raise ApiError(404, f"base: {base} is not a YAML config file in the workspace")
    return path, relative(settings.workspace, path)


# ---------------------------------------------------------------- check


def check(settings: Settings, base: str | None, values: dict, busy=lambda run_dir: False) -> dict:
    """Validate base + changed values as the CLI would, then the UI's own rules. `busy(run_dir)`: a trainer runs there.

    Returns {ok, errors: {field: [..]}, general: [..], values, yaml, command, argv, run_dir}."""
    path, base_arg = base_path(settings, base)
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ApiError(400, "values: an object of field name -> the text typed")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    errors: dict[str, list[str]] = {}
    general: list[str] = []
    for key in values:
        if key not in names:
            general.append(f"{key}: not a training config field")
    overrides = [f"{k}={v}" for k, v in values.items() if k in names]
    argv = [sys.executable, "-m", "qwen_sft.cli", "train", base_arg, *overrides]
    result = {"ok": False, "errors": errors, "general": general, "values": None, "yaml": None,
              "command": "qwen-sft train " + shlex.join([base_arg, *overrides]), "argv": argv, "run_dir": None}
    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        for problem in e.problems:
            key = problem.split(":", 1)[0].strip()
            (errors.setdefault(key, []) if key in names else general).append(problem)
        return result
    except UserError as e:
        general.append(str(e))
        return result
    result.update(values={f: fmt(getattr(cfg, f)) for f in names}, yaml=dump_config(cfg))
    for key, problem in _ui_rules(settings, cfg, values, busy):
        errors.setdefault(key, []).append(problem)
    if not errors and not general:
        result.update(ok=True, run_dir=(settings.workspace / cfg.run_dir).resolve())
    return result


def _ui_rules(settings: Settings, cfg: TrainConfig, values: dict, busy):
    """The UI's rules on a valid config: (field, problem) pairs."""
    ws = settings.workspace

    def place(key: str, value: str, must_exist: bool = False) -> Path | None:
        try:
            p = inside(ws, value, key)
        except ApiError as e:
            problems.append((key, e.message))
            return None
        if must_exist and not p.exists():
            problems.append((key, f"{key}: {value} not found in the workspace"))
        return p

    problems: list[tuple[str, str]] = []
    for key in CODE_KEYS:
        if getattr(cfg, key) and not settings.allow_remote_code:
            problems.append((key, f"{key}: runs code shipped with the model; start the UI with --allow-remote-code "
                                  "to allow it" + ("" if key in values else " (set by the base config)")))
    model = cfg.model_name_or_path
    # A local directory must be inside the workspace; a hub id is loaded from the Hugging Face cache.
    if is_local(ws, model):
        place("model_name_or_path", model, must_exist=True)
    for data in [cfg.dataset] if isinstance(cfg.dataset, str) else cfg.dataset:
        found = place("dataset", data, must_exist=True)
        if found is not None and found.exists():
            problems.extend(("dataset", p) for p in _data_files_outside(ws, found, data))
    for key in ("resume_from_checkpoint", "data_cache_dir"):
        if getattr(cfg, key) not in NOT_A_PATH[key]:
            place(key, getattr(cfg, key), must_exist=key == "resume_from_checkpoint")
    name_problem = run_name_problem(cfg.run_name)  # the CLI's rule: a run name is a URL segment and a word in logs
    if name_problem:
        problems.append(("run_name", f"run_name: {name_problem}"))
    out = place("output_dir", cfg.output_dir)
    run_dir = place("run_name", str(Path(cfg.output_dir) / cfg.run_name)) if out and not name_problem else None
    if run_dir is not None:
        from ..checkpoint import list_checkpoints, run_finished

        fresh = not (cfg.overwrite_output_dir or cfg.resume_from_checkpoint)
        if busy(run_dir):
            problems.append(("run_name", f"run_name: a trainer is running in {relative(ws, run_dir)}; stop it, "
                                         "or choose another run_name"))
        elif fresh and run_finished(run_dir):
            problems.append(("run_name", f"run_name: {relative(ws, run_dir)} already holds a finished run; choose a "
                                         "new run_name (or set overwrite_output_dir to train into it again)"))
        elif fresh and list_checkpoints(run_dir):  # a fresh start there would mix its checkpoints with the old run's
            problems.append(("run_name", f"run_name: {relative(ws, run_dir)} holds checkpoints of an unfinished run; "
                                         "resume it (its page, or resume_from_checkpoint=auto), or choose a new "
                                         "run_name"))
    return problems


def _data_files_outside(ws: Path, found: Path, named: str) -> list[str]:
    """Problems with the files a dataset directory stands for (as training expands it): each must resolve inside
    the workspace too, or a link in the directory (or a save_to_disk state.json naming ../..) would be read."""
    from ..data.formats import expand_paths

    try:
        files = expand_paths(str(found))
    except UserError as e:
        return [f"dataset: {e}"]
    problems = []
    for f in files:
        try:
            inside(ws, f, "dataset")
        except ApiError:
            problems.append(f"dataset: {named}/{f.relative_to(found).as_posix() if f.is_relative_to(found) else f} "
                            f"leads outside the workspace {ws} (a symbolic link?); a run started here reads only "
                            "files inside it")
    return problems


def resume_values(settings: Settings, run_dir: Path, cfg: dict) -> dict:
    """The overrides that resume the run in run_dir from its config.yaml: resume_from_checkpoint=auto, and the
    run's own place when the config names it relative to another working directory (a run started elsewhere)."""
    values = {"resume_from_checkpoint": "auto"}
    named = (settings.workspace / str(cfg.get("output_dir", "")) / str(cfg.get("run_name", ""))).resolve()
    if named != run_dir:
        values.update(output_dir=relative(settings.workspace, run_dir.parent), run_name=run_dir.name)
    return values


def launch_values(argv) -> dict | None:
    """The form's {base, values} of a launch's argv ([python, -m, qwen_sft.cli, train, BASE, key=value ...]): what
    "retry with these settings" starts from when the run failed before it wrote its config.yaml."""
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or "train" not in argv:
        return None
    at = argv.index("train")
    if at + 1 >= len(argv):
        return None
    base = argv[at + 1]
    shipped = {str(p): PACKAGE + name for name, p in package_configs().items()}
    values = dict(a.split("=", 1) for a in argv[at + 2:] if "=" in a)
    return {"base": shipped.get(base, base), "values": values}


# ---------------------------------------------------------------- routes


def routes() -> list[Route]:
    return [Route("/schema", get_schema), Route("/bases", get_bases), Route("/check", post_check, methods=["POST"])]


async def get_schema(request: Request):
    settings = request.app.state.ui.settings
    return JSONResponse({"fields": schema(settings), "allow_remote_code": settings.allow_remote_code})


async def get_bases(request: Request):
    ui = request.app.state.ui
    return JSONResponse({"bases": await run_in_threadpool(lambda: bases(ui.settings, ui.store.run_dirs()))})


async def post_check(request: Request):
    ui = request.app.state.ui
    body = await json_body(request)
    # Off the event loop: a big value or a slow file system holds up this request only.
    result = await run_in_threadpool(check, ui.settings, body.get("base"), body.get("values") or {}, ui.busy)
    result.pop("argv")
    result["run_dir"] = relative(ui.settings.workspace, result["run_dir"]) if result["run_dir"] else None
    return JSONResponse(result)


MAX_DEPTH = 32  # the deepest nesting a request body may have (ours are 3 deep)


async def json_body(request: Request) -> dict:
    """The request's JSON object (its size is bounded by the security layer), parsed off the event loop; refused
    with a 400: not JSON, not an object, nested over MAX_DEPTH, or a string that is not valid text (a lone
    surrogate, which no file name, YAML file or command line can hold)."""
    raw = await request.body()
    return await run_in_threadpool(parse_body, raw)


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError(400, f"body: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError:
        raise ApiError(400, "body: not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body: expected a JSON object")
    stack = [(body, 1, None)]  # (value, its depth, the top-level field it is in)
    while stack:  # iterative: a deep body must not exhaust the stack here either
        value, depth, field = stack.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, f"{field or 'body'}: nested more than {MAX_DEPTH} levels deep")
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            here = field or (key if valid_text(key) else "body")
            if any(isinstance(t, str) and not valid_text(t) for t in (key, item)):
                raise ApiError(400, f"{here}: not valid text (a lone surrogate)")
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1, here))
    return body
