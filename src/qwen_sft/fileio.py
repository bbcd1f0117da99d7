"""The files of a run (config, reports, metrics, curves, logs, records, the lock): written whole, and neither
written nor read through a symbolic link (a run directory from elsewhere must not make qwen-sft touch another
file). Every run-directory file is opened by `open_run_file`: no link, nothing but a regular file (a FIFO would
block the reader for good, /dev/zero would fill its memory), and read whole only up to a bound."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from contextlib import contextmanager
from pathlib import Path

# The most a run file is read whole (a planted 100 GB sparse file must be a refusal, not a MemoryError); the
# largest real ones (loss_history.json, live.jsonl of a week-long run) are a few MiB.
READ_LIMIT = 256 * 2**20

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")


class NotRegularFile(OSError):
    """A run file's name holds a link, a directory, a FIFO, a device or a socket. An OSError, which every reader
    already handles; its strerror is the line a user reads."""


def _refused(path, kind: str) -> NotRegularFile:
    return NotRegularFile(errno.EINVAL, f"is {kind}, not a regular file (qwen-sft neither follows a link nor "
                                        "reads anything else here)", str(path))


NAME_MAX = 255  # bytes of one path component (argcheck refuses longer names before this is reached)


def side_name(name: str, tag: str, room: int = 0) -> str:
    """A hidden name beside `name` for its temporary or old copy: `.{name}.{tag}`, leaving `room` bytes for what the
    caller appends (mkdtemp's 8 random characters). A name near NAME_MAX bytes is cut and a hash of it added, so
    that `merge -o` or `check --report` of a 255-byte name does not fail with `[Errno 36] File name too long`."""
    full = f".{name}.{tag}"
    if len(full.encode("utf-8", "surrogateescape")) + room <= NAME_MAX:
        return full
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    keep = NAME_MAX - room - len(tag.encode()) - len(digest) - 3
    cut = name.encode("utf-8", "surrogateescape")[:max(keep, 0)].decode("utf-8", "ignore")  # no half character
    return f".{cut}~{digest}.{tag}"


@contextmanager
def replacing(path: Path, mode: str = "w"):
    """A new file beside `path`, put in its place (os.replace) when the block ends without an error.

    A reader never sees half a file, and a symbolic link at `path` is replaced, never written through: a run
    directory from elsewhere (a shared folder, a clone) must not make training or eval write into another file."""
    path = Path(path)
    tmp = path.with_name(side_name(path.name, f"tmp-{os.getpid()}"))
    tmp.unlink(missing_ok=True)  # a leftover of a killed write, or a link planted there
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with open(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def open_run_file(path, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """A file descriptor of the regular file at `path` (created when flags hold O_CREAT), or OSError
    (NotRegularFile when something else is there).

    Never through a symbolic link at the name, dangling or not (O_NOFOLLOW), and never blocking: O_NONBLOCK
    makes a FIFO open at once, and fstat then refuses it, a directory, a device or a socket. The strerror of the
    OSError says what is there."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        try:
            st = os.lstat(path)
        except OSError:
            raise e from None
        if stat.S_ISREG(st.st_mode):
            raise
        raise _refused(path, _kind(st.st_mode)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refused(path, _kind(st.st_mode))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def nofollow(path, flags: int) -> int:
    """open()'s opener for a run file (open_run_file): a workspace from elsewhere could hold
    `runs/x/train.log -> ~/.ssh/id_rsa` (the UI would show it, a job would append to it) or a FIFO there."""
    return open_run_file(path, flags)


def read_fd(fd: int, limit: int, path, offset: int = 0) -> bytes:
    """Up to the end of an open regular file from `offset`; OSError (EFBIG) when that is more than `limit` bytes."""
    size = os.fstat(fd).st_size - offset
    if size > limit:
        raise OSError(errno.EFBIG, f"is {size / 2**20:.1f} MiB, more than the {limit / 2**20:g} MiB qwen-sft reads "
                                   "of such a file", str(path))
    chunks, got = [], 0
    while got <= limit:  # the file may grow while it is read: never more than limit + 1 bytes
        chunk = os.pread(fd, min(1 << 20, limit + 1 - got), offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    if got > limit:
        raise OSError(errno.EFBIG, f"is more than the {limit / 2**20:g} MiB qwen-sft reads of such a file", str(path))
    return b"".join(chunks)


def read_bytes(path, limit: int = READ_LIMIT) -> bytes:
    """A run file's bytes (open_run_file), at most `limit` of them; raises OSError."""
    fd = open_run_file(path)
    try:
        return read_fd(fd, limit, path)
    finally:
        os.close(fd)


def read_text(path, limit: int = READ_LIMIT) -> str:
    """A run file's text (open_run_file, at most `limit` bytes); raises OSError, or ValueError when not UTF-8."""
    return read_bytes(path, limit).decode("utf-8")


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
