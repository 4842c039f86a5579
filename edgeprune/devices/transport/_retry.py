"""A link that drops: the two internal signals for it, and the guard every SFTP call runs under.

A dead link shows up as ``EOFError``, ``"Socket is closed"`` or a paramiko ``SSHException``, maybe
before the transport notices; on a live link the same ``OSError`` is the device saying no
(permissions, a missing directory). :func:`link_guard` tells the two apart
(:meth:`Connection.link_dropped`), reconnects after a drop and, for calls that are safe to repeat,
tries again; every failure leaves as a one-line :class:`~edgeprune.errors.TargetError`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import paramiko

from edgeprune.errors import EdgepruneError, TargetError

__all__ = ["Dropped", "Transient", "link_guard"]

F = TypeVar("F", bound=Callable[..., Any])


class Transient(Exception):
    """Connecting failed in a way worth another try (a timeout, a reset)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Dropped(Transient):
    """The link dropped while a command ran."""

    def __init__(self, reason: str, pid: str | None = None) -> None:
        super().__init__(reason)
        self.pid = pid  # the remote process left running, if it had started


def link_guard(*, retry: bool) -> Callable[[F], F]:
    """Turn a link dropped during an SFTP call into a reconnect (and, for calls that are safe to
    repeat, another try) or a one-line :class:`TargetError` — never a paramiko traceback.

    Decorates methods of :class:`~edgeprune.devices.transport.connection.Connection`.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            attempts = self.settings.retries + 1 if retry else 1
            for attempt in range(1, attempts + 1):
                try:
                    return fn(self, *args, **kwargs)
                except EdgepruneError:
                    raise
                except (EOFError, paramiko.SSHException, OSError) as exc:
                    if not self.link_dropped(exc):  # a live link: the device said no
                        what = f" {args[0]}" if args else ""
                        raise TargetError(
                            f"{fn.__name__.replace('_', ' ')}{what} on {self.label} failed: "
                            f"{getattr(exc, 'strerror', None) or exc}",
                            hint=f"check work_dir in the target is a directory "
                            f"{self.settings.login} can write") from None
                    self.close()
                    if attempt == attempts:
                        raise TargetError(f"lost the connection to {self.label}: "
                                          f"{exc or type(exc).__name__}",
                                          hint="check the device and network, then retry",
                                          ) from None
                    self.report("reconnect", f"link to {self.label} dropped; reconnecting "
                                f"({attempt}/{attempts - 1})")
            raise AssertionError("unreachable")

        return wrapper  # type: ignore[return-value]

    return decorate
