"""The one output sink of the CLI.

Commands hand it results as plain data (dicts of JSON types) plus an optional human renderer;
in ``--format json`` mode it prints exactly one JSON document on stdout, and progress and
messages go to stderr so stdout stays machine-readable. :meth:`Output.progress` is the one
renderer of the library's progress events for every command: rich progress bars on a terminal,
plain one-line messages otherwise (library code only emits the events, it never prints).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any


def add_format_flag(parser: argparse.ArgumentParser,
                    artifact_formats: tuple[str, ...] = ()) -> None:
    """``--format text|json``; a command that writes artifacts may also take their formats.

    ``edgeprune export --format onnx --format json`` names both the artifact and the output
    format; :func:`split_formats` separates them after parsing.
    """
    if not artifact_formats:
        parser.add_argument(
            "--format", choices=("text", "json"), default="text",
            help="output format: human text (default) or one JSON document on stdout")
        return
    parser.add_argument(
        "--format", action="append", choices=("text", "json", *artifact_formats), default=None,
        help=f"artifact format ({'|'.join(artifact_formats)}) "
        "and/or output format (text|json); may be given twice, e.g. --format onnx --format json")
    parser.set_defaults(_artifact_formats=artifact_formats)


def split_formats(args: argparse.Namespace) -> None:
    """Turn an appended ``--format`` list into ``args.format`` and ``args.artifact_format``."""
    artifacts = getattr(args, "_artifact_formats", ())
    if not artifacts:
        return
    given = args.format or []
    outputs = [f for f in given if f in ("text", "json")]
    kinds = [f for f in given if f in artifacts]
    if len(outputs) > 1 or len(kinds) > 1:
        raise SystemExit("edgeprune: error: give --format at most once for the artifact "
                         f"({'|'.join(artifacts)}) and once for the output (text|json)")
    args.format = outputs[0] if outputs else "text"
    args.artifact_format = kinds[0] if kinds else None


class Output:
    """Where a command's results, messages and progress go (one per command run).

    ``progress`` is the one renderer of the library's progress events (see :meth:`progress`);
    ``live`` (default: whether stderr is a terminal) turns counted events into rich progress bars.
    """

    def __init__(self, format: str = "text", *, live: bool | None = None) -> None:
        self.format = format
        self.json = format == "json"
        self._live = (sys.stderr.isatty() if live is None else live) and not self.json
        self._bars: _Bars | None = None
        self._lock = threading.Lock()  # progress may come from worker threads

    # results -------------------------------------------------------------------------------
    def result(self, data: dict[str, Any],
               render: Callable[[dict[str, Any]], str] | None = None) -> None:
        """Print a command's result: ``data`` as JSON, or ``render(data)`` as text."""
        self.close()
        if self.json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=_default) + "\n")
        else:
            text = render(data) if render else _plain(data)
            sys.stdout.write(text.rstrip("\n") + "\n")
        sys.stdout.flush()

    def error(self, message: str, kind: str = "Error") -> None:
        self.close()
        if self.json:
            sys.stdout.write(json.dumps({"error": {"type": kind, "message": message}}) + "\n")
        sys.stderr.write(f"edgeprune: error: {message}\n")

    def close(self) -> None:
        """Take any progress bars off the terminal (results and errors do it themselves)."""
        with self._lock:
            if self._bars is not None:
                self._bars.stop()
                self._bars = None

    # messages and progress (stderr) ------------------------------------------------------------
    def info(self, message: str) -> None:
        self._line(message)

    def warn(self, message: str) -> None:
        self._line(f"edgeprune: warning: {message}")

    def progress(self, event: dict[str, Any]) -> None:
        """Render one progress event of a library function (pass ``out.progress`` as its
        ``progress=`` callback).

        Events are dicts: ``stage``, optionally ``event`` and ``message``, and counters with
        their totals (``batch``/``n_batches``, ``done``/``total``, ``done_bytes``/
        ``total_bytes``; ``epoch``/``epochs`` name the series). On a terminal a counted event
        moves a rich progress bar (its message becomes the bar's note; when the count is
        complete the bar goes and its message stays as a line); every other message is one
        line on stderr, two spaces in. Off a terminal and in ``--format json`` mode there are
        no bars: each message is a plain line on stderr (stdout stays the result alone).
        """
        message = event.get("message")
        count = _count(event) if self._live else None
        with self._lock:
            if count is None:
                if message:
                    self._write(f"  {message}")
                return
            if self._bars is None:
                self._bars = _Bars()
            finished = self._bars.update(event, *count)
            if finished and message:
                self._bars.print(f"  {message}")
            if self._bars.empty:
                self._bars.stop()
                self._bars = None

    def progress_for(self, *stages: str) -> Callable[[dict[str, Any]], None]:
        """A progress callback that renders only events of these stages (e.g. fit's own)."""

        def render(event: dict[str, Any]) -> None:
            if event.get("stage") in stages:
                self.progress(event)

        return render

    def _line(self, text: str) -> None:
        with self._lock:
            self._write(text)

    def _write(self, text: str) -> None:
        if self._bars is not None:
            self._bars.print(text)
            return
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


_COUNTERS = (("batch", "n_batches"), ("done", "total"), ("done_bytes", "total_bytes"))


def _count(event: dict[str, Any]) -> tuple[int, int, bool] | None:
    """``(done, total, in_bytes)`` of a counted event (None: it counts nothing with a total)."""
    for done_key, total_key in _COUNTERS:
        done, total = event.get(done_key), event.get(total_key)
        if isinstance(done, int) and isinstance(total, int) and total > 0:
            return done, total, done_key == "done_bytes"
    return None


class _Bars:
    """The rich progress bars on stderr: one per running series (a stage, and its epoch)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self._progress = Progress(
            TextColumn("  {task.description}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[count]}"), TextColumn("{task.fields[note]}"),
            console=Console(stderr=True), transient=True)
        self._tasks: dict[tuple[Any, ...], tuple[Any, int]] = {}  # series -> (task, done)
        self._progress.start()

    @property
    def empty(self) -> bool:
        return not self._tasks

    def update(self, event: dict[str, Any], done: int, total: int, in_bytes: bool) -> bool:
        """Move the bar of ``event``'s series; True when the series is complete (bar removed)."""
        stage = str(event.get("stage") or "working")
        epoch, epochs = event.get("epoch"), event.get("epochs")
        key = (stage, epoch)
        description = stage + (f" epoch {epoch}/{epochs}" if epoch is not None and epochs else "")
        note = str(event.get("message") or "")
        if not note and isinstance(event.get("loss"), float):
            note = f"loss {event['loss']:.4f}"
        count = "" if in_bytes else f"{done}/{total}"
        task, before = self._tasks.get(key, (None, 0))
        if task is not None and done < before:
            self._drop(key)  # the count started again: a new series
            task = None
        if task is None:
            task = self._progress.add_task(description, total=total, count=count, note="")
        self._tasks[key] = (task, done)
        self._progress.update(task, total=total, completed=done, count=count, note=note[:80])
        if done >= total or event.get("event") == "done":
            self._drop(key)
            return True
        return False

    def print(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        self._progress.stop()

    def _drop(self, key: tuple[Any, ...]) -> None:
        self._progress.remove_task(self._tasks.pop(key)[0])
        self._progress.refresh()  # a line printed next must not show the old bar


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned text table (no colour, safe for logs)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _plain(data: dict[str, Any], indent: int = 0) -> str:
    lines = []
    pad = "  " * indent
    for key, value in data.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines.append(_plain(value, indent + 1))
        elif isinstance(value, dict) or value is None:
            lines.append(f"{pad}{key}: –")  # unset / empty: say so rather than print nothing
        else:
            lines.append(f"{pad}{key}: {_cell(value)}")
    return "\n".join(lines)


def _default(obj: Any) -> Any:
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return str(obj)
