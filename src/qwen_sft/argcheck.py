"""Command-line arguments checked before any work starts: numbers in range, paths not empty.

argparse checks the type (`--n abc` is refused there); the range is ours: `--num_samples -1`, `--tolerance -1`
or `--max_shard_size abc` would otherwise fail late (after a whole merge) or be read as something else.
"""

from __future__ import annotations

import math
import re

from .errors import UserError


def number(flag: str, value, *, least=None, above=None, most=None) -> None:
    """Refuse a value below `least`, not above `above`, over `most`, or not finite. None passes (a default)."""
    if value is None:
        return
    if not math.isfinite(value) or (least is not None and value < least) or (above is not None and value <= above) \
            or (most is not None and value > most):
        bounds = [f">= {least}" if least is not None else "", f"> {above}" if above is not None else "",
                  f"<= {most}" if most is not None else ""]
        raise UserError(f"{flag} {value}: must be {' and '.join(b for b in bounds if b) or 'a finite number'}")


EMPTY_PATH = "empty path (an unset variable?); name a file or directory"


def empty_path(value) -> bool:
    """A path, or a list of paths, of which one is empty or blank (an unset variable would mean "this directory")."""
    return any(isinstance(v, str) and not v.strip() for v in (value if isinstance(value, list) else [value]))


NAME_MAX = 255  # bytes of one path component on Linux and macOS file systems (open() fails with ENAMETOOLONG)


def path_problem(value) -> str | None:
    """What makes a path (or any path of a list) unusable before anything is opened, or None: empty, a NUL byte,
    or a component over NAME_MAX bytes (the file system's `[Errno 36] File name too long`, late and as a traceback).
    The one check of the CLI, the config and the UI."""
    for v in value if isinstance(value, list) else [value]:
        if not isinstance(v, str):
            continue
        if not v.strip():
            return EMPTY_PATH
        if "\x00" in v:
            return "a NUL character in the path"
        long = next((c for c in v.split("/") if len(c.encode("utf-8", "surrogateescape")) > NAME_MAX), None)
        if long is not None:
            return (f"the name {long[:40]}... is {len(long.encode('utf-8', 'surrogateescape'))} bytes; "
                    f"a file or directory name may have at most {NAME_MAX}")
    return None


def path(flag: str, value) -> None:
    """Refuse an unusable path (`path_problem`)."""
    problem = path_problem(value)
    if problem:
        raise UserError(f"{flag}: {problem}")


# A run name becomes a directory, a URL path segment in the UI and a word in logs: letters (any script), digits,
# and . _ - + = @ and /, for a run inside a folder of runs. No spaces, '?', '#', ',', quotes or control characters.
RUN_NAME = re.compile(r"[\w.+=@-]+(/[\w.+=@-]+)*")


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot be a run name, or None."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name) or name.startswith("-") \
            or any(part in (".", "..") for part in name.split("/")):
        return (f"{name!r} may hold only letters, digits and . _ - + = @ (and / between folder names), "
                "and may not start with '-' or have a '.' or '..' part")
    return path_problem(name)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)?\s*$", re.IGNORECASE)
_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def size(flag: str, value: str) -> int:
    """'5GB', '500MB', '2GiB' or a byte count -> bytes (> 0)."""
    m = _SIZE.match(str(value))
    if not m:
        raise UserError(f"{flag} {value!r}: expected a size like 5GB, 500MB or 2GiB")
    x = float(m.group(1)) * (_UNITS[m.group(2).upper()] if m.group(2) else 1)
    if not math.isfinite(x) or x >= 2**63:
        raise UserError(f"{flag} {value!r}: too large")
    n = int(x)
    if n <= 0:
        raise UserError(f"{flag} {value!r}: must be more than 0 bytes")
    return n
