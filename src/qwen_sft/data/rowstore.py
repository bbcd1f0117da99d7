"""Encoded rows on disk, memory-mapped: the storage of the data cache (data/cache.py).

One directory per encoded dataset:

    input_ids.bin, labels.bin        int32, little-endian, the kept rows' tokens back to back
    offsets.npy                      int64 [rows + 1]: row i is tokens offsets[i]:offsets[i + 1]
    flags.npy                        bool [rows, len(meta["flags"])]: Encoded's bool fields per row
    sources.bin, source_offsets.npy  each row's 'file:line', UTF-8
    conversations.bin, conversation_offsets.npy   each row as read (JSON), for the few that are shown again
    report.json, meta.json           the data report; counts, byte sizes, CRC-32s, the cache key's fields
    qwen-sft-cache.json              written first: the cache's own marker (format, key, the building host and pid),
                                     what proves the directory is the cache's (`cache clean` removes nothing else)
    COMPLETE                         written last: a directory without it was never finished

Every file's CRC-32 (per 16 MiB block) is in meta.json and checked each time the entry is opened, on every core
(a 1M-row entry, 1.4 GB: 1.0 s on 2 busy cores; docs/benchmarks.md): a same-size change (a flipped label,
swapped offsets) is a damaged entry, rebuilt, never rows trained silently wrong. A CRC finds damage, not a
deliberate edit (whoever can write the files can write their checksums too).

The tokens are mapped, never loaded: a process holds the offsets (8 bytes a row) and the pages of the rows it
reads, and the processes of a machine share those pages through the page cache. Why raw arrays and not Arrow:
docs/design.md ("Data at scale").
"""

from __future__ import annotations

import functools
import hashlib
import json
import mmap
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..fileio import fsync_path, read_text
from .encode import IGNORE_INDEX
from .formats import Conversation
from .parallel import available_cores

STORE_VERSION = 2  # 2: the cache's own marker and every file's CRC-32s (#23)
MARKER = "COMPLETE"
OWN_MARKER = "qwen-sft-cache.json"
FORMAT = "qwen-sft data cache"
CHECK_BLOCK = 16 * 2**20  # bytes per CRC-32: the blocks of an entry are checked in parallel
_NOT_CHECKED = (MARKER, OWN_MARKER, "meta.json")  # meta.json holds the CRCs
TOKEN_DTYPE = np.dtype("<i4")  # Qwen3's vocabulary (151,936) needs more than 16 bits
_BLOBS = ("sources", "conversations")  # variable-length UTF-8 per row: NAME.bin + NAME_offsets.npy (singular)


def _offsets_name(blob: str) -> str:
    return f"{blob[:-1]}_offsets.npy"


class Damaged(Exception):
    """A cache directory that cannot be used as it is (unfinished, truncated, another layout): rebuild it."""


class WriteError(Exception):
    """An OSError while writing a cache directory (a full disk, permissions), told apart from one while reading
    the data files."""

    def __init__(self, error: OSError):
        self.error = error
        super().__init__(str(error))


def _writing(method):
    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except OSError as e:
            raise WriteError(e) from e
    return wrapped


def own_marker(path: Path) -> dict | None:
    """The cache's marker in directory `path` ({"format", "store_version", "key", "host", "pid", "started"}), or
    None when there is none (or a link, or another file, or not the cache's format)."""
    try:
        marker = json.loads(read_text(path / OWN_MARKER, limit=1 << 16))
    except (OSError, ValueError, RecursionError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == FORMAT else None


class RowWriter:
    """Appends encoded rows chunk by chunk into a new directory; close() makes it complete.

    Also hashes the rows as they pass (tokens, labels, lengths): the rows' digest, which the run record's
    train split hash is made of without reading the rows again. owner: the marker's fields (key, host, pid,
    started), written before anything else."""

    @_writing
    def __init__(self, path: Path, flags: list[str], owner: dict):
        self.path, self.flags = path, flags
        path.mkdir(parents=True)
        with open(path / OWN_MARKER, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "store_version": STORE_VERSION, **owner}, f)
            f.flush()
            os.fsync(f.fileno())
        self._files = {name: open(path / name, "wb") for name in ("input_ids.bin", "labels.bin", "sources.bin",
                                                                  "conversations.bin")}
        self._lengths: list[np.ndarray] = []
        self._flag_rows: list[np.ndarray] = []
        self._blob_lengths = {b: [] for b in _BLOBS}
        self._hash = {k: hashlib.sha256() for k in ("input_ids", "labels", "lengths")}

    @_writing
    def add(self, ids: np.ndarray, labels: np.ndarray, lengths: np.ndarray, flags: np.ndarray,
            sources: list[str], conversations: list[str]) -> None:
        for name, arr in (("input_ids", ids), ("labels", labels)):
            data = np.ascontiguousarray(arr, dtype=TOKEN_DTYPE).tobytes()
            self._files[f"{name}.bin"].write(data)
            self._hash[name].update(data)
        lengths = np.asarray(lengths, dtype=np.int64)
        self._hash["lengths"].update(lengths.tobytes())
        self._lengths.append(lengths)
        self._flag_rows.append(np.asarray(flags, dtype=bool).reshape(len(lengths), len(self.flags)))
        for blob, texts in (("sources", sources), ("conversations", conversations)):
            encoded = [t.encode("utf-8") for t in texts]
            self._files[f"{blob}.bin"].write(b"".join(encoded))
            self._blob_lengths[blob].append(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))

    @_writing
    def close(self, meta: dict, report: dict) -> dict:
        """Write the index, report and meta, fsync everything, then the marker. Returns the meta written."""
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int64)
        np.save(self.path / "offsets.npy", _offsets(lengths))
        flags = np.concatenate(self._flag_rows) if self._flag_rows else np.zeros((0, len(self.flags)), dtype=bool)
        np.save(self.path / "flags.npy", flags)
        for blob, parts in self._blob_lengths.items():
            np.save(
                self.path / _offsets_name(blob), _offsets(np.concatenate(parts) if parts else np.zeros(0, np.int64))
            )
        (self.path / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        digest = hashlib.sha256("".join(h.hexdigest() for h in self._hash.values()).encode()).hexdigest()
        meta = {**meta, "store_version": STORE_VERSION, "rows": int(len(lengths)), "tokens": int(lengths.sum()),
                "flags": self.flags, "rows_sha256": digest}
        meta["sizes"] = {p.name: p.stat().st_size for p in sorted(self.path.iterdir()) if p.name != OWN_MARKER}
        meta["checksums"] = {"block_bytes": CHECK_BLOCK, "crc32": checksums(self.path, meta["sizes"], CHECK_BLOCK)}
        (self.path / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        for p in self.path.iterdir():  # np.save and write_text do not fsync
            fsync_path(p)
        (self.path / MARKER).write_text("ok\n")
        fsync_path(self.path / MARKER)
        fsync_path(self.path)
        return meta


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def checksums(path: Path, names, block: int) -> dict[str, list[int]]:
    """The CRC-32 of every `block` bytes of each named file of `path` (meta.json, the markers excepted), computed on
    every core (zlib releases the GIL); a file that cannot be read is OSError."""
    names = [n for n in names if n not in _NOT_CHECKED]
    maps: dict[str, mmap.mmap | None] = {}
    try:
        for name in names:
            with open(path / name, "rb") as f:
                maps[name] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else None
        tasks = [(name, start) for name, m in maps.items() if m is not None for start in range(0, len(m), block)]

        def crc(task) -> int:
            with memoryview(maps[task[0]]) as view, view[task[1]:task[1] + block] as part:
                return zlib.crc32(part)

        with ThreadPoolExecutor(min(len(tasks), available_cores()) or 1) as pool:
            crcs = list(pool.map(crc, tasks))
    finally:
        for m in maps.values():
            if m is not None:
                m.close()
    out: dict[str, list[int]] = {name: [] for name in names}
    for (name, _), value in zip(tasks, crcs):
        out[name].append(value)
    return out


def _map(path: Path, dtype) -> np.ndarray:
    """The file as a read-only array backed by the page cache (an empty file: an empty array)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return np.zeros(0, dtype=dtype)
        return np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=dtype)


class RowStore:
    """A complete cache directory, opened: checks it (Damaged otherwise) and maps its files.

    verify: check every file against its CRC-32s (off only where the opener's parent process has just checked
    it: a DataLoader worker started by spawn). The index is checked either way (offsets from 0, never falling,
    ending at the token count), so a row read is never out of range."""

    def __init__(self, path: Path, verify: bool = True):
        self.path = Path(path)
        if not (self.path / MARKER).is_file():
            raise Damaged(f"no {MARKER} marker (a build that did not finish)")
        if own_marker(self.path) is None:
            raise Damaged(f"no {OWN_MARKER} marker (not written by this version's cache)")
        try:
            self.meta = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
            sizes = dict(self.meta["sizes"])
            crcs = dict(self.meta["checksums"]["crc32"])
            block = int(self.meta["checksums"]["block_bytes"])
            rows = self.meta["rows"]
            if type(rows) is not int or block <= 0:
                raise ValueError("rows or block_bytes out of range")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise Damaged(f"unreadable meta.json ({e!r})") from None
        if self.meta.get("store_version") != STORE_VERSION:
            raise Damaged(f"written in layout {self.meta.get('store_version')}, this version reads {STORE_VERSION}")
        for name, size in sizes.items():
            p = self.path / name
            if not p.is_file() or p.stat().st_size != size:
                have = p.stat().st_size if p.is_file() else "no file"
                raise Damaged(f"{name}: {have} bytes, {size} expected (truncated or changed)")
        if verify:
            self._verify(sizes, crcs, block)
        try:
            self.flags: list[str] = self.meta["flags"]
            # Mapped too: only the pages of the rows read become resident (sources, conversations, flags).
            index = lambda name: np.load(self.path / name, mmap_mode="r", allow_pickle=False)  # noqa: E731
            self.offsets, self.flag_values = index("offsets.npy"), index("flags.npy")
            self.input_ids = _map(self.path / "input_ids.bin", TOKEN_DTYPE)
            self.labels = _map(self.path / "labels.bin", TOKEN_DTYPE)
            self.blobs = {b: (_map(self.path / f"{b}.bin", np.uint8), index(_offsets_name(b))) for b in _BLOBS}
        except (OSError, ValueError, KeyError) as e:
            raise Damaged(f"unreadable ({e!r})") from None
        if not (_index_ok(self.offsets, rows, len(self.input_ids)) and len(self.labels) == len(self.input_ids)
                and all(_index_ok(offsets, rows, len(data)) for data, offsets in self.blobs.values())
                and self.flag_values.shape == (rows, len(self.flags))):
            raise Damaged("the index does not match the token files")

    def _verify(self, sizes: dict, crcs: dict, block: int) -> None:
        try:
            found = checksums(self.path, sizes, block)
        except OSError as e:
            raise Damaged(f"unreadable ({e!r})") from None
        for name, got in found.items():
            want = crcs.get(name)
            if got != want:
                at = next((i for i, (a, b) in enumerate(zip(got, want or [])) if a != b), None)
                where = f" (the block at byte {at * block})" if at is not None else ""
                raise Damaged(f"{name}: its content does not match its checksum{where}: changed after it was written")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def report(self) -> dict:
        return json.loads((self.path / "report.json").read_text(encoding="utf-8"))

    def text(self, blob: str, i: int) -> str:
        data, offsets = self.blobs[blob]
        return bytes(data[offsets[i]:offsets[i + 1]]).decode("utf-8")

    def row(self, i: int) -> "Row":
        a, b = self.offsets[i], self.offsets[i + 1]
        return Row(self.input_ids[a:b], self.labels[a:b], self.text("sources", i),
                   dict(zip(self.flags, self.flag_values[i].tolist())))

    def conversation(self, i: int) -> Conversation:
        row = json.loads(self.text("conversations", i))
        return Conversation(row["messages"], row.get("tools"), source=self.text("sources", i), format=row["format"])

    def rows(self, indices=None) -> "Rows":
        return Rows(self, indices)


def _index_ok(offsets: np.ndarray, rows, total: int) -> bool:
    """An offsets array of `rows` rows over `total` items: from 0 to total, never falling (else a row would be
    read out of range, or backwards)."""
    return (offsets.ndim == 1 and len(offsets) == rows + 1 and offsets[0] == 0 and offsets[-1] == total
            and bool(np.all(offsets[1:] >= offsets[:-1])))


class Row:
    """One encoded row read from the store: input_ids and labels as int32 arrays (views of the mapped file), its
    source ('file:line'), and Encoded's bool flags as attributes (row.truncated, ...)."""

    __slots__ = ("input_ids", "labels", "source", "flags")

    def __init__(self, input_ids: np.ndarray, labels: np.ndarray, source: str, flags: dict[str, bool]):
        self.input_ids, self.labels, self.source, self.flags = input_ids, labels, source, flags

    def __getattr__(self, name: str):  # only called for names that are not slots
        try:
            return object.__getattribute__(self, "flags")[name]
        except (KeyError, AttributeError):
            raise AttributeError(name) from None

    @property
    def num_trained(self) -> int:
        return int(np.count_nonzero(self.labels != IGNORE_INDEX))


class Rows:
    """A selection of a store's rows, in a given order (the train or the validation split): len(), rows[i],
    lengths (tokens per row, without reading the tokens), and fingerprint() (what the run record hashes).

    Pickles as the store's path and the indices (a DataLoader worker started by spawn maps the files itself)."""

    def __init__(self, store: RowStore, indices=None):
        self.store = store
        self.indices = np.arange(len(store)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Rows(self.store, self.indices[i])
        return self.store.row(int(self.indices[i]))

    def __iter__(self):
        return (self.store.row(int(i)) for i in self.indices)

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        return np.asarray(np.diff(self.store.offsets)[self.indices])

    def conversation(self, i: int) -> Conversation:
        return self.store.conversation(int(self.indices[i]))

    def fingerprint(self) -> str:
        """sha256 of the store's rows digest and this selection's indices: changes with any token, label or
        row of the selection, or their order."""
        h = hashlib.sha256(self.store.meta["rows_sha256"].encode())
        h.update(self.indices.astype("<i8").tobytes())
        return h.hexdigest()

    def __getstate__(self):
        return {"path": str(self.store.path), "indices": self.indices}

    def __setstate__(self, state):
        # checked by the parent
        self.store, self.indices = (RowStore(Path(state["path"]), verify=False), state["indices"])
