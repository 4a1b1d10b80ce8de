"""JSON-lines files that a full disk, a crash or a second writer cannot silently damage.

- :func:`append_line` writes one whole line with one checked ``write`` (a short write is retried
  and, if the disk is full, the partial line is cut off again before the error is raised), then
  ``fsync``; so a line is on disk whole or not at all, unless the process dies inside the write.
- :func:`read_lines` reads every line it can and *says* what it could not: a torn last line (what
  dying inside a write leaves), undecodable bytes, lines that are not JSON objects. Nothing is
  skipped in silence: callers report the problems.
- :func:`cut_torn_tail` removes a torn last line before anything is appended after it; otherwise
  the next line written would be glued to it and lost as well.
- :func:`write_atomic` replaces a whole file (run.json, a manifest) through a temporary file and a
  rename, so readers see the old or the new file, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def encode(obj: dict) -> bytes:
    """One line: compact JSON, NaN and infinities as null (JSON has neither)."""
    return (json.dumps(_clean(obj), separators=(",", ":"), default=str) + "\n").encode()


def append_line(path: Path, obj: dict) -> None:
    """Append ``obj`` as one line; raises OSError (e.g. ENOSPC) with nothing partial left behind."""
    data = encode(obj)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        done = 0
        try:
            while done < len(data):
                n = os.write(fd, data[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                done += n
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)  # leave the file as it was: no torn line to glue onto
            raise
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` whole (temporary file in the same directory, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data, done = text.encode(), 0
            while done < len(data):
                n = os.write(fd, data[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                done += n
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class Lines:
    """What :func:`read_lines` found: the objects, and one sentence per line it could not use."""

    objects: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    torn_tail: bool = False


def read_lines(path: Path) -> Lines:
    out = Lines()
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    if not data:
        return out
    chunks = data.split(b"\n")
    last_complete = data.endswith(b"\n")
    if last_complete:
        chunks = chunks[:-1]
    for i, raw in enumerate(chunks, 1):
        is_last = i == len(chunks)
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            out.problems.append(f"{path.name}:{i}: not UTF-8 text")
            continue
        except json.JSONDecodeError:
            if is_last and not last_complete:
                out.torn_tail = True
                out.problems.append(f"{path.name}:{i}: torn last line (a write cut short), {len(raw)} bytes")
            else:
                out.problems.append(f"{path.name}:{i}: not valid JSON")
            continue
        if not isinstance(obj, dict):
            out.problems.append(f"{path.name}:{i}: a JSON {type(obj).__name__}, not an object")
            continue
        if is_last and not last_complete:
            out.torn_tail = True  # whole JSON but no newline: the next append would glue onto it
        out.objects.append(obj)
    return out


def cut_torn_tail(path: Path) -> int:
    """Remove everything after the last newline (a line a crash left unfinished); returns the
    number of bytes removed. A complete object missing only its newline gets the newline instead."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    tail = data[keep:]
    try:
        whole = isinstance(json.loads(tail.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        whole = False
    if whole:
        with open(path, "ab") as f:
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
        return 0
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return len(tail)
