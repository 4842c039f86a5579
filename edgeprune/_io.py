"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgeprune.errors import OutputExistsError

_UMASK: list[int] = []


def default_mode(*, directory: bool = False) -> int:
    """The mode a plain ``open``/``mkdir`` would give under the process umask (temp files and
    dirs are created 0600/0700; what we rename into place should not stay that private)."""
    if not _UMASK:
        current = os.umask(0o022)
        os.umask(current)
        _UMASK.append(current)
    return (0o777 if directory else 0o666) & ~_UMASK[0]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_writable(path: str | os.PathLike[str], *, force: bool, what: str = "output") -> Path:
    """Refuse to overwrite an existing output unless ``force``; the message names the fix."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(
            f"{what} {str(path)!r} exists already",
            hint="choose another path or pass --force to overwrite it",
        )
    return path
