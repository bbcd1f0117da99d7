"""What every router shares: the server's settings, the API's error type, and the workspace rule."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..argcheck import path_problem


@dataclass
class Settings:
    workspace: Path  # resolved; every path the UI reads or writes is inside it
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None  # None: no token asked (loopback without --require-token)
    allowed_hosts: set[str] = field(default_factory=set)  # accepted Host headers ("name:port")
    allow_remote_code: bool = False
    poll_s: float = 0.5  # how often the event stream looks at the run directories


class ApiError(Exception):
    """An answer other than 200: a message for the page, and per-field messages for the form."""

    def __init__(self, status: int, message: str, fields: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.status, self.message, self.fields = status, message, fields or {}


PATH_MAX = 4096  # bytes of a whole path on Linux (open() fails with ENAMETOOLONG)


def inside(workspace: Path, path: str | Path, what: str = "path") -> Path:
    """`path` (relative to the workspace, or absolute) resolved, symlinks included; refused unless inside.

    Refused with a 400 before anything is looked up: not text, empty, a NUL, a component over 255 bytes
    (argcheck.path_problem: the CLI's check), not encodable (a lone surrogate), or a whole path over PATH_MAX."""
    if not isinstance(path, (str, Path)):
        raise ApiError(400, f"{what}: expected a path (text), got {type(path).__name__}")
    text = str(path)
    problem = "not valid text (a lone surrogate)" if not valid_text(text) else path_problem(text)
    if problem is None and len(os.fsencode(workspace / text)) >= PATH_MAX:
        problem = f"the path is over {PATH_MAX} bytes"
    if problem:
        raise ApiError(400, f"{what}: {problem}")
    try:
        resolved = (workspace / Path(text).expanduser()).resolve()
    except (OSError, RuntimeError) as e:  # a symbolic link loop (RuntimeError before Python 3.13), ...
        raise ApiError(400, f"{what}: {text}: cannot resolve it ({e})") from None
    if resolved != workspace and workspace not in resolved.parents:
        raise ApiError(403, f"{what}: {text} is outside the workspace {workspace} (start `qwen-sft ui --workspace DIR` "
                            "with a directory that holds it)")
    return resolved


def valid_text(text: str) -> bool:
    """Text that UTF-8 can hold: not a lone surrogate (JSON's "\\ud800" escape makes one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def relative(workspace: Path, path: Path) -> str:
    """A path inside the workspace as the page names it: relative, with '/'."""
    return path.relative_to(workspace).as_posix() or "."


def subfolders(folder: Path, skip: set[str]) -> list[Path]:
    """The folders of `folder` that the UI's scans look into, by name: never through a symlink (it may lead out
    of the workspace), nor into hidden folders, checkpoints or those named in `skip` (tools, caches, logs)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
            and e.name not in skip and not e.name.startswith("checkpoint-")]


def own(run_dir: Path, name: str) -> Path:
    """A file or folder of a run directory that the UI reads, writes or replaces (lora_adapters, merged, eval, a
    log), refused when it is a symbolic link: merge --overwrite would replace what it leads to, eval would write
    there, and the page would show it (the run directory itself is resolved and checked by `inside`)."""
    path = run_dir / name
    if path.is_symlink():
        raise ApiError(409, f"{run_dir.name}/{name} is a symbolic link; the UI reads and writes only a run "
                            "directory's own files (replace the link with what it points to)")
    return path
