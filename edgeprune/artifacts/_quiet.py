"""Keep exporters quiet: every stdio, file-descriptor, logger, warning and ``os.environ`` swap the
artifacts package makes, in one place and safe to use from several threads at once.

Library functions never print, but the exporters do: torch and onnxscript log to their own
handlers and print progress to ``sys.stdout``; litert-torch adds a rich console, absl logging and
C++ logs (the MLIR converter, XNNPACK) written straight to file descriptors 1 and 2. All of that is
process-wide state, so two threads swapping it on their own (a device pool, a parallel fit, each
exporting) would restore each other's swaps in the wrong order and leave the process muted or
noisy. Here one lock-protected, reference-counted capture owns it: the first caller installs each
piece, the last one out restores it, and in between

- ``sys.stdout``/``sys.stderr`` are a router: text written by a thread inside :func:`quiet` goes
  to that caller's own buffer; text from any other thread goes where it went before;
- logger hierarchies named by a caller are taken over by a router with the same rule: a warning
  from a capturing thread becomes one of its notes; other threads' records reach the handlers
  they reached before;
- warnings are recorded ("always") for capturing threads and shown as before for the others
  (through :mod:`edgeprune._warnings`, which the pruning engine shares);
- with ``fds=True`` file descriptors 1 and 2 point at a scratch file (C++ writes bypass
  ``sys.stdout``; they cannot be told apart by thread); Python text of other threads still
  reaches the real descriptors;
- ``env`` entries are set while any caller needs them and restored afterwards.

Nested use in one thread is fine: the innermost capture receives the text and notes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from edgeprune._warnings import routed

__all__ = ["Capture", "first_line", "quiet"]

MAX_NOTES = 10
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(obj: object) -> str:
    """The first line of ``str(obj)`` without ANSI colours, at most 300 characters (the type's
    name when empty): how an exporter's message becomes a note or an error message."""
    text = _ANSI.sub("", str(obj)).strip()
    line = text.splitlines()[0] if text else type(obj).__name__
    return line[:300]


@dataclass
class Capture:
    """What one caller of :func:`quiet` captured: warnings and log records (WARNING and up) as
    one-line notes, each once, at most ten; and the text printed to ``sys.stdout``/``stderr``."""

    notes: list[str] = field(default_factory=list)
    text: io.StringIO = field(default_factory=io.StringIO)

    def add_note(self, text: str) -> None:
        line = first_line(text)
        if line and line not in self.notes and len(self.notes) < MAX_NOTES:
            self.notes.append(line)


@contextlib.contextmanager
def quiet(
    roots: tuple[str, ...] = (), *, fds: bool = False, env: Mapping[str, str] | None = None
) -> Iterator[Capture]:
    """Capture this thread's Python output, warnings and the ``roots`` logger hierarchies (and
    with ``fds``, every write to file descriptors 1 and 2) until the block ends."""
    capture = Capture()
    caught: list[warnings.WarningMessage] = []
    with routed(caught.append):
        token = _STATE.enter(capture, roots, fds, dict(env or {}))
        try:
            yield capture
        finally:
            _STATE.exit(token)
    for w in caught:
        if not issubclass(w.category, (DeprecationWarning, FutureWarning)):
            capture.add_note(f"{w.category.__name__}: {w.message}")


# --- the process-wide capture ------------------------------------------------------------------


@dataclass
class _Frame:
    """One caller's registration: what it captures and what it asked to be installed."""

    capture: Capture
    thread: int
    loggers: list[str]
    fds: bool
    env: list[str]


class _Router(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` while any capture is active: a capturing thread's text goes to
    its innermost capture, anyone else's to the stream that was there before."""

    def __init__(self, state: _State, which: str, original: TextIO) -> None:
        super().__init__()
        self._state = state
        self._which = which
        self.original = original

    def _target(self) -> TextIO | None:
        frame = self._state.frame_of(threading.get_ident())
        return None if frame is None else frame.capture.text  # type: ignore[return-value]

    def write(self, text: str) -> int:
        target = self._target()
        if target is not None:
            return target.write(text)
        return self._state.pass_through(self._which, self.original, text)

    def flush(self) -> None:
        if self._target() is None:
            with contextlib.suppress(Exception):
                self.original.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._target() is None and bool(getattr(self.original, "isatty", bool)())

    def fileno(self) -> int:
        if self._target() is not None:
            raise io.UnsupportedOperation("captured output has no file descriptor")
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.original, "errors", None)

    def __getattr__(self, name: str) -> Any:  # buffer, mode, ... of the stream underneath
        return getattr(self.original, name)


class _LogRouter(logging.Handler):
    """Replaces a logger's handlers while captured: a capturing thread's warnings become notes;
    other threads' records go to the handlers (and parents) the logger had before."""

    def __init__(self, state: _State, logger: logging.Logger) -> None:
        super().__init__(level=logging.NOTSET)
        self._state = state
        self.logger = logger
        self.saved_handlers = list(logger.handlers)
        self.saved_propagate = logger.propagate

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: emit is thread-safe
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        frame = self._state.frame_of(record.thread or 0)
        if frame is not None:
            if record.levelno >= logging.WARNING:  # the frame's own thread: no lock needed
                with contextlib.suppress(Exception):
                    frame.capture.add_note(record.getMessage())
            return
        for handler in self.saved_handlers:
            if record.levelno >= handler.level:
                handler.handle(record)
        if self.saved_propagate and self.logger.parent is not None:
            self.logger.parent.callHandlers(record)


class _State:
    """The one process-wide capture: reference counts of what is installed, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._frames: dict[int, list[_Frame]] = {}  # thread -> its nested captures
        self._count = 0
        self._streams: dict[str, _Router] = {}
        self._loggers: dict[str, tuple[_LogRouter, int]] = {}
        self._fd_count = 0
        self._fd_saved: dict[int, int] = {}
        self._fd_scratch: Any = None
        self._env: dict[str, tuple[str | None, int]] = {}

    def frame_of(self, thread: int) -> _Frame | None:
        stack = self._frames.get(thread)
        return stack[-1] if stack else None

    # -- entering and leaving ---------------------------------------------------------------

    def enter(self, capture: Capture, roots: tuple[str, ...], fds: bool,
              env: dict[str, str]) -> _Frame:
        with self.lock:
            frame = _Frame(capture, threading.get_ident(), [], fds, list(env))
            if self._count == 0:
                self._install_streams()
            self._count += 1
            frame.loggers = self._take_loggers(roots)
            if fds:
                self._park_fds()
            for key, value in env.items():
                saved, n = self._env.get(key, (os.environ.get(key), 0))
                self._env[key] = (saved, n + 1)
                os.environ[key] = value
            self._frames.setdefault(frame.thread, []).append(frame)
            return frame

    def exit(self, frame: _Frame) -> None:
        with self.lock:
            stack = self._frames.get(frame.thread, [])
            if frame in stack:
                stack.remove(frame)
            if not stack:
                self._frames.pop(frame.thread, None)
            for key in frame.env:
                saved, n = self._env[key]
                if n > 1:
                    self._env[key] = (saved, n - 1)
                    continue
                del self._env[key]
                if saved is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = saved
            if frame.fds:
                self._unpark_fds()
            self._release_loggers(frame.loggers)
            self._count -= 1
            if self._count == 0:
                self._restore_streams()

    # -- stdio and warnings -----------------------------------------------------------------

    def _install_streams(self) -> None:
        for which in ("stdout", "stderr"):
            current = getattr(sys, which)
            router = current if isinstance(current, _Router) else _Router(self, which, current)
            self._streams[which] = router
            setattr(sys, which, router)

    def _restore_streams(self) -> None:
        for which, router in self._streams.items():
            # someone who swapped the stream after us owns it now; our router stays harmless
            if getattr(sys, which) is router:
                setattr(sys, which, router.original)
        self._streams.clear()

    def pass_through(self, which: str, stream: TextIO, text: str) -> int:
        """Write another thread's text where it went before, even while fds 1/2 are parked."""
        try:
            own = stream.fileno() in (1, 2)
        except Exception:  # StringIO, pytest's capture, ...: not a descriptor we parked
            own = False
        with self.lock:  # the saved descriptor stays open while we write to it
            fd = self._fd_saved.get(1 if which == "stdout" else 2)
            if fd is not None and own:
                with contextlib.suppress(Exception):
                    stream.flush()
                encoding = getattr(stream, "encoding", None) or "utf-8"
                os.write(fd, text.encode(encoding, "replace"))
                return len(text)
        return stream.write(text)

    # -- loggers ----------------------------------------------------------------------------

    def _take_loggers(self, roots: tuple[str, ...]) -> list[str]:
        if not roots:
            return []
        existing = {n for n in logging.root.manager.loggerDict if n.split(".")[0] in roots}
        taken: list[str] = []
        for name in sorted(existing | set(roots)):
            if name in self._loggers:
                router, n = self._loggers[name]
                self._loggers[name] = (router, n + 1)
                taken.append(name)
                continue
            logger = logging.getLogger(name)
            if logger.handlers or name in roots:
                router = _LogRouter(self, logger)
                logger.handlers = [router]
                logger.propagate = False
                self._loggers[name] = (router, 1)
                taken.append(name)
        return taken

    def _release_loggers(self, names: list[str]) -> None:
        for name in names:
            router, n = self._loggers[name]
            if n > 1:
                self._loggers[name] = (router, n - 1)
                continue
            del self._loggers[name]
            router.logger.handlers = router.saved_handlers
            router.logger.propagate = router.saved_propagate

    # -- file descriptors 1 and 2 -----------------------------------------------------------

    def _park_fds(self) -> None:
        """Point fds 1 and 2 at a scratch file; a no-op when they cannot be duplicated."""
        self._fd_count += 1
        if self._fd_count > 1:
            return
        for router in self._streams.values():
            with contextlib.suppress(Exception):
                router.original.flush()
        try:
            saved = {1: os.dup(1), 2: os.dup(2)}
        except OSError:
            return
        self._fd_saved = saved
        self._fd_scratch = tempfile.TemporaryFile()  # noqa: SIM115 - open until the last exit
        os.dup2(self._fd_scratch.fileno(), 1)
        os.dup2(self._fd_scratch.fileno(), 2)

    def _unpark_fds(self) -> None:
        self._fd_count -= 1
        if self._fd_count > 0 or not self._fd_saved:
            return
        _flush_c_stdio()
        saved, self._fd_saved = self._fd_saved, {}
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        self._fd_scratch.close()
        self._fd_scratch = None


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers so that nothing written while parked leaks out later."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


_STATE = _State()
