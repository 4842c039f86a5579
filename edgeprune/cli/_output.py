"""The one output sink of the CLI.

Commands hand it results as plain data (dicts of JSON types) plus an optional human renderer;
in ``--format json`` mode it prints exactly one JSON document on stdout, and progress and
messages go to stderr so stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    def __init__(self, format: str = "text") -> None:
        self.format = format
        self.json = format == "json"
        self._live = sys.stderr.isatty()  # on a terminal, progress rewrites one status line
        self._status_shown = False

    def _end_status(self) -> None:
        if self._status_shown:
            sys.stderr.write("\r\x1b[K")
            self._status_shown = False

    # results -------------------------------------------------------------------------------
    def result(self, data: dict[str, Any],
               render: Callable[[dict[str, Any]], str] | None = None) -> None:
        """Print a command's result: ``data`` as JSON, or ``render(data)`` as text."""
        self._end_status()
        if self.json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=_default) + "\n")
        else:
            text = render(data) if render else _plain(data)
            sys.stdout.write(text.rstrip("\n") + "\n")
        sys.stdout.flush()

    def error(self, message: str, kind: str = "Error") -> None:
        self._end_status()
        if self.json:
            sys.stdout.write(json.dumps({"error": {"type": kind, "message": message}}) + "\n")
        sys.stderr.write(f"edgeprune: error: {message}\n")

    # messages and progress (stderr) ------------------------------------------------------------
    def info(self, message: str) -> None:
        self._end_status()
        sys.stderr.write(message + "\n")

    def warn(self, message: str) -> None:
        self._end_status()
        sys.stderr.write(f"edgeprune: warning: {message}\n")

    def progress(self, event: dict[str, Any]) -> None:
        """Default progress callback for library functions: ``{"stage": ..., "message": ...}``."""
        msg = event.get("message")
        if not msg:
            return
        if self._live:
            sys.stderr.write(f"\r\x1b[K  {str(msg)[:150]}")
            self._status_shown = True
        else:
            sys.stderr.write(f"  {msg}\n")
        sys.stderr.flush()


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
