"""The data area (/api/data): data files, uploads, the check (a job), the row view and the row search.

The check is `qwen-sft check`'s code in a job (datacheck.py); the row view reads a page of rows through the
row index (datafiles.py) and renders each with the encoder training uses (data/encode.py: encode for the
tokens and their trained flags, inference_prompt_ids for the served prompt of the last reply), so the page
shows what `qwen-sft inspect --json` gives. Settings are checked by the CLI's own code: config.load_config
for cutoff_len / train_on / thresholds, template.resolve_thinking for a thinking mode the template cannot serve
(the same one-line refusal).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from ..config import ConfigError, TrainConfig, choices, load_config, value_text
from ..data.encode import IGNORE_INDEX, EncodeOptions, encode, inference_prompt_ids
from ..data.formats import DATA_SUFFIXES, RowError, parse_row
from ..data.template import resolve_thinking, template_rules
from ..errors import UserError
from . import datafiles
from .context import ApiError, inside, relative
from .models import Tokenizers, pieces, tokenizer_choices

MAX_PAGE = 200
MAX_UPLOAD_BYTES = 2 * 2**30  # 2 GiB
MAX_NAME_BYTES = 200  # with the upload's temporary prefix and suffix, under the 255 bytes of a file name
PREVIEW_CHARS = 160
# What the data page may set: the encoding options and the report's thresholds (TrainConfig's own fields).
CHECK_KEYS = ("cutoff_len", "enable_thinking", "train_on", "skip_invalid", "data_format", "max_dropped_share",
              "max_truncated_share", "max_duplicate_share", "max_no_reasoning_share")
UPLOAD_NAME = re.compile(r"^[\w][\w .()+-]{0,199}$")


class DataArea:
    """What the data routes share: the row indexes, the tokenizers, a scratch directory for check results."""

    def __init__(self, workspace: Path):
        self.files = datafiles.DataFiles(workspace)
        self.tokenizers = Tokenizers(workspace)
        self.scratch = Path(tempfile.mkdtemp(prefix="qwen-sft-ui-"))  # check results and logs
        atexit.register(shutil.rmtree, self.scratch, ignore_errors=True)


def defaults() -> dict:
    return {k: TrainConfig.__dataclass_fields__[k].default for k in CHECK_KEYS}


def check_values(values: dict) -> tuple[TrainConfig, list[str]]:
    """The settings as key=value overrides, validated by config.load_config (errors by field)."""
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ApiError(400, "values: an object of setting -> the text typed")
    unknown = [k for k in values if k not in CHECK_KEYS]
    if unknown:
        raise ApiError(400, f"{unknown[0]}: not a data setting (settable: {', '.join(CHECK_KEYS)})")
    overrides = [f"{k}={v}" for k, v in values.items()]
    try:
        return load_config(None, overrides), overrides
    except ConfigError as e:
        fields: dict[str, list[str]] = {}
        for problem in e.problems:
            fields.setdefault(problem.split(":", 1)[0].strip(), []).append(problem)
        raise ApiError(422, "; ".join(e.problems), fields) from None


def data_path(ws: Path, name: str | None) -> Path:
    path = inside(ws, name or "", "file")
    if not path.is_file():
        raise ApiError(404, f"file: {name} is not a file in the workspace")
    return path


def open_index(area: DataArea, path: Path) -> datafiles.RowIndex | datafiles.ColumnarIndex:
    try:
        return area.files.open(path)
    except UserError as e:  # DataError too: the reader's whole-file problem, file:line
        raise ApiError(422, str(e).split("\n(fix the rows above")[0]) from None


def read_page(index, start: int, count: int) -> list[datafiles.RawRow]:
    try:
        return index.read(start, count)
    except UserError as e:  # the reader's whole-file problem met in these rows (a file replaced meanwhile)
        raise ApiError(422, str(e).split("\n(fix the rows above")[0]) from None


def encoding(area: DataArea, params) -> tuple[object, str, EncodeOptions]:
    """(tokenizer, its name, options) from the query: tokenizer, cutoff_len, enable_thinking, train_on."""
    values = {k: params[k] for k in ("cutoff_len", "enable_thinking", "train_on") if params.get(k) not in (None, "")}
    cfg, _ = check_values(values)
    tok, name = area.tokenizers.get(params.get("tokenizer"))
    try:
        thinking = resolve_thinking(cfg.enable_thinking, template_rules(tok, name), name)
    except UserError as e:  # the CLI's one-line refusal of a mode the template cannot serve
        raise ApiError(422, str(e), {"enable_thinking": [str(e)]}) from None
    return tok, name, EncodeOptions(cutoff_len=cfg.cutoff_len, enable_thinking=thinking, train_on=cfg.train_on)


# ---------------------------------------------------------------- rendering rows


def conversation(raw: datafiles.RawRow):
    """The row as training reads it, or raises UserError naming file:line (the reader's words)."""
    try:
        if isinstance(raw.row, RowError):
            raise raw.row
        conv = parse_row(raw.row, raw.schema)
    except RowError as e:
        raise UserError(f"{raw.where}: {e}") from None
    conv.source = raw.where
    return conv


def encoded(raw: datafiles.RawRow, tok, opts: EncodeOptions):
    """(the row's summary for the page, its Conversation, its Encoded); the last two None when it is refused."""
    out = {"index": raw.index, "where": raw.where, "ok": False, "error": None}
    try:
        conv = conversation(raw)
        out["format"] = conv.format
        first_user = next((m["content"] for m in conv.messages if m["role"] == "user"), "")
        out["preview"] = first_user[:PREVIEW_CHARS]
        enc = encode(conv, tok, opts)
    except UserError as e:
        out["error"] = str(e)
        return out, None, None
    trained = sum(e.num_trained for e in [enc] + enc.more)  # the row's sequences (data/encode.py)
    out.update(ok=True, tokens=len(enc.input_ids), trained=trained, truncated=enc.truncated,
               reply_cut=enc.reply_cut, thinking=enc.thinking,
               # as encode_all drops it: nothing left to train on after the cut
               dropped=f"no trained token within cutoff_len={opts.cutoff_len}: dropped from training"
               if trained == 0 else None)
    return out, conv, enc


def full_row(raw: datafiles.RawRow, tok, opts: EncodeOptions) -> dict:
    """Every token (id, text, trained), the served prompt of the last reply, and the row as read."""
    out, conv, enc = encoded(raw, tok, opts)
    if enc is None:
        out["raw"] = raw.raw  # an invalid row: the text as read, so the page can show what is wrong with it
        return out
    served = inference_prompt_ids(conv, tok, opts.enable_thinking)
    ids = enc.input_ids

    def marked(e):
        return [[i, t, int(label != IGNORE_INDEX)]
                for i, t, label in zip(e.input_ids, pieces(tok, e.input_ids), e.labels)]

    out.update(
        messages=conv.messages,
        tools=conv.tools,
        tokens=marked(enc),
        # The row's further sequences: earlier replies after their own served prompt (data/encode.py).
        more=[marked(e) for e in enc.more],
        # Added tokens (<|im_start|>, <|im_end|>, <think>, </think>, ...): shown as such.
        added=sorted(
            set(tok.added_tokens_decoder) & (set(ids) | set(served) | {i for e in enc.more for i in e.input_ids})
        ),
        served=[[i, t] for i, t in zip(served, pieces(tok, served))],
        # The template renders the last reply right after its served prompt (always, or the encoder refuses the
        # row); a row cut at cutoff_len may end inside it.
        served_is_prefix=ids[: len(served)] == served or (enc.truncated and served[: len(ids)] == ids),
        reasoning_dropped=enc.reasoning_dropped,
        extra_sequences=len(enc.more),
        enable_thinking=opts.enable_thinking,
        train_on=opts.train_on,
        cutoff_len=opts.cutoff_len,
        template_kind=template_rules(tok).kind,
    )
    return out


# ---------------------------------------------------------------- routes


def routes() -> list[Route]:
    return [Route("/files", get_files), Route("/rows", get_rows), Route("/row", get_row), Route("/search", get_search),
            Route("/check", post_check, methods=["POST"]), Route("/upload", post_upload, methods=["POST"])]


def area(request: Request) -> DataArea:
    return request.app.state.ui.data


async def get_files(request: Request):
    ws = request.app.state.ui.settings.workspace
    return JSONResponse({"files": await run_in_threadpool(datafiles.list_files, ws),
                         "tokenizers": await run_in_threadpool(tokenizer_choices, ws), "defaults": defaults(),
                         "choices": {k: [value_text(c) for c in choices(k)] for k in ("enable_thinking", "train_on")},
                         "suffixes": list(DATA_SUFFIXES), "max_upload_bytes": MAX_UPLOAD_BYTES})


async def get_rows(request: Request):
    a, q = area(request), request.query_params
    start, count = _int(q, "start", 0, 0), min(_int(q, "count", 50, 1), MAX_PAGE)

    def work():
        path = data_path(request.app.state.ui.settings.workspace, q.get("file"))
        index = open_index(a, path)
        tok, _, opts = encoding(a, q)
        page = read_page(index, start, count)
        with a.tokenizers.lock:
            return {"file": index.name, "total": len(index), "start": start,
                    "rows": [encoded(r, tok, opts)[0] for r in page]}

    return JSONResponse(await run_in_threadpool(work))


async def get_row(request: Request):
    a, q = area(request), request.query_params

    def work():
        path = data_path(request.app.state.ui.settings.workspace, q.get("file"))
        index = open_index(a, path)
        if q.get("where"):
            i = index.find(q["where"])
            if i is None:
                raise ApiError(404, f"{index.name}:{q['where']}: no row starts there")
        else:
            i = _int(q, "index", 0, 0)
        if i >= len(index):
            raise ApiError(404, f"{index.name}: row {i} of {len(index)}: no such row")
        tok, _, opts = encoding(a, q)
        with a.tokenizers.lock:
            return {"file": index.name, "total": len(index), **full_row(read_page(index, i, 1)[0], tok, opts)}

    return JSONResponse(await run_in_threadpool(work))


async def get_search(request: Request):
    """Server-sent events: `found` (row indexes, as they are found), `progress`, then `done`. Closing the
    stream cancels the scan."""
    a, q = area(request), request.query_params
    text = q.get("q", "")
    if not text.strip():
        raise ApiError(400, "q: type the text to search for")
    path = await run_in_threadpool(data_path, request.app.state.ui.settings.workspace, q.get("file"))
    index = await run_in_threadpool(open_index, a, path)

    async def stream():
        scan = datafiles.search(index, text)
        total = 0
        while True:
            step = await run_in_threadpool(next, scan, None)
            if step is None:
                break
            scanned, found = step
            total += len(found)
            if found:
                yield f"event: found\ndata: {json.dumps(found)}\n\n"
            yield f"event: progress\ndata: {json.dumps({'scanned': scanned, 'total': len(index)})}\n\n"
            if await request.is_disconnected():
                return
        yield f"event: done\ndata: {json.dumps({'matches': total, 'total': len(index)})}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def post_check(request: Request):
    from .configs import json_body

    ui, a = request.app.state.ui, area(request)
    body = await json_body(request)
    names = body.get("files")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ApiError(400, "files: choose one or more data files")
    ws = ui.settings.workspace

    def work():
        paths = [data_path(ws, n) for n in names]
        cfg, overrides = check_values(body.get("values") or {})
        tok, name = a.tokenizers.get(body.get("tokenizer"))
        try:
            resolve_thinking(cfg.enable_thinking, template_rules(tok, name), name)
        except UserError as e:
            raise ApiError(422, str(e), {"enable_thinking": [str(e)]}) from None
        files = [relative(ws, p) for p in paths]
        result = a.scratch / f"check-{secrets.token_hex(6)}.json"
        argv = [sys.executable, "-m", "qwen_sft.ui.datacheck", "--result", str(result), "--tokenizer",
                tok.name_or_path, "--name", name, *overrides, "--files", *files]
        job = ui.jobs.start("check", f"check {', '.join(files)}", argv, result.with_suffix(".log"), result)
        return job.summary()

    return JSONResponse(await run_in_threadpool(work))


async def post_upload(request: Request):
    """The request body is the file (application/octet-stream): written into the workspace under a name
    that is new there, never over a file the user has."""
    ws = request.app.state.ui.settings.workspace
    q = request.query_params
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:  # before anything is read or made
        raise ApiError(413, f"the file is over the upload limit of {MAX_UPLOAD_BYTES // 2**20} MiB; copy it "
                            "into the workspace instead")
    name = q.get("name", "")
    if not UPLOAD_NAME.match(name) or name.strip() != name or Path(name).suffix.lower() not in DATA_SUFFIXES \
            or len(name.encode()) > MAX_NAME_BYTES:
        raise ApiError(400, f"name: {name!r}: a plain file name (letters, digits, ' .()+-_') ending in "
                            f"{', '.join(DATA_SUFFIXES)}, at most {MAX_NAME_BYTES} bytes")
    folder = inside(ws, q.get("dir") or "data", "dir")
    if folder.exists() and not folder.is_dir():
        raise ApiError(400, f"dir: {relative(ws, folder)} is a file")
    target = folder / name
    if target.exists() or target.is_symlink():
        raise ApiError(409, f"{relative(ws, target)} exists; nothing was overwritten: upload under another name")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a part of it is a file, no permission, ...
        raise ApiError(400, f"dir: cannot make {relative(ws, folder)}: {e.strerror or e}") from None
    tmp = folder / f".{name}.upload-{secrets.token_hex(4)}"
    size = 0
    try:
        with open(tmp, "xb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise ApiError(413, f"the file is over the upload limit of {MAX_UPLOAD_BYTES // 2**20} MiB")
                await run_in_threadpool(f.write, chunk)  # not on the event loop: a slow disk holds up this upload only
        if size == 0:
            raise ApiError(400, "the file is empty")
        try:
            os.link(tmp, target)  # fails if the name was taken meanwhile: never replaces it
        except FileExistsError:
            raise ApiError(409, f"{relative(ws, target)} exists; nothing was overwritten") from None
    except OSError as e:  # a full disk, no permission: one line naming the file, nothing left behind
        raise ApiError(400, f"{relative(ws, target)}: cannot write it: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return JSONResponse({"path": relative(ws, target), "bytes": size})


def _int(q, key: str, default: int, least: int) -> int:
    try:
        value = int(q.get(key, default))
    except ValueError:
        raise ApiError(400, f"{key}: expected a whole number") from None
    if value < least:
        raise ApiError(400, f"{key}: must be >= {least}")
    return value
