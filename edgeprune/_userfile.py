"""Import user code named by a spec: ``path/to/file.py:factory`` or ``package.module:factory``.

Model specs (:mod:`edgeprune.models`) and data specs (:mod:`edgeprune.data`) both run user code
this way. The import machinery lives here once; each caller keeps its own wording (a
:class:`Wording`), because its errors name its own spec and fix. Importing a file runs it, like
any import: a spec names code the user chose to run.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from edgeprune.errors import EdgepruneError

_FAILED = "importing {target!r} failed: {exc_type}: {exc}"


@dataclass(frozen=True)
class Wording:
    """How one caller's import errors read.

    Each pair is ``(message, hint)``; messages are ``str.format``-ed with ``target`` (the file or
    module as the user wrote it) and, where an import raised, ``exc``. ``module_failed_hint``:
    with one, a module is "missing" only on ``ModuleNotFoundError`` and any other exception its
    import raises becomes an error with this hint; without one (None), every ``ImportError`` is
    "missing" and other exceptions propagate as they are.
    """

    error: type[EdgepruneError]
    module_prefix: str  # a file is imported as module_prefix + a hash of its resolved path
    no_file: tuple[str, str]
    not_python: tuple[str, str]
    file_failed_hint: str
    no_module: tuple[str, str]
    module_failed_hint: str | None = None


def import_user_code(target: str, wording: Wording, *, path: Path | None = None) -> ModuleType:
    """The module at ``path`` (a ``.py`` file) when given, else the importable module ``target``.

    ``target`` is what the user wrote, for messages; errors are ``wording.error`` with one line.
    """
    if path is not None:
        return _import_file(path, target, wording)
    missing = ModuleNotFoundError if wording.module_failed_hint is not None else ImportError
    try:
        return importlib.import_module(target)
    except missing as exc:
        raise _error(wording, wording.no_module, target, exc) from exc
    except Exception as exc:
        if wording.module_failed_hint is None:
            raise
        raise _error(wording, (_FAILED, wording.module_failed_hint), target, exc) from exc


def _import_file(path: Path, target: str, wording: Wording) -> ModuleType:
    if not path.is_file():
        raise _error(wording, wording.no_file, target)
    module_name = f"{wording.module_prefix}{abs(hash(str(path.resolve())))}"
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise _error(wording, wording.not_python, target)
    module = importlib.util.module_from_spec(import_spec)
    sys.modules[module_name] = module
    try:
        import_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise _error(wording, (_FAILED, wording.file_failed_hint), target, exc) from exc
    return module


def _error(wording: Wording, text: tuple[str, str], target: str,
           exc: BaseException | None = None) -> EdgepruneError:
    message, hint = text
    exc_type = type(exc).__name__ if exc is not None else ""
    return wording.error(message.format(target=target, exc=exc, exc_type=exc_type), hint=hint)


def mistyped_prefix(head: str, known: tuple[str, ...]) -> str | None:
    """``head`` of a ``head:name`` spec when it is not an importable module but close to one of
    ``known`` spec prefixes (``bultin`` for ``builtin``): the prefix it probably meant."""
    import difflib
    import importlib.util

    if "." in head or head in known:
        return None
    close = difflib.get_close_matches(head.lower(), known, n=1, cutoff=0.75)
    if not close:
        return None
    try:
        if importlib.util.find_spec(head) is not None:
            return None
    except (ImportError, ValueError):
        pass
    return close[0]
