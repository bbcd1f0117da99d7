"""Read alpaca / messages / sharegpt rows from JSONL, JSON or CSV into one Conversation type.

Every problem is reported as 'file:line: field: message'. Nothing is dropped silently: bad rows
either stop the load (the default) or, with skip_invalid, are counted with their reasons.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, UserError

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
CONTAINERS = ("jsonl", "json", "csv", "tsv")
SCHEMAS = ("alpaca", "messages", "sharegpt")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "system": "system", "observation": "tool", "tool": "tool",
}
# Text that would be read as chat-template control tokens and silently change the conversation.
CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


@dataclass
class Conversation:
    """One training row: OpenAI-style messages (assistant turns may carry reasoning_content)."""

    messages: list[dict]
    tools: list | None = None
    source: str = ""  # "file:line", for error messages and the report
    format: str = ""  # alpaca | messages | sharegpt

    @property
    def has_reasoning(self) -> bool:
        return any(m.get("reasoning_content") for m in self.messages if m["role"] == "assistant")

    def to_json(self) -> dict:
        row = {"messages": self.messages}
        if self.tools:
            row["tools"] = self.tools
        return row


@dataclass
class ColumnMap:
    """CSV/TSV column names for the alpaca fields."""

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    system: str = "system"


@dataclass
class LoadResult:
    conversations: list[Conversation] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # problems of skipped rows
    rows_per_format: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)


class RowError(Exception):
    """A problem with one field of one row."""

    def __init__(self, field_name: str, message: str):
        self.field, self.message = field_name, message
        super().__init__(f"{field_name}: {message}")


# ---------------------------------------------------------------- paths


def expand_paths(spec) -> list[Path]:
    """A dataset is a file, a directory of data files, or a list of either."""
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    paths: list[Path] = []
    for s in specs:
        p = Path(s)
        if not p.exists():
            raise UserError(f"{p}: dataset path does not exist")
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in DATA_SUFFIXES)
            if not found:
                raise UserError(f"{p}: directory holds no data files ({', '.join(DATA_SUFFIXES)})")
            paths.extend(found)
        else:
            paths.append(p)
    return paths


# ---------------------------------------------------------------- row schemas


def _text(row: dict, key: str, *, required: bool, allow_empty: bool = False) -> str | None:
    value = row.get(key)
    if value is None:
        if required:
            raise RowError(key, "missing")
        return None
    if not isinstance(value, str):
        raise RowError(key, f"expected a string, got {type(value).__name__}")
    if required and not allow_empty and not value.strip():
        raise RowError(key, "empty")
    _check_control_tokens(key, value)
    return value


def _check_control_tokens(key: str, text: str) -> None:
    bad = next((t for t in CONTROL_TOKENS if t in text), None)
    if bad:
        raise RowError(key, f"contains the control token {bad}")


def split_think(content: str) -> tuple[str | None, str]:
    """'<think>r</think>answer' -> ('r', 'answer'), the way Qwen3's template splits it."""
    if "</think>" not in content:
        return None, content
    reasoning, answer = content.split("</think>", 1)
    reasoning = reasoning.split("<think>")[-1].strip("\n")
    return reasoning, answer.lstrip("\n")


# Whitespace-only lines at the start of a reply. The template strips leading '\n' from the last
# reply only; in an earlier reply they would merge with the '\n' of '<|im_start|>assistant\n' into
# one token that crosses the prompt/reply edge (EncodeError), so they are removed from every reply.
_LEADING_BLANK_LINES = re.compile(r"\A\s*[\r\n]")


def _assistant(content: str, reasoning: str | None = None, tool_calls=None, key: str = "content") -> dict:
    msg = {"role": "assistant", "content": _LEADING_BLANK_LINES.sub("", content)}
    inline_reasoning, answer = split_think(content)
    if inline_reasoning is not None:
        if reasoning:
            raise RowError(key, "has both reasoning_content and a <think> block")
        if not answer.strip() and not tool_calls:
            raise RowError(key, "empty after the </think> block (no reply to train on)")
        reasoning, msg["content"] = inline_reasoning, _LEADING_BLANK_LINES.sub("", answer)
    if reasoning:
        msg["reasoning_content"] = reasoning
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return msg


def from_alpaca(row: dict) -> Conversation:
    """instruction + input -> user turn. They are joined by a blank line: 'instruction\\n\\ninput'."""
    instruction = _text(row, "instruction", required=True)
    extra = _text(row, "input", required=False) or ""
    output = _text(row, "output", required=True)
    system = _text(row, "system", required=False)
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    history = row.get("history") or []
    if not isinstance(history, list):
        raise RowError("history", f"expected a list of [user, assistant] pairs, got {type(history).__name__}")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) and x.strip() for x in pair)):
            raise RowError(f"history[{i}]", "expected a [user, assistant] pair of non-empty strings")
        messages += [{"role": "user", "content": pair[0]}, _assistant(pair[1], key=f"history[{i}]")]
    user = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
    messages += [{"role": "user", "content": user}, _assistant(output, key="output")]
    return Conversation(messages, format="alpaca")


def _check_turns(messages: list[dict], key: str) -> None:
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError(key, "no assistant turn to train on")
    if messages[-1]["role"] != "assistant":
        raise RowError(f"{key}[{len(messages) - 1}]", f"the last turn is '{messages[-1]['role']}'; a row must end with an assistant reply")


def from_messages(row: dict) -> Conversation:
    raw = row.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RowError("messages", "expected a non-empty list")
    messages = []
    for i, m in enumerate(raw):
        key = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RowError(key, f"expected an object, got {type(m).__name__}")
        role = m.get("role")
        if role not in ROLES:
            raise RowError(f"{key}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        try:
            if role == "assistant":
                tool_calls = m.get("tool_calls")
                content = _text(m, "content", required=not tool_calls) or ""
                reasoning = _text(m, "reasoning_content", required=False)
                messages.append(_assistant(content, reasoning, tool_calls))
            else:
                messages.append({"role": role, "content": _text(m, "content", required=True, allow_empty=role != "user")})
        except RowError as e:
            raise RowError(f"{key}.{e.field}", e.message) from None
    _check_turns(messages, "messages")
    tools = row.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise RowError("tools", f"expected a list, got {type(tools).__name__}")
    return Conversation(messages, tools=tools or None, format="messages")


def from_sharegpt(row: dict) -> Conversation:
    raw = row.get("conversations")
    if not isinstance(raw, list) or not raw:
        raise RowError("conversations", "expected a non-empty list")
    messages = []
    if isinstance(row.get("system"), str) and row["system"].strip():
        messages.append({"role": "system", "content": row["system"]})
    for i, m in enumerate(raw):
        key = f"conversations[{i}]"
        if not isinstance(m, dict):
            raise RowError(key, f"expected an object, got {type(m).__name__}")
        role = SHAREGPT_ROLES.get(m.get("from"))
        if role is None:
            raise RowError(f"{key}.from", f"unknown role {m.get('from')!r} (expected one of {', '.join(SHAREGPT_ROLES)})")
        try:
            value = _text(m, "value", required=True, allow_empty=role == "system")
            messages.append(_assistant(value, key="value") if role == "assistant" else {"role": role, "content": value})
        except RowError as e:
            raise RowError(f"{key}.{e.field}", e.message) from None
    _check_turns(messages, "conversations")
    return Conversation(messages, format="sharegpt")


PARSERS = {"alpaca": from_alpaca, "messages": from_messages, "sharegpt": from_sharegpt}


def detect_schema(row: dict) -> str:
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row or "output" in row:
        return "alpaca"
    raise RowError("(row)", f"unknown row format with keys {sorted(row)[:8]}; expected alpaca "
                   "(instruction/input/output), messages or sharegpt (conversations)")


def parse_row(row, schema: str | None) -> Conversation:
    if not isinstance(row, dict):
        raise RowError("(row)", f"expected a JSON object, got {type(row).__name__}")
    schema = schema or detect_schema(row)
    conv = PARSERS[schema](row)
    # Fields are checked as they are read (_text); this also covers history pairs and a sharegpt system.
    for i, m in enumerate(conv.messages):
        for name in ("content", "reasoning_content"):
            _check_control_tokens(f"turn {i} ({m['role']}) {name}", m.get(name) or "")
    return conv


# ---------------------------------------------------------------- containers


def _decode_lines(path: Path) -> list[tuple[int, str | None]]:
    """(line number, text or None if not UTF-8), BOM removed, CRLF tolerated."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            out.append((n, raw.decode("utf-8").rstrip("\r")))
        except UnicodeDecodeError:
            out.append((n, None))
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError([f"{path}:{line}: (file): not valid UTF-8 (byte 0x{path.read_bytes()[e.start]:02x}); save the file as UTF-8"]) from None


def _iter_jsonl(path: Path):
    for n, text in _decode_lines(path):
        if text is None:
            yield n, RowError("(line)", "not valid UTF-8; save the file as UTF-8")
            continue
        if not text.strip():
            continue
        try:
            yield n, json.loads(text)
        except json.JSONDecodeError as e:
            yield n, RowError("(line)", f"malformed JSON: {e.msg} at column {e.colno}")


def _iter_json(path: Path):
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # a .json file holding JSON Lines: read it as such
            yield from _iter_jsonl(path)
            return
        raise DataError([f"{path}:{e.lineno}: (file): malformed JSON: {e.msg}"]) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError([f"{path}:1: (file): expected a JSON list of rows (or JSONL, one row per line)"])
    # Line numbers of array items are not kept by json; name the item index instead.
    for i, row in enumerate(data):
        yield f"item {i}", row


def _iter_csv(path: Path, columns: ColumnMap, delimiter: str):
    # CRLF files (Windows) also have CRLF inside quoted multi-line cells: train on '\n', not '\r\n'.
    reader = csv.reader(io.StringIO(_read_text(path).replace("\r\n", "\n"), newline=""), delimiter=delimiter)
    header = next(reader, [])
    if not header:
        return
    missing = [(flag, name) for flag, name in (("--instruction_col", columns.instruction), ("--output_col", columns.output)) if name not in header]
    if missing:
        # A question-only CSV cannot train anything: there is no reply to learn. Refuse it loudly.
        raise DataError([f"{path}:1: {name}: column not found (columns are {header}); set {flag} to the column "
                         "that holds it" for flag, name in missing])
    line = reader.line_num + 1
    for fields in reader:
        # A record starts on the line after the previous one ended (quoted cells span lines).
        start, line = line, reader.line_num + 1
        if not fields:
            continue  # blank line
        if len(fields) > len(header):
            yield start, RowError("(row)", f"{len(fields)} fields, header has {len(header)}")
            continue
        record = dict(zip(header, fields))
        row = {"instruction": record.get(columns.instruction), "output": record.get(columns.output)}
        for key, col in (("input", columns.input), ("system", columns.system)):
            if col in record and record[col] is not None:
                row[key] = record[col]
        yield start, row


def load_file(path: Path, fmt: str | None = None, columns: ColumnMap | None = None):
    """Yield (line, row-or-RowError, schema) for one file. fmt: container or schema name or None."""
    if path.stat().st_size == 0 or not path.read_bytes().lstrip(b"\xef\xbb\xbf").strip():
        raise DataError([f"{path}:1: (file): empty file"])
    suffix = path.suffix.lower().lstrip(".")
    container = fmt if fmt in CONTAINERS else suffix
    schema = fmt if fmt in SCHEMAS else None
    if container in ("csv", "tsv"):
        rows = _iter_csv(path, columns or ColumnMap(), "\t" if container == "tsv" else ",")
        schema = "alpaca"
    elif container == "json":
        rows = _iter_json(path)
    elif container == "jsonl" or schema:
        rows = _iter_jsonl(path)
    else:
        raise UserError(f"{path}: unknown file type '.{suffix}'; use .jsonl, .json, .csv or .tsv, or pass --format")
    for line, row in rows:
        yield line, row, schema


def load_dataset(spec, fmt: str | None = None, columns: ColumnMap | None = None, skip_invalid: bool = False) -> LoadResult:
    """Read every row of every file. Raises DataError listing all problems unless skip_invalid."""
    result = LoadResult()
    for path in expand_paths(spec):
        result.files.append(str(path))
        for line, row, schema in load_file(path, fmt, columns):
            where = f"{path}:{line}"
            try:
                if isinstance(row, RowError):
                    raise row
                conv = parse_row(row, schema)
            except RowError as e:
                result.invalid.append(f"{where}: {e}")
                continue
            conv.source = where
            result.rows_per_format[conv.format] += 1
            result.conversations.append(conv)
    if result.invalid and not skip_invalid:
        raise DataError(result.invalid)
    if not result.conversations:
        raise DataError([f"{', '.join(result.files)}: no valid rows"] + result.invalid)
    return result


def write_jsonl(conversations, path: Path) -> None:
    """Write normalized rows atomically: a failed write leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for conv in conversations:
            f.write(json.dumps(conv.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(path)
