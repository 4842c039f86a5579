"""Warnings routed per thread: the one place that changes the process-wide warning filters.

``warnings.catch_warnings`` swaps module-wide state, so two threads that each enter and leave it
(the pruning engine silencing Torch-Pruning, an export recording the exporter's warnings) restore
each other's saved filters in the wrong order and can leave the process silenced for good. Here
one reference-counted, lock-protected installation owns it: the first caller saves the filters and
``showwarning`` and sets "always", the last one out restores them, whichever thread that is. In
between, a warning raised in a thread inside :func:`routed` goes to that thread's innermost sink
(``None`` drops it); other threads' warnings are shown as before.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Sink", "routed"]

Sink = Callable[[warnings.WarningMessage], None]

_LOCK = threading.Lock()
_SINKS: dict[int, list[Sink | None]] = {}  # thread -> its nested sinks
_STATE: dict[str, Any] = {"count": 0, "context": None, "show_before": None}


@contextmanager
def routed(sink: Sink | None = None) -> Iterator[None]:
    """Send this thread's warnings to ``sink`` (``None``: drop them) until the block ends."""
    thread = threading.get_ident()
    with _LOCK:
        if _STATE["count"] == 0:
            context = warnings.catch_warnings()
            context.__enter__()
            warnings.simplefilter("always")
            _STATE.update(context=context, show_before=warnings.showwarning)
            warnings.showwarning = _show
        _STATE["count"] += 1
        _SINKS.setdefault(thread, []).append(sink)
    try:
        yield
    finally:
        with _LOCK:
            stack = _SINKS[thread]
            stack.pop()
            if not stack:
                del _SINKS[thread]
            _STATE["count"] -= 1
            if _STATE["count"] == 0:
                warnings.showwarning = _STATE["show_before"]
                _STATE["context"].__exit__(None, None, None)
                _STATE.update(context=None, show_before=None)


def _show(message: Any, category: type[Warning], filename: str, lineno: int,
          file: Any = None, line: str | None = None) -> None:
    stack = _SINKS.get(threading.get_ident())
    if not stack:
        _STATE["show_before"](message, category, filename, lineno, file, line)
        return
    sink = stack[-1]
    if sink is not None:
        sink(warnings.WarningMessage(message, category, filename, lineno, file, line))
