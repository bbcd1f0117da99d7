"""The files of a run (config, reports, metrics, curves, logs, records): written whole, and neither written nor
read through a symbolic link (a run directory from elsewhere must not make qwen-sft touch another file)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path, mode: str = "w"):
    """A new file beside `path`, put in its place (os.replace) when the block ends without an error.

    A reader never sees half a file, and a symbolic link at `path` is replaced, never written through: a run
    directory from elsewhere (a shared folder, a clone) must not make training or eval write into another file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)  # a leftover of a killed write, or a link planted there
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with open(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def nofollow(path, flags: int) -> int:
    """open()'s opener that never follows a symbolic link at the name (OSError ELOOP). A workspace from elsewhere
    could hold `runs/x/train.log -> ~/.ssh/id_rsa`: the UI would show it, a job would append to it."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o644)


def read_text(path: Path) -> str:
    """A file's text, not through a symbolic link (nofollow); raises OSError."""
    with open(path, encoding="utf-8", opener=nofollow) as f:
        return f.read()


def blocking_file(path: Path) -> Path | None:
    """The first of `path` and its parents that exists and is not a directory: what stops making it a directory
    (or a file in it); None when nothing does."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's data to disk (a directory: the names in it, after a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as f:
        f.write(text)
