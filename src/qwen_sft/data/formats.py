"""Read alpaca / messages / sharegpt rows from JSONL, JSON, CSV, Parquet or Arrow into one Conversation type.

Every problem is reported as 'file:line: field: message'. Nothing is dropped silently: bad rows
either stop the load (the default) or, with skip_invalid, are counted with their reasons.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, UserError
from . import columnar

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv") + columnar.SUFFIXES
CONTAINERS = ("jsonl", "json", "csv", "tsv")
SCHEMAS = ("alpaca", "messages", "sharegpt")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "system": "system", "observation": "tool", "tool": "tool",
}
# Text that would be read as chat-template control tokens and silently change the conversation.
CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
# Guards against hostile files (a traceback, or memory blown up, otherwise): a row nests at most MAX_DEPTH
# lists / objects (tool schemas need a handful), a JSONL line or CSV record holds at most MAX_ROW_BYTES, and a
# .json file (parsed whole) at most MAX_JSON_BYTES: bigger data goes in JSONL, read a row at a time.
MAX_DEPTH = 64
MAX_ROW_BYTES = 64 * 2**20
MAX_JSON_BYTES = 2**30
# Message keys read besides role and content. Any other key with a value is refused, not silently dropped
# (a per-turn flag the template would ignore, a legacy function_call, reasoning under another name).
MESSAGE_KEYS = {"role", "content", "reasoning_content", "tool_calls", "weight", "name", "tool_call_id"}
SHAREGPT_KEYS = {"from", "value", "weight"}


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


def expects_reasoning(conv: Conversation) -> bool:
    """The row's last assistant reply carries reasoning."""
    return bool(conv.messages[-1].get("reasoning_content"))


def reference_text(conv: Conversation) -> str:
    """The expected answer: the last assistant reply's content (never its reasoning)."""
    return (conv.messages[-1].get("content") or "").strip()


def prompt_text(conv: Conversation) -> str:
    """The last user turn of the prompt (what the reply's language should follow)."""
    return next((m.get("content") or "" for m in reversed(conv.messages[:-1]) if m["role"] == "user"), "")


@dataclass
class ColumnMap:
    """CSV/TSV column names for the alpaca fields."""

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    system: str = "system"

    def renames(self) -> dict[str, str]:
        """{alpaca field: the column the user named for it}, for the fields given another name."""
        return {f: col for f, col in vars(self).items() if col != f}


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

    def __reduce__(self):  # rows travel to the encoding worker processes pickled, a line's RowError with them
        return RowError, (self.field, self.message)


# ---------------------------------------------------------------- paths

# Set by `qwen-sft ui` for the processes it starts (a run, the data check, merge, eval): every data file they read,
# a directory's included, must resolve inside that directory (the UI's workspace). The UI checks the files when the
# form is checked; this holds at the moment they are read too (a link added to a dataset directory since).
WORKSPACE_ENV = "QWEN_SFT_UI_WORKSPACE"


def expand_paths(spec) -> list[Path]:
    """A dataset is a file, a directory of data files (or one written by datasets' save_to_disk), or a list of them."""
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    paths: list[Path] = []
    for s in specs:
        if not isinstance(s, (str, Path)) or not str(s).strip():
            raise UserError(f"dataset: empty path {s!r} (an unset variable?); name a data file or directory")
        p = Path(s)
        if not p.exists():
            raise UserError(f"{p}: dataset path does not exist")
        if p.is_dir() and columnar.is_save_to_disk_dir(p):
            paths.extend(columnar.save_to_disk_files(p))
        elif p.is_dir():
            columnar.check_not_dataset_dict(p)
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in DATA_SUFFIXES)
            if not found:
                raise UserError(f"{p}: directory holds no data files ({', '.join(DATA_SUFFIXES)})")
            paths.extend(found)
        else:
            paths.append(p)
    _check_workspace(paths)
    return paths


def _check_workspace(paths: list[Path]) -> None:
    root = os.environ.get(WORKSPACE_ENV)
    if not root:
        return
    root_dir = Path(root).resolve()
    for p in paths:
        target = p.resolve()
        if target != root_dir and root_dir not in target.parents:
            raise UserError(f"{p}: leads to {target}, outside the workspace {root_dir} of `qwen-sft ui`, which lets a "
                            "run it started read only files inside it (a symbolic link in a dataset directory?)")


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


def _short(value, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _weight(m: dict, role: str) -> int | None:
    """OpenAI's per-message training flag: an assistant turn may carry "weight": 0 (not trained) or 1."""
    if "weight" not in m:
        return None
    w = m["weight"]
    if role != "assistant":
        raise RowError("weight", f"only assistant turns take a weight (0: not trained, 1: trained); this is a {role} "
                                 "turn")
    if type(w) is not int or w not in (0, 1):
        raise RowError("weight", f"expected 0 (not trained) or 1 (trained), got {_short(w)}")
    return w


def _unknown_keys(m: dict, known: set) -> None:
    extra = sorted(k for k, v in m.items() if k not in known and v is not None)
    if extra:
        raise RowError(extra[0], f"unknown message key (known: {', '.join(sorted(known))}); it would be ignored, "
                       "so rename or remove it")


def _assistant(content: str, reasoning: str | None = None, tool_calls=None, key: str = "content",
               weight: int | None = None) -> dict:
    msg = {"role": "assistant", "content": _LEADING_BLANK_LINES.sub("", content)}
    inline_reasoning, answer = split_think(content)
    if inline_reasoning is not None:
        if reasoning:
            raise RowError(key, "has both reasoning_content and a <think> block")
        if not answer.strip() and not tool_calls:
            raise RowError(key, "empty after the </think> block (no reply to train on)")
        reasoning, msg["content"] = inline_reasoning, _LEADING_BLANK_LINES.sub("", answer)
    if reasoning and "</think>" in reasoning:  # (inline reasoning ends at the first one: it cannot hold another)
        raise RowError("reasoning_content", "contains </think>, which closes the think block: the model would learn to "
                       "end its reasoning there (and a server's reasoning parser would cut it there); remove it")
    if reasoning:
        msg["reasoning_content"] = reasoning
    if tool_calls:
        msg["tool_calls"] = tool_calls
        if not msg["content"].strip():
            # Whitespace before the calls ('  ' + the template's '\n' before <tool_call>) would merge with the
            # header's '\n' into one token across the prompt/reply edge; it carries nothing: the calls alone.
            msg["content"] = ""
    if weight is not None:
        msg["weight"] = weight
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
        if not (
            isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) and x.strip() for x in pair)
        ):
            raise RowError(f"history[{i}]", "expected a [user, assistant] pair of non-empty strings")
        messages += [{"role": "user", "content": pair[0]}, _assistant(pair[1], key=f"history[{i}]")]
    user = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
    messages += [{"role": "user", "content": user}, _assistant(output, key="output")]
    return Conversation(messages, format="alpaca")


def is_user_query(message: dict) -> bool:
    """A user turn that Qwen3's chat template counts as a query: not a '<tool_response>...</tool_response>' block."""
    content = message.get("content")
    return message["role"] == "user" and isinstance(content, str) and \
        not (content.startswith("<tool_response>") and content.endswith("</tool_response>"))


def _check_turns(messages: list[dict], key: str) -> None:
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError(key, "no assistant turn to train on")
    if not any(m["role"] == "assistant" and m.get("weight", 1) for m in messages):
        raise RowError(key, "no assistant turn to train on (every assistant turn has weight 0)")
    if messages[-1]["role"] != "assistant":
        raise RowError(f"{key}[{len(messages) - 1}]", f"the last turn is '{messages[-1]['role']}'; a row must end with "
                                                      "an assistant reply")
    # Qwen3's template writes the think block only for replies after the last user query. Without one,
    # the last reply is rendered with no think block, while a served prompt always has it
    # (enable_thinking=False: the empty block ends the prompt; True: the model writes '<think>'):
    # the row would train a prompt / reply that inference never produces, and lose its reasoning.
    if not any(is_user_query(m) for m in messages):
        raise RowError(key, "no user query (only system, tool or '<tool_response>' turns): Qwen3's chat template "
                       "renders such a reply without the think block that every served prompt has; add the "
                       "user's question")


def _arguments(key: str, args) -> dict:
    """A call's arguments as an object: given as one, or as a string holding a JSON object (OpenAI's wire form).
    Templates render the object (Qwen3 as JSON, Qwen3.5 as one <parameter=...> per key), as a server does after
    parsing the string; anything else is refused."""
    if isinstance(args, str):
        try:
            parsed = json.loads(args)
        except (ValueError, RecursionError):
            raise RowError(key, f"not valid JSON ({_short(args)}); give an object, or a string holding a JSON "
                           "object") from None
        if not isinstance(parsed, dict):
            raise RowError(key, f"a string holding a JSON {type(parsed).__name__}, not an object; give the arguments "
                           "as an object ({\"name\": value, ...})")
        return parsed
    if not isinstance(args, dict):
        raise RowError(key, "missing" if args is None else
                       f"expected an object or a string holding a JSON object, got {type(args).__name__}")
    return args


def _tool_calls(value) -> list:
    """OpenAI-style calls, [{"type": "function", "function": {"name", "arguments"}}] (or the bare
    {"name", "arguments"}), checked here: the chat template would fail on them, or silently render
    a control token inside a call, otherwise. Arguments come back as objects (_arguments)."""
    if not isinstance(value, list):
        raise RowError("tool_calls", f"expected a list of tool calls, got {type(value).__name__}")
    calls = []
    for j, outer in enumerate(value):
        key, call = f"tool_calls[{j}]", outer
        if not isinstance(call, dict):
            raise RowError(key, f"expected an object, got {type(call).__name__}")
        if "function" in call:
            call, key = call["function"], key + ".function"
            if not isinstance(call, dict):
                raise RowError(key, f"expected an object with name and arguments, got {type(call).__name__}")
        name = call.get("name")
        if not isinstance(name, str) or not name.strip():
            raise RowError(f"{key}.name", "missing" if name is None else "expected a non-empty string")
        args = _arguments(f"{key}.arguments", call.get("arguments"))
        _check_control_tokens(f"{key}.name", name)
        # Rendered inside the trained call (as JSON, or key by key): its strings must be checked too.
        _check_control_tokens(f"{key}.arguments", json.dumps(args, ensure_ascii=False))
        call = {**call, "arguments": args}
        calls.append({**outer, "function": call} if "function" in outer else call)
    return calls


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
        if not isinstance(role, str) or role not in ROLES:
            raise RowError(f"{key}.role", f"unknown role {_short(role)} (expected one of {', '.join(ROLES)})")
        try:
            _unknown_keys(m, MESSAGE_KEYS)
            weight = _weight(m, role)
            if role == "assistant":
                tool_calls = _tool_calls(m["tool_calls"]) if m.get("tool_calls") is not None else None
                content = _text(m, "content", required=not tool_calls) or ""
                reasoning = _text(m, "reasoning_content", required=False)
                messages.append(_assistant(content, reasoning, tool_calls, weight=weight))
            else:
                messages.append(
                    {"role": role, "content": _text(m, "content", required=True, allow_empty=role != "user")}
                )
        except RowError as e:
            raise RowError(f"{key}.{e.field}", e.message) from None
    _check_turns(messages, "messages")
    tools = row.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise RowError("tools", f"expected a list, got {type(tools).__name__}")
    for j, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            raise RowError(f"tools[{j}]", f"expected an object (a function's JSON schema), got {type(tool).__name__}")
        _check_control_tokens(f"tools[{j}]", json.dumps(tool, ensure_ascii=False))  # rendered into the system turn
    return Conversation(messages, tools=tools or None, format="messages")


def from_sharegpt(row: dict) -> Conversation:
    raw = row.get("conversations")
    if not isinstance(raw, list) or not raw:
        raise RowError("conversations", "expected a non-empty list")
    messages = []
    system = _text(row, "system", required=False)
    if system and system.strip():
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(raw):
        key = f"conversations[{i}]"
        if not isinstance(m, dict):
            raise RowError(key, f"expected an object, got {type(m).__name__}")
        sender = m.get("from")
        role = SHAREGPT_ROLES.get(sender) if isinstance(sender, str) else None
        if role is None:
            raise RowError(
                f"{key}.from", f"unknown role {_short(sender)} (expected one of {', '.join(SHAREGPT_ROLES)})"
            )
        try:
            _unknown_keys(m, SHAREGPT_KEYS)
            weight = _weight(m, role)
            value = _text(m, "value", required=True, allow_empty=role == "system")
            messages.append(_assistant(value, key="value", weight=weight) if role == "assistant"
                            else {"role": role, "content": value})
        except RowError as e:
            raise RowError(f"{key}.{e.field}", e.message) from None
    _check_turns(messages, "conversations")
    return Conversation(messages, format="sharegpt")


PARSERS = {"alpaca": from_alpaca, "messages": from_messages, "sharegpt": from_sharegpt}


SCHEMA_KEYS = {"messages": ("messages",), "sharegpt": ("conversations",), "alpaca": ("instruction", "output")}


def detect_schema(row: dict) -> str:
    found = [schema for schema, keys in SCHEMA_KEYS.items() if any(k in row for k in keys)]
    if len(found) > 1:
        # Reading one would silently drop the other's conversation.
        keys = [k for schema in found for k in SCHEMA_KEYS[schema] if k in row]
        raise RowError("(row)", f"holds fields of several formats ({', '.join(keys)}); keep one, or force one with "
                                "--format / data_format")
    if found:
        return found[0]
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


def _decode_lines(data: bytes):
    """Yield (line number, text or None if not UTF-8), BOM removed, CRLF tolerated: one line at a time, so that
    a large file is not held a second time as a list of lines."""
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    n = 0
    while True:
        end = data.find(b"\n", start)
        raw = data[start:] if end == -1 else data[start:end]
        n += 1
        try:
            text = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            text = None
        yield n, text
        if end == -1:
            return
        start = end + 1


def _read_text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            [f"{path}:{line}: (file): not valid UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8"],
            skippable=False,
        ) from None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _short_path(where: str, n: int = 60) -> str:
    return where if len(where) <= n else where[:n] + "..."


def structure_problem(row) -> RowError | None:
    """A row nested deeper than MAX_DEPTH, or text that is not valid Unicode (a lone surrogate from a '\\ud83d'
    escape: it cannot be tokenized or written back as UTF-8). Iterative: a hostile row cannot exhaust the stack."""
    stack = [(row, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, str):
            bad = _SURROGATE.search(value)
            if bad:
                return RowError(where or "(row)", f"lone surrogate {bad.group()!r} at character {bad.start()}: "
                                "not valid Unicode (a broken emoji escape?); fix the text")
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth >= MAX_DEPTH:
            return RowError(_short_path(where), f"nested more than {MAX_DEPTH} levels deep")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            if isinstance(k, str) and _SURROGATE.search(k):
                return RowError(where or "(row)", "a key is not valid Unicode (lone surrogate)")
            stack.append((v, depth + 1, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}" if where else k))
    return None


def _load_row(text: str):
    """One JSON row, or a RowError: malformed, too deep for the parser, a number too long, or a bad structure."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        return RowError("(line)", f"malformed JSON: {e.msg} at column {e.colno}")
    except RecursionError:
        return RowError("(line)", f"nested more than {MAX_DEPTH} levels deep")
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        return RowError("(line)", f"unreadable JSON: {str(e).split(':')[0]}")
    # Only text with many brackets can be deep, only text with a \\uD8xx-\\uDFxx escape can hold a surrogate.
    if text.count("[") + text.count("{") > MAX_DEPTH or _SURROGATE_ESCAPE.search(text):
        return structure_problem(row) or row
    return row


def _iter_jsonl(path: Path, data: bytes):
    for n, text in _decode_lines(data):
        if text is None:
            yield n, RowError("(line)", "not valid UTF-8; save the file as UTF-8")
            continue
        if not text.strip():
            continue
        if len(text) > MAX_ROW_BYTES:
            yield n, RowError("(line)", f"{len(text) / 2**20:.0f} MiB in one row; rows over {MAX_ROW_BYTES // 2**20} "
                                        "MiB "
                              "are refused")
            continue
        yield n, _load_row(text)


def _iter_json(path: Path, data: bytes):
    if len(data) > MAX_JSON_BYTES:
        raise DataError([f"{path}:1: (file): {len(data) / 2**30:.1f} GiB of JSON read as one document; write the "
                         f"rows as JSONL (one per line) for files over {MAX_JSON_BYTES // 2**30} GiB"], skippable=False)
    text = _read_text(path, data)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and not text.lstrip().startswith("["):  # a .json file holding JSON Lines
            yield from _iter_jsonl(path, data)
            return
        what = (f"extra data after the JSON array at line {e.lineno}, column {e.colno}; remove it" if e.msg == "Extra "
                                                                                                               "data"
                else f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})")
        raise DataError([f"{path}:{e.lineno}: (file): {what}"], skippable=False) from None
    except RecursionError:
        raise DataError([f"{path}:1: (file): nested more than {MAX_DEPTH} levels deep"], skippable=False) from None
    except ValueError as e:
        raise DataError([f"{path}:1: (file): unreadable JSON: {str(e).split(':')[0]}"], skippable=False) from None
    if isinstance(rows, dict) and isinstance(rows.get("data"), list):
        rows = rows["data"]
    if not isinstance(rows, list):
        raise DataError(
            [f"{path}:1: (file): expected a JSON list of rows (or JSONL, one row per line)"], skippable=False
        )
    # Line numbers of array items are not kept by json; name the item index instead.
    for i, row in enumerate(rows):
        yield f"item {i}", structure_problem(row) or row


def _csv_records(path: Path, reader):
    """(first line, fields) per record; broken quoting stops the file, naming the record's line."""
    line = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if "field larger than field limit" in str(e):
                raise DataError(
                    [f"{path}:{line}: (row): a cell over {MAX_ROW_BYTES // 2**20} MiB (a quote left open?)"],
                    skippable=False,
                ) from None
            if "NUL" in str(e):
                raise DataError(
                    [f"{path}:{line}: (row): a NUL byte; this is not a text CSV file"], skippable=False
                ) from None
            hint = "a quoted cell is never closed" if "end of data" in str(e) else \
                "a quote inside a quoted cell must be doubled (\"\"), and nothing may follow the closing quote"
            raise DataError([f"{path}:{line}: (row): broken CSV quoting ({e}): {hint}"], skippable=False) from None
        # A record starts on the line after the previous one ended (quoted cells span lines).
        yield line, fields
        line = reader.line_num + 1


def _iter_csv(path: Path, data: bytes, columns: ColumnMap, delimiter: str, use: "_RenameUse"):
    # CRLF files (Windows) also have CRLF inside quoted multi-line cells: train on '\n', not '\r\n'.
    # strict: a quote left open would otherwise swallow every following row into one cell.
    # A long reply is a normal cell: the csv module's 128 KiB cell limit is lifted to MAX_ROW_BYTES.
    csv.field_size_limit(MAX_ROW_BYTES)
    reader = csv.reader(
        io.StringIO(_read_text(path, data).replace("\r\n", "\n"), newline=""), delimiter=delimiter, strict=True
    )
    records = _csv_records(path, reader)
    _, header = next(records, (1, []))
    if not header:
        return
    renamed = columns.renames()
    needed = [("instruction", columns.instruction), ("output", columns.output)]
    missing = [(f"--{f}_col", col) for f, col in needed if col not in header]
    # input / system are optional in each file; a renamed one that no file of the dataset has is a typo (_RenameUse).
    for f in renamed:
        if renamed[f] in header:
            use.seen.add(f)
        else:
            use.csv_missing.setdefault(f, (path, header))
    if missing:
        # A question-only CSV cannot train anything: there is no reply to learn. Refuse it loudly.
        raise DataError([f"{path}:1: {name}: column not found (columns are {header}); set {flag} to the column "
                         "that holds it" for flag, name in missing], skippable=False)
    used = {columns.instruction, columns.input, columns.output, columns.system}
    doubled = sorted({c for c in header if c in used and header.count(c) > 1})
    if doubled:
        raise DataError([f"{path}:1: {c}: column appears {header.count(c)} times in the header; rename all but one"
                         for c in doubled], skippable=False)
    rows = 0
    for start, fields in records:
        if not fields:
            continue  # blank line
        rows += 1
        record = dict(zip(header, fields))
        # Too many cells, or too few to reach a needed column: the row does not line up with the header.
        if len(fields) > len(header) or (
            len(fields) < len(header) and not {columns.instruction, columns.output} <= set(record)
        ):
            yield start, RowError("(row)", f"{len(fields)} fields, header has {len(header)}")
            continue
        row = {"instruction": record.get(columns.instruction), "output": record.get(columns.output)}
        for key, col in (("input", columns.input), ("system", columns.system)):
            if col in record and record[col] is not None:
                row[key] = record[col]
        yield start, row
    if not rows:
        raise DataError([f"{path}:2: (file): no rows after the header line"], skippable=False)


class _RenameUse:
    """Which --*_col renames some row or CSV header had, over all the files of a dataset."""

    def __init__(self):
        self.seen: set[str] = set()
        self.json_file: Path | None = None  # the first JSON file with alpaca rows (where a rename could apply)
        self.csv_missing: dict[str, tuple[Path, list[str]]] = {}  # field -> the first CSV without its column

    def check(self, renames: dict[str, str]) -> None:
        """A rename that no CSV header and no JSON row of the dataset had is a typo, not a choice: refused."""
        problems = []
        for f in (f for f in renames if f not in self.seen):
            if f in self.csv_missing:
                path, header = self.csv_missing[f]
                problems.append(f"{path}:1: {renames[f]}: column not found (columns are {header}); set --{f}_col to "
                                "the column that holds it")
            elif self.json_file is not None:
                problems.append(f"{self.json_file}:1: {renames[f]}: no row has this field; set --{f}_col to the key "
                                f"that holds the {f}")
        if problems:
            raise DataError(problems, skippable=False)


def load_file(path: Path, fmt: str | None = None, columns: ColumnMap | None = None, use: _RenameUse | None = None):
    """Yield (line, row-or-RowError, schema) for one file. fmt: container or schema name or None.
    use: shared by the files of one dataset, which checks the renames once at its end (a rename for a CSV
    column must not be refused in the dataset's messages file); None: checked for this file alone."""
    suffix = path.suffix.lower().lstrip(".")
    container = fmt if fmt in CONTAINERS else suffix
    schema = fmt if fmt in SCHEMAS else None
    own = use is None
    use = _RenameUse() if own else use
    if f".{container}" in columnar.SUFFIXES:
        rows = columnar.iter_columnar(path)
    else:
        rows, schema = _text_rows(path, container, schema, columns, use)
    renames = columns.renames() if columns and schema in (None, "alpaca") else {}
    for line, row in rows:
        if container not in ("csv", "tsv") and renames and isinstance(row, dict) and "messages" not in row \
                and "conversations" not in row:
            use.json_file = use.json_file or path
            row = _rename(row, renames, use.seen)
        yield line, row, schema
    if own:
        use.check(renames)


def check_text_file(path: Path, data: bytes) -> None:
    """The whole-file problems of a text data file: empty (or blank), or UTF-16."""
    if not data.lstrip(b"\xef\xbb\xbf").strip():
        raise DataError([f"{path}:1: (file): empty file"], skippable=False)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError([f"{path}:1: (file): UTF-16 text; save the file as UTF-8"], skippable=False)


def _text_rows(path: Path, container: str, schema: str | None, columns: ColumnMap | None, use: _RenameUse):
    """(rows, schema) of a JSONL / JSON / CSV / TSV file: (line, row-or-RowError) pairs."""
    data = path.read_bytes()  # once: the readers below take it
    check_text_file(path, data)
    if container in ("csv", "tsv"):
        return _iter_csv(path, data, columns or ColumnMap(), "\t" if container == "tsv" else ",", use), "alpaca"
    if container == "json":
        return _iter_json(path, data), schema
    if container == "jsonl" or schema:
        return _iter_jsonl(path, data), schema
    raise UserError(f"{path}: unknown file type '.{path.suffix.lower().lstrip('.')}'; use .jsonl, .json, .csv, .tsv, "
                    ".parquet or .arrow, or pass --format")


def _rename(row: dict, renames: dict[str, str], seen: set) -> dict | RowError:
    """A JSON alpaca row with the user's key names read as instruction / input / output / system."""
    row = dict(row)
    for f, key in renames.items():
        if key in row:
            seen.add(f)
            if f in row:
                return RowError(key, f"the row also has '{f}'; --{f}_col {key} makes them the same field")
            row[f] = row.pop(key)
    return row


def iter_rows(paths: list[Path], fmt: str | None = None, columns: ColumnMap | None = None):
    """(source 'file:line', row dict or RowError, schema) for every row of every file, in order, before
    parsing (read_row parses one; the data pipeline does that in worker processes). Whole-file problems
    raise DataError as they are met; unused renames are refused at the end."""
    use = _RenameUse()
    i = 0
    while i < len(paths):
        saved = columnar.saved_dataset(paths, i)
        if saved is None:
            for line, row, schema in load_file(paths[i], fmt, columns, use):
                yield f"{paths[i]}:{line}", row, schema
            i += 1
            continue
        n = 0  # a save_to_disk directory's shards: `DIR:row N`, N its index in the whole dataset
        for path in paths[i:i + saved[1]]:
            for _, row, schema in load_file(path, fmt, columns, use):
                yield f"{saved[0]}:row {n}", row, schema
                n += 1
        i += saved[1]
    if columns:
        use.check(columns.renames())


def read_row(where: str, row, schema: str | None) -> Conversation:
    """One row of iter_rows as a Conversation (its source set); raises RowError."""
    if isinstance(row, RowError):
        raise row
    conv = parse_row(row, schema)
    conv.source = where
    return conv


def load_dataset(
    spec, fmt: str | None = None, columns: ColumnMap | None = None, skip_invalid: bool = False
) -> LoadResult:
    """Read every row of every file. Raises DataError listing all problems unless skip_invalid."""
    paths = expand_paths(spec)
    result = LoadResult(files=[str(p) for p in paths])
    for where, row, schema in iter_rows(paths, fmt, columns):
        try:
            conv = read_row(where, row, schema)
        except RowError as e:
            result.invalid.append(f"{where}: {e}")
            continue
        result.rows_per_format[conv.format] += 1
        result.conversations.append(conv)
    if result.invalid and not skip_invalid:
        raise DataError(result.invalid)
    if not result.conversations:
        raise DataError([f"{', '.join(result.files)}: no valid rows"] + result.invalid, skippable=False)
    return result


def write_jsonl(conversations, path: Path) -> None:
    """Write normalized rows atomically: a failed write leaves no partial file (fileio.replacing)."""
    from ..fileio import replacing

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as f:
        for conv in conversations:
            f.write(json.dumps(conv.to_json(), ensure_ascii=False) + "\n")
