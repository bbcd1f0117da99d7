"""Rows of a data file, a page at a time, without loading the file: a row index per file, and a text search.

The one place the UI reads data files (switch it here when the readers change). A row is numbered as the
readers of data/formats.py number it: JSONL, the line of each non-blank line; CSV / TSV, the line its record
starts on; a JSON array, "item N". The index holds each row's byte range and label; it is built once per
(path, size, mtime) and kept for the next pages. A page reads only its rows' bytes and hands them to the
readers' own per-row code (formats._iter_jsonl, _iter_csv, structure_problem), so a row reads here exactly as
it reads in training, and a whole-file problem (empty, UTF-16, broken CSV quoting) is the reader's DataError.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import columnar, formats
from ..data.formats import DATA_SUFFIXES, ColumnMap, RowError
from ..errors import DataError, UserError

CACHED_FILES = 8
BLOCK_BYTES = 32 * 2**20  # a JSONL file is indexed a block at a time
MAX_RAW = 20_000  # characters of a row's raw text sent to the row view
ASCII_WS = b" \t\n\r\x0b\x0c"
# Bytes that make a line non-blank for certain (anything but ASCII whitespace and the bytes of multi-byte
# UTF-8 characters, which may be Unicode whitespace: such lines are decided by Python's strip(), as the reader).
_SURE = np.ones(256, dtype=bool)
_SURE[list(ASCII_WS)] = False
_SURE[0x1c:0x20] = False  # file/group/record/unit separators: str.strip() removes them too
_SURE[0x80:] = False


@dataclass
class RawRow:
    index: int  # 0-based position among the file's rows
    where: str  # "file:line" as the readers name it
    row: object  # the row dict, or the reader's RowError
    schema: str | None  # alpaca for CSV rows, else None (detected per row)
    source: bytes | dict | None = None  # the row as read: its bytes (line, record or item), or a columnar row's values

    @property
    def raw(self) -> str | None:
        """The row's text as read (a columnar row as JSON), cut at MAX_RAW. Made when asked (the row view of an
        invalid row), not for every row that a page or a search of the whole file reads."""
        if self.source is None:
            return None
        if isinstance(self.source, bytes):
            return _raw_text(self.source)
        return _raw_text(json.dumps(self.source, ensure_ascii=False, default=str).encode())


class RowIndex:
    """Byte ranges and labels of a file's rows (module doc). label(i): "12", "item 3"."""

    def __init__(self, path: Path, name: str, kind: str, starts: np.ndarray, ends: np.ndarray, labels: np.ndarray,
                 header: bytes = b""):
        self.path, self.name, self.kind = path, name, kind
        self.starts, self.ends, self.labels, self.header = starts, ends, labels, header

    def __len__(self) -> int:
        return len(self.starts)

    def label(self, i: int) -> str:
        return f"item {self.labels[i]}" if self.kind == "json" else str(self.labels[i])

    def find(self, label: str) -> int | None:
        """The index of the row a reader names by `label` ("12", "item 3"), or None."""
        text = label.strip().removeprefix("item ").strip()
        if not (text.isascii() and text.isdigit()):  # '²'.isdigit() is True, int('²') fails
            return None
        i = int(np.searchsorted(self.labels, int(text)))
        return i if i < len(self) and self.labels[i] == int(text) else None

    def read(self, start: int, count: int) -> list[RawRow]:
        stop = min(len(self), max(start, 0) + max(count, 0))
        if start >= stop:
            return []
        with open(self.path, "rb") as f:
            f.seek(int(self.starts[start]))
            data = f.read(int(self.ends[stop - 1] - self.starts[start]))
        base = int(self.starts[start])
        chunks = [data[int(self.starts[i]) - base:int(self.ends[i]) - base] for i in range(start, stop)]
        if self.kind == "csv":
            out = self._read_csv(start, stop, data)
        else:
            out = [
                RawRow(i, f"{self.name}:{self.label(i)}", self._row(chunk), None)
                for i, chunk in zip(range(start, stop), chunks)
            ]
        for row, chunk in zip(out, chunks):
            row.source = chunk
        return out

    def _row(self, chunk: bytes):
        if self.kind == "json":
            try:
                row = json.loads(chunk)
            except RecursionError:
                return RowError("(row)", f"nested more than {formats.MAX_DEPTH} levels deep")
            return formats.structure_problem(row) or row
        rows = list(formats._iter_jsonl(self.path, chunk))  # the reader's own line code: UTF-8, size, JSON, depth
        return rows[0][1] if rows else RowError("(line)", "blank")

    def _read_csv(self, start: int, stop: int, data: bytes) -> list[RawRow]:
        # The header, then the records' bytes: the reader numbers the records from the line after the header.
        header_lines = int(self.labels[0]) - 1  # the reader's line count of the header (and blank lines after it)
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        first_line = int(self.labels[start])
        got = {}
        for line, row in formats._iter_csv(self.path, self.header + data, ColumnMap(), delimiter, formats._RenameUse()):
            got[line - header_lines - 1 + first_line] = row
        return [RawRow(i, f"{self.name}:{self.labels[i]}", got.get(int(self.labels[i]), RowError("(row)", "not read")),
                       "alpaca") for i in range(start, stop)]


class ColumnarIndex:
    """A Parquet or Arrow file's rows, by number: the file's own metadata is the index (row groups, batches)."""

    kind = "columnar"

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        self.total = columnar.count_rows(path)
        if not self.total:
            raise DataError([f"{path}:1: (file): no rows"], skippable=False)

    def __len__(self) -> int:
        return self.total

    def label(self, i: int) -> str:
        return f"row {i}"

    def find(self, label: str) -> int | None:
        text = label.strip().removeprefix("row ").strip()
        return int(text) if text.isascii() and text.isdigit() and int(text) < self.total else None

    def read(self, start: int, count: int) -> list[RawRow]:
        start = max(start, 0)
        stop = min(self.total, start + max(count, 0))
        if start >= stop:
            return []
        rows = columnar.read_range(self.path, start, stop)
        return [RawRow(i, f"{self.name}:row {i}", formats.structure_problem(r) or r, None, r)
                for i, r in enumerate(rows, start)]


def _raw_text(chunk: bytes) -> str:
    """A row's bytes as the page shows them: UTF-8 (a bad byte shown as U+FFFD), at most MAX_RAW characters."""
    text = chunk.rstrip(b"\r\n")[:MAX_RAW * 4].decode("utf-8", "replace")  # a CSV record's range ends with its newline
    return text if len(text) <= MAX_RAW else text[:MAX_RAW] + f" … ({len(chunk)} bytes in all)"


# ---------------------------------------------------------------- building an index


def _line_starts(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) byte offsets of every line ('\\n' excluded), lines numbered from 1 by position."""
    newlines = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], newlines + 1)).astype(np.int64)
    ends = np.concatenate((newlines, [len(arr)])).astype(np.int64)
    return starts, ends


def _lines_of(arr: np.ndarray, data: bytes, bom: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(starts, ends, is_row) of the lines of one block of whole lines, and whether any byte is not whitespace."""
    starts, ends = _line_starts(arr)
    if bom:
        starts[0] = 3  # the reader drops the BOM
    keep = starts < len(arr)  # a final newline ends the last line; it opens no other
    starts, ends = starts[keep], ends[keep]
    if not len(starts):
        return starts, ends, np.zeros(0, bool), False
    sure = np.logical_or.reduceat(_SURE[arr], starts) & (ends > starts)
    high = np.logical_or.reduceat(arr >= 0x80, starts) & (ends > starts)
    rows = sure.copy()
    for i in np.flatnonzero(high & ~sure):  # only multi-byte characters and ASCII whitespace: Python decides
        try:
            rows[i] = bool(data[starts[i]:ends[i]].decode("utf-8").strip())
        except UnicodeDecodeError:
            rows[i] = True  # the reader yields it, as a row that is not UTF-8
    return starts, ends, rows, bool(sure.any() or high.any())


def index_jsonl(path: Path, name: str) -> RowIndex:
    """Read in blocks of BLOCK_BYTES (a line longer than a block joins the next): memory stays flat."""
    parts, offset, carry, first, line_base, anything = [], 0, b"", True, 0, False
    with open(path, "rb") as f:
        while True:
            block = f.read(BLOCK_BYTES)
            data = carry + block
            if not data:
                break
            cut = data.rfind(b"\n") + 1 if block else len(data)
            if cut == 0:  # no line end yet: read on
                carry = data
                continue
            chunk, carry = data[:cut], data[cut:]
            bom = first and chunk.startswith(b"\xef\xbb\xbf")
            if first and chunk[:2] in (b"\xff\xfe", b"\xfe\xff"):
                raise DataError([f"{path}:1: (file): UTF-16 text; save the file as UTF-8"], skippable=False)
            starts, ends, rows, seen = _lines_of(np.frombuffer(chunk, dtype=np.uint8), chunk, bom)
            anything = anything or seen
            lines = np.flatnonzero(rows) + 1 + line_base
            parts.append((starts[rows] + offset, ends[rows] + offset, lines))
            line_base += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
            offset += len(chunk)
            first = False
            if not block:
                break
    if not anything:
        raise DataError([f"{path}:1: (file): empty file"], skippable=False)
    cat = lambda k: np.concatenate([p[k] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
    return RowIndex(path, name, "jsonl", cat(0), cat(1), cat(2))


def _csv_line_starts(arr: np.ndarray) -> np.ndarray:
    """Byte offsets where each line starts as the CSV reader numbers lines: its text has each CRLF made LF, and
    then LF, a lone CR, and CRLF each end a line (a file from old Mac tools ends lines with CR alone)."""
    pair = np.flatnonzero((arr[:-1] == 13) & (arr[1:] == 10))  # each CRLF becomes one LF: its CR goes
    keep = np.ones(len(arr), dtype=bool)
    keep[pair] = False
    at = np.flatnonzero(keep)  # the file offset of each byte of the reader's text
    text = arr[keep]
    ends = text == 10
    ends[:-1] |= (text[:-1] == 13) & (text[1:] != 10)  # a CR ends a line unless an LF follows (that one ends it)
    ends[-1:] |= text[-1:] == 13
    return np.concatenate(([0], at[ends] + 1)).astype(np.int64)


def index_csv(path: Path, name: str, data: bytes) -> RowIndex:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    first_lines = [line for line, _ in formats._iter_csv(path, data, ColumnMap(), delimiter, formats._RenameUse())]
    arr = np.frombuffer(data, dtype=np.uint8)
    lines = np.asarray(first_lines, dtype=np.int64)
    starts = _csv_line_starts(arr)[lines - 1]
    ends = np.concatenate((starts[1:], [len(arr)])).astype(np.int64)
    header = data[:int(starts[0])] if len(starts) else data
    if not header.endswith((b"\n", b"\r")):  # a CR alone ends a line too (an LF after it would join it: CRLF)
        header += b"\n"
    return RowIndex(path, name, "csv", starts, ends, lines, header)


def index_json(path: Path, name: str, data: bytes) -> RowIndex:
    """A JSON array's items by their byte ranges; anything else the reader reads as JSON Lines or refuses."""
    text = formats._read_text(path, data)
    body = text.lstrip()
    if not body.startswith("["):
        rows = formats._iter_json(path, data)  # the reader's verdict: JSON Lines in a .json file, or its error
        first = next(rows, None)
        if first is not None and not str(first[0]).startswith("item"):
            return index_jsonl(path, name)
        raise DataError([f"{path}:1: (file): the row view reads a JSON array of rows (or JSON Lines); "
                         "convert this file to JSONL"], skippable=False)
    decoder, spans = json.JSONDecoder(), []
    pos, n = len(text) - len(body) + 1, len(text)
    try:
        while True:
            while pos < n and text[pos] in " \t\r\n":
                pos += 1
            if pos < n and text[pos] == "]" and not spans:
                break
            _, end = decoder.raw_decode(text, pos)
            spans.append((pos, end))
            pos = end
            while pos < n and text[pos] in " \t\r\n":
                pos += 1
            if pos < n and text[pos] == ",":
                pos += 1
                continue
            if pos < n and text[pos] == "]" and not text[pos + 1:].strip():
                break
            raise ValueError("not a plain array")
    except (ValueError, RecursionError):
        for _ in formats._iter_json(path, data):  # the reader's own error, in its words
            pass
        raise DataError([f"{path}:1: (file): unreadable JSON array"], skippable=False) from None
    chars = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    offset = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # the BOM, which the text has not
    if text.isascii():
        byte_spans = chars + offset
    else:  # character offsets to byte offsets, in one pass
        byte_spans, pos_c, pos_b = np.empty_like(chars), 0, offset
        for k, (a, b) in enumerate(chars):
            pos_b += len(text[pos_c:a].encode())
            byte_spans[k, 0] = pos_b
            pos_b += len(text[a:b].encode())
            byte_spans[k, 1] = pos_b
            pos_c = b
    return RowIndex(path, name, "json", byte_spans[:, 0].copy(), byte_spans[:, 1].copy(),
                    np.arange(len(spans), dtype=np.int64))


# ---------------------------------------------------------------- the cache


class DataFiles:
    """Row indexes of the workspace's data files, by (path, size, mtime); the newest CACHED_FILES kept."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self._cache: OrderedDict[Path, tuple[tuple, RowIndex]] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, path: Path) -> RowIndex | ColumnarIndex:
        """path: resolved, inside the workspace. Raises UserError (unknown type) or DataError (the reader's)."""
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(path)
            if hit and hit[0] == key:
                self._cache.move_to_end(path)
                return hit[1]
        index = build_index(path, path.relative_to(self.workspace).as_posix())
        with self._lock:
            self._cache[path] = (key, index)
            while len(self._cache) > CACHED_FILES:
                self._cache.popitem(last=False)
        return index


def build_index(path: Path, name: str) -> RowIndex | ColumnarIndex:
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise UserError(f"{name}: unknown file type '{suffix}'; the row view reads {', '.join(DATA_SUFFIXES)}")
    if suffix in (".jsonl",):
        return index_jsonl(path, name)
    if suffix in columnar.SUFFIXES:
        return ColumnarIndex(path, name)
    data = path.read_bytes()  # the reader parses these whole too
    formats.check_text_file(path, data)
    if suffix in (".csv", ".tsv"):
        return index_csv(path, name, data)
    return index_json(path, name, data)


def list_files(workspace: Path, max_depth: int = 6) -> list[dict]:
    """Data files in the workspace (not through symlinks, nor into hidden, tool, model or run directories)."""
    from .store import SKIP, is_run_dir

    out: list[dict] = []

    def scan(folder: Path, depth: int) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                sub = Path(e.path)
                if (
                    depth < max_depth
                    and e.name not in SKIP
                    and not is_run_dir(sub)
                    and not (sub / "config.json").exists()
                ):
                    scan(sub, depth + 1)
            elif e.is_file(follow_symlinks=False) and Path(e.name).suffix.lower() in DATA_SUFFIXES:
                st = e.stat(follow_symlinks=False)
                out.append({"path": Path(e.path).relative_to(workspace).as_posix(), "bytes": st.st_size,
                            "mtime": st.st_mtime})

    scan(workspace, 0)
    return out


# ---------------------------------------------------------------- search


def strings(value):
    """Every string in a row (values, not keys), depth first."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            stack.extend(reversed(list(v.values())))
        elif isinstance(v, list):
            stack.extend(reversed(v))


def search(index: RowIndex, text: str, start: int = 0, chunk: int = 2000):
    """Yield (rows scanned so far, [[index, "file:line", snippet] of each row whose text holds `text`]) a chunk
    at a time. Case-insensitive; the row's string values are searched (not its keys, nor JSON escapes)."""
    needle = text.casefold()
    for first in range(start, len(index), chunk):
        found = []
        for r in index.read(first, chunk):
            if isinstance(r.row, RowError):
                continue
            hit = next((s for s in strings(r.row) if needle in s.casefold()), None)
            if hit is not None:
                found.append([r.index, r.where, snippet(hit, hit.casefold().find(needle), len(text))])
        yield min(first + chunk, len(index)), found


def snippet(text: str, at: int, length: int, around: int = 40) -> str:
    a, b = max(0, at - around), min(len(text), at + length + around)
    return ("…" if a else "") + text[a:b].replace("\n", " ") + ("…" if b < len(text) else "")
