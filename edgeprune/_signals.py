"""An interrupt that cannot be lost.

Ctrl-C raises ``KeyboardInterrupt`` wherever the main thread happens to be. Inside some native
code (an exporter, a runtime binding) that exception can be turned into an ordinary error and
swallowed by a fallback, and the long job runs on as if nothing happened. :func:`sticky_interrupts`
makes the signal stick: the handler records it as well as raising, and long jobs call
:func:`raise_if_interrupted` at their checkpoints (every step, every measurement), so the job stops
at the next one at the latest.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["raise_if_interrupted", "sticky_interrupts"]

_RECEIVED = threading.Event()


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a signal arrived under :func:`sticky_interrupts`."""
    if _RECEIVED.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def sticky_interrupts(*, terminate: bool = True) -> Iterator[None]:
    """SIGINT (and SIGTERM: a cancelled CI job) raise ``KeyboardInterrupt`` and are remembered
    until the block ends. Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        _RECEIVED.set()
        raise KeyboardInterrupt

    signals = [signal.SIGINT, *([signal.SIGTERM] if terminate else [])]
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    _RECEIVED.clear()
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _RECEIVED.clear()
