"""Entry point of the ``edgeprune`` console script.

Parsing imports only the command modules (which import nothing heavy), so ``edgeprune --help``
and ``edgeprune CMD --help`` never import torch. Known errors become one line on stderr and the
error's exit code; ``EDGEPRUNE_DEBUG=1`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import itertools
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from edgeprune import __version__
from edgeprune._signals import raise_if_interrupted, sticky_interrupts
from edgeprune.cli._output import Output, add_format_flag, split_formats
from edgeprune.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, EdgepruneError

# command name -> module under edgeprune.cli; listed in the order `--help` shows them
COMMANDS: tuple[tuple[str, str], ...] = (
    ("fit", "fit"),
    ("prune", "prune"),
    ("materialize", "materialize"),
    ("export", "export"),
    ("info", "info"),
    ("evaluate", "evaluate"),
    ("finetune", "finetune"),
    ("sensitivity", "sensitivity"),
    ("measure", "measure"),
    ("gate", "gate"),
    ("report", "report"),
    ("targets", "targets"),
    ("profiles", "profiles"),
)


class _Parser(argparse.ArgumentParser):
    """argparse, except that with ``--format json`` a bad flag is one JSON error document on
    stdout (and one line on stderr) like every other error, not a usage block."""

    def error(self, message: str) -> NoReturn:
        argv = sys.argv[1:] if _ARGV is None else _ARGV
        wants_json = any(a == "--format=json" for a in argv) or any(
            a == "--format" and b == "json" for a, b in itertools.pairwise(argv))
        if not wants_json:
            super().error(message)
        text = f"{message} (see: edgeprune {self.prog.split(' ', 1)[-1]} --help)" \
            if " " in self.prog else message
        Output("json").error(text, kind="UsageError")
        raise SystemExit(EXIT_USAGE)


_ARGV: list[str] | None = None  # the argv main() parses (tests pass their own)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgeprune",
        description="Fit trained PyTorch vision models onto ARM edge devices.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 budget cannot be met (fit), "
        "4 budget exceeded (gate), 130 interrupted. EDGEPRUNE_DEBUG=1 shows tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"edgeprune {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, module_name in COMMANDS:
        try:
            module = importlib.import_module(f"edgeprune.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"edgeprune.cli.{module_name}":
                raise
            continue  # command not built yet
        sub = module.add_parser(subparsers)
        add_format_flag(sub, getattr(module, "ARTIFACT_FORMATS", ()))
        sub.set_defaults(_run=module.run, _interrupted=getattr(
            module, "INTERRUPTED", "interrupted — nothing was written; run the command again"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    global _ARGV
    parser = build_parser()
    _ARGV = list(argv) if argv is not None else None
    try:
        args = parser.parse_args(argv)
    finally:
        _ARGV = None
    split_formats(args)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    out = Output(getattr(args, "format", "text"))
    previous = warnings.showwarning
    if not os.environ.get("EDGEPRUNE_DEBUG"):
        warnings.showwarning = _one_line_warning
    try:
        # Ctrl-C and SIGTERM (a cancelled CI job) stop every command the same way: the signal
        # sticks (edgeprune._signals), so native code that swallows a KeyboardInterrupt cannot
        # make a long loop run on; temp files are cleaned up on the way out
        with sticky_interrupts():
            code = int(args._run(args, out) or 0)
            raise_if_interrupted()  # a signal swallowed near the end does not exit 0
            return code
    except EdgepruneError as exc:
        if os.environ.get("EDGEPRUNE_DEBUG"):
            raise
        out.error(exc.one_line(), kind=type(exc).__name__)
        return exc.exit_code
    except KeyboardInterrupt:
        message = getattr(args, "_interrupted", "interrupted")  # a command's INTERRUPTED
        out.error(message(args) if callable(message) else message, kind="Interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
    except ModuleNotFoundError as exc:  # an optional package the job needs is not installed
        if os.environ.get("EDGEPRUNE_DEBUG") or not exc.name:
            raise
        package = exc.name.split(".")[0]
        out.error(f"Python package {package!r} is not installed — pip install {package} "
                  "(EDGEPRUNE_DEBUG=1 shows where it was needed)", kind="MissingPackage")
        return EXIT_ERROR
    except OSError as exc:
        if os.environ.get("EDGEPRUNE_DEBUG") or exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        out.error(f"{exc.strerror}{where} — {_ENVIRONMENT_ERRNOS[exc.errno]}",
                  kind="EnvironmentError")
        return EXIT_ERROR
    finally:
        out.close()  # progress bars off the terminal, whatever ended the command
        warnings.showwarning = previous


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: Any = None, line: str | None = None) -> None:
    """Warnings as the CLI's other messages: one line, no source path (EDGEPRUNE_DEBUG=1 shows
    Python's own format)."""
    text = " ".join(str(message).split())
    (file or sys.stderr).write(f"edgeprune: warning: {text}\n")


# local machine faults a user can fix, reported in one line instead of a traceback
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "free some disk space (or use --out on another disk) and run again",
    errno.EDQUOT: "free some of your disk quota and run again",
    errno.EROFS: "write to a writable directory (--out)",
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
