"""The data cache: encoded rows kept on disk under a key made of everything that determines them.

A second run, a resume, `check` or `inspect` on the same data open the rows in well under a second instead of
encoding them again. The key (sha256 of key_fields()) covers the data files (paths and contents), the
tokenizer and chat template, every field of EncodeOptions, the format options, the encoder's version and
source, and the library versions that render and tokenize; a cache whose key differs is never looked at.

Location (shown in the log of every command that uses it): the config key data_cache_dir; its default
`auto` is $QWEN_SFT_DATA_CACHE, else $QWEN_SFT_CACHE/data, else ~/.cache/qwen_sft/data; null keeps nothing
(a temporary directory, removed at exit). An entry is built in a temporary directory next to its place,
fsynced, marked COMPLETE and renamed into place (checkpoint.publish_dir); one that is unfinished, truncated,
unreadable or fails its checksums is rebuilt. `qwen-sft cache build CONFIG` builds ahead of time, `cache ls`
lists, `cache clean` removes: only directories that carry the cache's own marker (rowstore.OWN_MARKER), and
never a build that is running, or one of another host that cannot be checked from here.
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from ..errors import DataError, UserError
from ..fileio import open_run_file
from ..runlock import pid_alive
from .encode import ENCODE_VERSION, EncodeOptions
from .formats import ColumnMap, expand_paths, iter_rows
from .parallel import CHUNK_ROWS, ChunkEncoder, available_cores
from .report import ReportBuilder, encoded_flags
from .template import check_options, resolve_thinking, template_rules, tokenizer_digest
from .rowstore import OWN_MARKER, STORE_VERSION, Damaged, RowStore, RowWriter, WriteError, own_marker

TMP_PREFIX = ".tmp-"
# Source files whose code decides the encoded rows or the cached report: a change to any of them is a new key
# even if nobody bumped ENCODE_VERSION.
CODE_FILES = ("formats.py", "columnar.py", "encode.py", "template.py", "parallel.py", "report.py")


def log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- key and place


def encode_options(cfg, tokenizer) -> EncodeOptions:
    """cfg's encoding options, enable_thinking resolved against the tokenizer's chat template (auto: the mode it
    serves; a mode it cannot serve is refused), and its template options (refused where the template does not
    know them)."""
    thinking = resolve_thinking(cfg.enable_thinking, template_rules(tokenizer, cfg.model_name_or_path),
                                cfg.model_name_or_path)
    options = check_options(cfg, tokenizer, thinking, cfg.model_name_or_path)
    return EncodeOptions(cutoff_len=cfg.cutoff_len, enable_thinking=thinking, train_on=cfg.train_on, **options)


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what tokenizes and renders: the whole tokenizer.json (vocabulary, merges, normalizer,
    pre-tokenizer, added tokens), the chat template(s) and the special tokens the template can read."""
    return tokenizer_digest(tokenizer, "fingerprint", _fingerprint)


def _fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"{type(tokenizer).__name__}: qwen-sft needs a fast (Rust) tokenizer")
    h = hashlib.sha256(backend.to_str().encode())
    h.update(json.dumps([type(tokenizer).__name__, tokenizer.chat_template, tokenizer.special_tokens_map,
                         getattr(tokenizer, "split_special_tokens", False)], sort_keys=True, default=str).encode())
    return h.hexdigest()


def key_fields(cfg, tokenizer, paths: list[Path], columns: ColumnMap | None = None) -> dict:
    """Everything that determines the encoded rows."""
    import jinja2
    import tokenizers
    import transformers

    from .. import checkpoint as ckpt

    here = Path(__file__).parent
    code = hashlib.sha256(b"".join((here / f).read_bytes() for f in CODE_FILES)).hexdigest()
    return {
        "encode_version": ENCODE_VERSION,
        "store_version": STORE_VERSION,
        "code_sha256": code,
        "encode_options": dataclasses.asdict(encode_options(cfg, tokenizer)),
        "format_options": {"data_format": cfg.data_format, "skip_invalid": cfg.skip_invalid,
                           "columns": dataclasses.asdict(columns or ColumnMap())},
        "files": [str(p) for p in paths],
        "data_sha256": ckpt.file_hash(paths),  # names and contents, as the run record's dataset_hash
        "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "jinja2": jinja2.__version__},
    }


def key_of(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def cache_root(setting: str | None) -> Path | None:
    """The cache directory for data_cache_dir `setting` (None: no lasting cache)."""
    if setting is None:
        return None
    if setting != "auto":
        return Path(setting).expanduser()
    if os.environ.get("QWEN_SFT_DATA_CACHE"):
        return Path(os.environ["QWEN_SFT_DATA_CACHE"]).expanduser()
    from ..assets import cache_root as package_cache

    return package_cache() / "data"


def _temporary_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="qwen-sft-data-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # the mapped files stay readable until unmapped
    return root


# ---------------------------------------------------------------- open or build


def open_or_build(cfg, tokenizer, dataset=None, columns: ColumnMap | None = None, log=log_stderr, stop=None,
                  workers: int | None = None) -> RowStore:
    """The encoded rows of cfg.dataset (or `dataset`): from the cache when it holds them, else encoded now
    (on `workers` processes, default cfg.preprocessing_num_workers, else all available cores) and cached.
    log: where the cache's lines go (None: only a build is announced, on stderr). stop: see ChunkEncoder."""
    paths = expand_paths(dataset or cfg.dataset)
    seen = _stat(paths)  # before the hash: a file rewritten from here on is caught after the rows are read
    fields = key_fields(cfg, tokenizer, paths, columns)
    key = key_of(fields)
    root = cache_root(cfg.data_cache_dir)
    entry = (root or _temporary_root()) / key
    if entry.exists():
        try:
            store = RowStore(entry)
            if log:
                log(f"data cache: {store.meta['rows']} encoded rows from {entry}")
            return store
        except Damaged as e:
            (log or log_stderr)(f"data cache: {entry} cannot be used ({e}); encoding again")
    workers = workers or cfg.preprocessing_num_workers or available_cores()
    return build(cfg, tokenizer, paths, columns, fields, entry, workers, log or log_stderr, stop,
                 lasting=root is not None, seen=seen)


def _stat(paths: list[Path]) -> list[tuple]:
    """What tells a rewritten file (size, mtime, inode), file by file."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev))
    return out


def _unchanged(paths: list[Path], fields: dict, seen: list[tuple] | None) -> None:
    """Refuse rows read from files that changed while they were read: the key (and the run record's dataset_hash)
    is the hash taken before reading, so the entry must hold the rows of exactly those bytes. Checked by stat and
    by hashing the files again (a copy that keeps the mtime, or a change within its resolution)."""
    from .. import checkpoint as ckpt

    now = _stat(paths)
    changed = [p for p, a, b in zip(paths, seen or now, now) if a != b]
    if not changed and ckpt.file_hash(paths) != fields["data_sha256"]:
        changed = list(paths)
    if changed:
        names = str(changed[0]) + (f" (+{len(changed) - 1} more)" if len(changed) > 1 else "")
        raise UserError(f"{names}: changed while its rows were being read; nothing was cached or trained (the rows "
                        "would be of neither version): run again once the data is written")


def build(cfg, tokenizer, paths: list[Path], columns, fields: dict, entry: Path, workers: int, log, stop=None,
          lasting: bool = True, chunk_rows: int = CHUNK_ROWS, seen: list[tuple] | None = None) -> RowStore:
    """Encode every row into a temporary directory beside `entry`, then publish it there. seen: _stat(paths) from
    before the key was hashed (None: taken now)."""
    from ..checkpoint import publish_dir

    seen = seen or _stat(paths)
    root = entry.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"data_cache_dir: cannot create {root} ({e.strerror or e}); set data_cache_dir to a "
                        "writable directory, or to null to keep no cache") from None
    _remove_dead_temps(root, entry.name)
    host, pid = socket.gethostname(), os.getpid()
    tmp = root / f"{TMP_PREFIX}{entry.name}-{host}-{pid}"
    where = f"into {entry}" if lasting else "(data_cache_dir: null, nothing is kept)"
    started = time.perf_counter()
    files = str(paths[0]) + (f" (+{len(paths) - 1} more files)" if len(paths) > 1 else "")
    log(f"data cache: encoding {files} with up to {workers} worker process(es) {where}")
    lock = None
    try:
        writer = RowWriter(tmp, encoded_flags(), {"key": entry.name, "host": host, "pid": pid, "started": time.time()})
        lock = _lock(tmp)  # held while building: a `cache clean` elsewhere sees a build that runs
        report, encoder = _encode(cfg, tokenizer, paths, columns, writer, workers, stop, chunk_rows)
        _unchanged(paths, fields, seen)
        seconds = time.perf_counter() - started
        meta = writer.close({"key": entry.name, "key_fields": fields, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "build_seconds": round(seconds, 3), "workers": encoder.used_workers or 1}, report)
        if _valid(entry):  # another process (a rank of another node, a `check`) finished the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            try:
                publish_dir(tmp, entry)  # replaces a damaged entry
            except OSError as e:
                raise WriteError(e) from e
    except WriteError as w:
        shutil.rmtree(tmp, ignore_errors=True)
        e = w.error
        reason = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise UserError(f"cannot write the data cache {entry}: {reason}; set data_cache_dir to another directory, "
                        "or free space (qwen-sft cache clean)") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    rows = meta["rows"]
    log(f"data cache: encoded {rows} rows ({meta['tokens']} tokens) in {seconds:.1f} s, "
        f"{rows / max(seconds, 1e-9):.0f} "
        f"rows/s; {_size(entry) / 2**20:.1f} MiB")
    return RowStore(entry)


def _encode(cfg, tokenizer, paths, columns, writer: RowWriter, workers: int, stop, chunk_rows: int):
    """Stream the rows through the workers into `writer`; the data report, built on the way. Errors come out as
    one load of the same data would raise them: invalid rows, then no valid row, then an encoding error."""
    opts = encode_options(cfg, tokenizer)
    builder = ReportBuilder(
        [str(p) for p in paths], cfg.cutoff_len, opts.enable_thinking, template_rules(tokenizer).kind
    )
    encoder = ChunkEncoder(tokenizer, opts, workers, chunk_rows, stop)
    error = None
    for chunk in encoder.run(iter_rows(paths, cfg.data_format, columns)):
        builder.read(chunk.invalid, chunk.formats, chunk.digests)
        error = error or chunk.error
        if error or (builder.invalid and not cfg.skip_invalid):
            encoder.encode = False  # the build fails: parse the rest only, to list every invalid row
        elif chunk.encoded:
            builder.kept(chunk.lengths, chunk.trained, chunk.flags)
            builder.dropped(chunk.dropped)
            writer.add(chunk.ids, chunk.labels, chunk.lengths, chunk.flags, chunk.sources, chunk.conversations)
    if builder.invalid and not cfg.skip_invalid:
        raise DataError(builder.invalid)
    if builder.valid_rows == 0:
        raise DataError([f"{', '.join(builder.files)}: no valid rows"] + builder.invalid, skippable=False)
    if error:
        raise UserError(error)
    return builder.report(), encoder


def _valid(entry: Path) -> bool:
    try:
        RowStore(entry)
        return True
    except (Damaged, OSError):
        return False


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _lock(tmp: Path) -> int:
    """Hold flock on a build's marker until the build ends (the descriptor is closed then)."""
    fd = open_run_file(tmp / OWN_MARKER)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh directory of this process: never held by another
    return fd


def _remove_dead_temps(root: Path, key: str) -> None:
    """Temporary directories of builds of this key on this machine whose process is gone (killed mid-build)."""
    for p in root.glob(f"{TMP_PREFIX}{key}-*"):
        found = _ours(p)
        if found is not None and _build_state(p, found)[1]:
            shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------- ls / clean


def _is_key(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _ours(p: Path) -> dict | None:
    """The marker of a directory the cache wrote (an entry, or a build's temporary directory), else None: a link, a
    file, a directory without the cache's marker or whose marker names another key. data_cache_dir may hold other
    things (a user's `.tmp-x`, a folder named with 64 hex characters): they are never listed or removed.
    An entry of the earlier layout (1, no marker) is recognised by its meta.json naming its own key."""
    key = p.name[len(TMP_PREFIX):][:64] if p.name.startswith(TMP_PREFIX) else p.name
    if not _is_key(key) or p.is_symlink() or not p.is_dir():
        return None
    marker = own_marker(p)
    if marker is not None:
        return marker if marker.get("key") == key else None
    if p.name == key and (p / "COMPLETE").is_file():
        try:
            meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        if isinstance(meta, dict) and meta.get("key") == key and meta.get("store_version") == 1:
            return {"key": key, "store_version": 1}
    return None


def _build_state(p: Path, marker: dict) -> tuple[str, bool]:
    """(status, removable) of a build's temporary directory. Removable only when provably dead: its marker is not
    locked and it names this host and a pid that is gone. A build of another host may be running even when flock
    says otherwise (flock over NFS cannot be trusted): it is left alone."""
    host, pid, here = marker.get("host"), marker.get("pid"), socket.gethostname()
    try:
        fd = open_run_file(p / OWN_MARKER)
    except OSError:
        return "unfinished build (its marker cannot be read)", False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        held = False
    except BlockingIOError:
        held = True
    finally:
        os.close(fd)
    if held or (host == here and pid_alive(pid)):
        return f"being built (pid {pid} on {host})", False
    if host == here:
        return "unfinished build (its process is gone)", True
    return (f"unfinished build of host {host} (pid {pid}), which cannot be checked from {here}: left alone; "
            "delete it by hand once that build has ended"), False


def entries(root: Path) -> list[dict]:
    """Every entry and unfinished build under root that the cache wrote: {path, key, status, removable, bytes,
    and for a usable entry rows, tokens, created, files, encode_options}. Each entry is verified (its checksums)."""
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        marker = _ours(p)
        if marker is None:
            continue  # only what the cache wrote
        item = {"path": str(p), "key": p.name, "bytes": _size(p)}
        if p.name.startswith(TMP_PREFIX):
            status, removable = _build_state(p, marker)
            out.append({**item, "status": status, "removable": removable})
            continue
        if marker.get("store_version") == 1:
            out.append({**item, "status": "earlier layout (1): no longer read", "removable": True})
            continue
        try:
            meta = RowStore(p).meta
        except (Damaged, OSError) as e:
            out.append({**item, "status": f"damaged ({e})", "removable": True})
            continue
        f = meta["key_fields"]
        out.append({**item, "status": "ok", "removable": True, "rows": meta["rows"], "tokens": meta["tokens"],
                    "created": meta["created"], "files": f["files"], "encode_options": f["encode_options"]})
    return out


def remove(root: Path, keys: list[str] | None, everything: bool = False) -> tuple[list[dict], list[dict]]:
    """Remove entries: every one (everything), those whose key starts with one of `keys`, or (neither) the
    unfinished, damaged and earlier-layout ones. Returns (removed, kept): kept are those chosen but not removed, each
    with its "reason" (a build that runs or cannot be checked from here; an error such as a read-only file system)."""
    removed, kept = [], []
    for e in entries(root):
        chosen = (
            everything or (keys and any(e["key"].startswith(k) for k in keys)) or (not keys and e["status"] != "ok")
        )
        if not chosen:
            continue
        if not e["removable"]:
            kept.append({**e, "reason": e["status"]})
            continue
        try:
            shutil.rmtree(e["path"])
        except OSError as err:
            if Path(e["path"]).exists():
                kept.append({**e, "reason": f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")})
                continue
        removed.append(e)
    return removed, kept
