"""Writing the files of a run (config, reports, metrics, curves): whole, and never through a symbolic link."""

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
