"""Restricted unpickling for data files that only hold numpy arrays and plain Python data.

CIFAR-10 batches and the animal-shape arrays are pickles. A plain ``pickle.load`` would run
whatever a crafted file asks for, so this unpickler resolves only the globals that rebuild a
numpy array (``_reconstruct``, ``ndarray``, ``dtype``) and ``_codecs.encode`` restricted to
latin-1 (how Python 3 writes ``bytes`` at protocol 2). Dicts, lists, bytes, str and int need
no globals at all. Anything else is refused before it is called.
"""

from __future__ import annotations

import codecs
import gzip
import io
import pickle
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

from edgeprune.errors import DataSpecError, ForbiddenPickleError


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin-1 text")
    return codecs.encode(text, "latin1", errors)


@cache
def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_globals().get((module, name))
        if obj is None:
            raise _Refused(module, name)
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in data files")


class _Refused(Exception):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


def safe_load(source: str | Path | bytes | BinaryIO, *, what: str,
              compressed: bool = False) -> Any:
    """Unpickle ``source`` allowing only numpy arrays and plain data; errors name ``what``.

    ``encoding="bytes"`` reads Python 2 pickles (the real CIFAR-10 files) with their ``str``
    keys as ``bytes``, which is how the published format documents them (``b'data'``).
    """
    try:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as fh:
                raw = fh.read()
        elif isinstance(source, bytes):
            raw = source
        else:
            raw = source.read()
        if compressed:
            raw = gzip.decompress(raw)
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as exc:
        raise ForbiddenPickleError(
            f"{what} asks to run {exc.qualname} while unpickling; refused",
            hint="data pickles may hold only numpy arrays, dicts, lists, bytes, str and int — "
            "rewrite the file with plain data",
        ) from None
    except OSError as exc:
        if isinstance(source, (str, Path)) and not Path(source).exists():
            raise DataSpecError(f"{what} does not exist", hint="check the path") from None
        raise DataSpecError(f"{what} cannot be read: {exc}",
                            hint="check the file is complete and readable") from None
    except Exception as exc:  # only data-shaped failures can happen here: no code runs
        raise DataSpecError(
            f"{what} is not a valid pickle ({type(exc).__name__}: {exc})",
            hint="the file is truncated or not in the expected format; re-create or re-copy it",
        ) from None
