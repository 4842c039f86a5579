"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
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


def check_writable(path: str | os.PathLike[str], *, force: bool, what: str = "output",
                   kind: str | None = None,
                   inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Path:
    """Refuse to overwrite an existing output unless ``force``; the message names the fix.

    Never, even with ``force``: an output that is, sits inside, or contains one of ``inputs``
    (the user's model, weights, data: replacing it would destroy them), a directory where a
    file is written (``kind="file"``, or a path ending in ``/``), or a file where a directory
    is written (``kind="dir"``).
    """
    text = os.fspath(path)
    path = Path(path)
    if kind == "file" and (text.endswith(("/", os.sep)) or path.is_dir()):
        raise OutputExistsError(f"{what} {text!r} names a directory; this writes a file",
                                hint=f"give a file name, e.g. {str(path / 'model.onnx')!r}")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise OutputExistsError(f"{what} {text!r} is a file; this writes a directory",
                                hint="choose another path for the output directory")
    refuse_overlap(path, inputs, what=what)
    if path.exists() and not force:
        raise OutputExistsError(
            f"{what} {text!r} exists already",
            hint="choose another path or pass --force to overwrite it",
        )
    return path


def refuse_overlap(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None],
                   *, what: str = "output") -> None:
    """Raise when ``out`` is, sits inside, or contains one of ``inputs`` (model specs, weight
    files, directories): writing or replacing it would destroy the input."""
    target = Path(out).resolve()
    for given in inputs:
        if not given:
            continue
        text = os.fspath(given)
        # a `file.py:factory(...)` spec: the file is the input (arguments may hold ':')
        cut = text.find(".py:")
        candidate = Path(text[:cut + 3]) if cut > 0 and not Path(text).exists() else Path(text)
        if not candidate.exists():
            continue
        source = candidate.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise OutputExistsError(f"{what} {os.fspath(out)!r} would overwrite the input "
                                    f"{text!r}", hint="choose an output path outside the input")
