r"""Remote commands: quoting, the small POSIX ``sh`` wrapper every command runs under, and what
its two marker lines say.

The wrapper (the login shell runs it; device login shells are sh-like: dash, ash, bash)::

    cd CWD && { sh -c 'echo "EDGEPRUNE-PID $$ $PPID" >&2 && exec "$@"' sh [env K=V] ARGV \
        2>&3 3>&- & wait $!; } 3>&2 2>/dev/null
    s=$?; n=; [ "$s" -gt 128 ] && n=$(kill -l "$s" 2>/dev/null)
    printf '\nEDGEPRUNE-STATUS %s %s\n' "$s" "$n" >&2; exit "$s"

- the child announces its PID (and its wrapper's) on the first stderr line, then becomes the
  command (``exec``), so a timeout, Ctrl-C or a dropped link stops exactly the command and its
  wrapper, nothing else (see ``Connection.run``);
- the wrapper waits for it and reports its status on the last stderr line: ``128+N`` when signal
  N ended it, named by the device's own ``kill -l`` (signal numbers differ between
  architectures). OpenSSH says the same with an ``exit-signal`` channel request, which paramiko
  drops; the marker line travels on the stream every SSH server carries;
- the shell's own job notices ("Killed", "Segmentation fault") go to ``/dev/null``; the
  command's stderr reaches the real one through fd 3;
- the command runs as a background job (``&``) of a non-interactive shell, so POSIX gives it
  ``/dev/null`` as stdin and ignores SIGINT (and SIGQUIT) in it: nothing can be fed to it and an
  interrupt does not reach it. A timeout or cancel therefore stops it by PID with ``TERM``, then
  ``KILL`` if it has not exited (``Connection._kill``), never with SIGINT.

Both lines are removed before the caller sees stderr. A command that exits with 129-192 on its
own reads as killed by a signal (no shell can tell the two apart; the runner never does that).
"""

from __future__ import annotations

import contextlib
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PID_MARKER", "STATUS_MARKER", "CommandResult", "await_pid", "command_result",
           "parse_pid", "quote_command", "wrap_command"]

PID_MARKER = "EDGEPRUNE-PID "
STATUS_MARKER = "EDGEPRUNE-STATUS "
_CHILD = f'echo "{PID_MARKER}$$ $PPID" >&2 && exec "$@"'
_REPORT = ('s=$?; n=; [ "$s" -gt 128 ] && n=$(kill -l "$s" 2>/dev/null); '
           f"printf '\\n{STATUS_MARKER}%s %s\\n' \"$s\" \"$n\" >&2; exit \"$s\"")
_STATUS_LINE = re.compile(r"(\d+) ?(\S*)\n?")


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did. ``exit_status`` is -1 when the process died from a signal;
    ``signal`` names it (``KILL``, ``SEGV``, ``ILL``, ...) when the device said which — a
    ``KILL`` with no output is usually the OOM killer."""

    command: str
    exit_status: int
    stdout: str
    stderr: str
    signal: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def quote_command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def wrap_command(argv: Sequence[str], cwd: str | None = None,
                 env: Mapping[str, str] | None = None) -> str:
    """``argv`` (each argument quoted) in ``cwd`` with ``env``, under the wrapper above."""
    child = ["sh", "-c", _CHILD, "sh"]
    if env:
        child += ["env", *(f"{k}={v}" for k, v in env.items())]
    child += [str(a) for a in argv]
    run = f"{{ {quote_command(child)} 2>&3 3>&- & wait $!; }} 3>&2 2>/dev/null"
    if cwd:
        run = f"cd {shlex.quote(cwd)} && {run}"
    return f"{run}; {_REPORT}"


def parse_pid(err: bytes | bytearray) -> str:
    """The PID line's "COMMAND_PID WRAPPER_PID", or "" while it has not arrived."""
    first = bytes(err).split(b"\n", 1)[0].decode("utf-8", "replace")
    return first[len(PID_MARKER):].strip() if first.startswith(PID_MARKER) else ""


def await_pid(chan: Any, err: bytearray, wait_s: float = 2.0) -> str:
    """The remote PID when its marker line has not been read yet (an early Ctrl-C/timeout)."""
    deadline = time.monotonic() + wait_s
    with contextlib.suppress(Exception):
        while b"\n" not in err and time.monotonic() < deadline and not chan.closed:
            if chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            else:
                time.sleep(0.01)
    return parse_pid(err)


def command_result(command: str, channel_status: int, out: bytes | bytearray,
                   err: bytes | bytearray) -> CommandResult:
    """The result of a wrapped command, its marker lines removed from stderr.

    ``channel_status`` is the SSH exit status (-1 when the server sent none: the wrapper itself
    was killed, or the login shell is not sh-like); the wrapper's status line wins when present.
    """
    stderr = bytes(err).decode("utf-8", "replace")
    if stderr.startswith(PID_MARKER):
        stderr = stderr.partition("\n")[2]
    status, signal = channel_status, None
    head, marker, tail = stderr.rpartition("\n" + STATUS_MARKER)
    found = _STATUS_LINE.fullmatch(tail) if marker else None
    if found:
        stderr = head
        status = int(found[1])
        if status > 128 and found[2]:
            status, signal = -1, found[2].upper().removeprefix("SIG")
    return CommandResult(command=command, exit_status=status,
                         stdout=bytes(out).decode("utf-8", "replace"), stderr=stderr,
                         signal=signal)
