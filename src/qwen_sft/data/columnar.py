"""Parquet and Arrow input (the formats of the Hugging Face Hub and of `datasets.save_to_disk`), read with pyarrow.

Rows come out as the same Python dicts a JSONL line gives, so formats.py validates them the same way. Their
place in the file is 'row N' (0-based, as `dataset[N]` and pandas number them). An Arrow struct has the same
fields in every row; a field that is null in a row is taken as absent in that row (JSONL's missing key), so
a table mixing alpaca and messages rows, or tool schemas with different keys, reads like the JSONL it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError, UserError

SUFFIXES = (".parquet", ".arrow")
BATCH_ROWS = 1024  # rows converted to Python at a time: memory stays flat on a file of any size


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UserError("reading Parquet / Arrow files needs pyarrow: pip install pyarrow") from None
    return pyarrow


def is_save_to_disk_dir(path: Path) -> bool:
    """A directory written by `datasets.Dataset.save_to_disk` (its state.json lists the data files)."""
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def save_to_disk_files(path: Path) -> list[Path]:
    """The data files of a save_to_disk directory, in the dataset's row order (state.json's order)."""
    try:
        files = [path / f["filename"] for f in json.loads((path / "state.json").read_text())["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path / 'state.json'}: not a readable datasets state file ({e})") from None
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: listed in {path / 'state.json'} but not found; save the dataset again")
    return files


def saved_dataset(paths: list[Path], i: int) -> tuple[Path, int] | None:
    """(directory, number of files) when paths[i:] starts with every data file of one save_to_disk directory, in
    its order (what expand_paths makes of that directory): its rows are named by the directory and their index in
    the whole dataset, `DIR:row N` as `dataset[N]`, not by shard. None otherwise (a shard named on its own)."""
    d = paths[i].parent
    if not is_save_to_disk_dir(d):
        return None
    try:
        files = save_to_disk_files(d)
    except UserError:
        return None
    return (d, len(files)) if paths[i:i + len(files)] == files else None


def check_not_dataset_dict(path: Path) -> None:
    """A DatasetDict directory holds one save_to_disk directory per split: which one to train on is the user's call."""
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        except (OSError, ValueError, KeyError):
            splits = []
        example = path / (splits[0] if splits else "train")
        raise UserError(f"{path}: holds a DatasetDict ({', '.join(splits) or 'several splits'}); "
                        f"name one split's directory as the dataset, e.g. {example}")


def _drop_nulls(value):
    """Struct fields that are null in this row are absent in this row, at every depth (see the module doc)."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _unreadable(path: Path, e: Exception) -> DataError:
    # A whole-file problem of a file without lines: `file: (file): ...`, never a `file:1:` it does not have.
    kind = "Parquet" if path.suffix.lower() == ".parquet" else "Arrow"
    return DataError([f"{path}: (file): not a readable {kind} file ({e})"], skippable=False)


def _arrow_batches(pa, path: Path):
    """The record batches of an Arrow file, memory-mapped (zero copy: a batch is read when its rows are)."""
    source = pa.memory_map(str(path))
    try:  # the Arrow IPC file format (Feather 2) ...
        reader = pa.ipc.open_file(source)
        return (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:  # ... or the stream format, which datasets writes
        return iter(pa.ipc.open_stream(source))


def _batches(path: Path):
    pa = _pyarrow()
    try:
        if path.suffix.lower() == ".parquet":
            yield from pa.parquet.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
            return
        for batch in _arrow_batches(pa, path):
            yield from (batch.slice(i, BATCH_ROWS) for i in range(0, batch.num_rows, BATCH_ROWS))
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, e) from None


def _slice_rows(batches, a: int, b: int) -> list[dict]:
    """Rows a..b-1 of a sequence of record batches, converting only those (and reading no batch after them)."""
    out, at = [], 0
    for batch in batches:
        if at >= b:
            break
        lo, hi = max(a - at, 0), min(b - at, batch.num_rows)
        if hi > lo:
            out.extend(batch.slice(lo, hi - lo).to_pylist())
        at += batch.num_rows
    return out


def _pieces(path: Path):
    """(first row, number of rows, rows(a, b) -> its rows a..b-1) of each piece a file can be read by alone:
    a Parquet row group (read BATCH_ROWS at a time: a group can hold a million rows), an Arrow record batch."""
    pa = _pyarrow()
    if path.suffix.lower() == ".parquet":
        f = pa.parquet.ParquetFile(path)
        first = 0
        for g in range(f.metadata.num_row_groups):
            n = f.metadata.row_group(g).num_rows
            yield first, n, lambda a, b, g=g: _slice_rows(f.iter_batches(batch_size=BATCH_ROWS, row_groups=[g]), a, b)
            first += n
        return
    first = 0
    for batch in _arrow_batches(pa, path):
        yield first, batch.num_rows, lambda a, b, batch=batch: batch.slice(a, b - a).to_pylist()
        first += batch.num_rows


def count_rows(path: Path) -> int:
    """The rows of a Parquet or Arrow file, from its metadata (no row is converted)."""
    pa = _pyarrow()
    try:
        return sum(n for _, n, _ in _pieces(path))
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, e) from None


def read_range(path: Path, start: int, stop: int) -> list[dict]:
    """Rows start..stop-1 as iter_columnar gives them, reading only the row groups / batches that hold them."""
    pa = _pyarrow()
    out: list[dict] = []
    try:
        for first, n, read in _pieces(path):
            if first >= stop:
                break
            if first + n > start:
                out.extend(_drop_nulls(r) for r in read(max(start, first) - first, min(stop, first + n) - first))
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, e) from None
    return out


def iter_columnar(path: Path):
    """Yield ('row N', row dict) for every row of a Parquet or Arrow file, in order."""
    n = 0
    for batch in _batches(path):
        for row in batch.to_pylist():
            yield f"row {n}", _drop_nulls(row)
            n += 1
    if n == 0:
        raise DataError([f"{path}: (file): no rows"], skippable=False)
