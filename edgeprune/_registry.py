"""One small registry for the open sets edgeprune names things in.

Importance criteria, search strategies, schedules and training recipes are each a
``Registry[T]`` keyed by name. Modules keep their own public functions (``register_importance``,
``get_strategy``, ...) and wrap a registry; this module is private machinery.

Registering a name again replaces the entry and warns, so a plugin can override a built-in on
purpose but never by accident. Looking up an unknown name raises a one-line error that suggests
the closest name, or lists the known ones.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from typing import Generic, TypeVar

from edgeprune.errors import ConfigError, EdgepruneError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind keyed by name; ``kind`` names them in warnings and errors."""

    def __init__(self, kind: str, *, error: type[EdgepruneError] = ConfigError) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T, *, stacklevel: int = 1) -> T:
        """Register ``entry`` under ``name``; ``stacklevel`` counts from the caller of ``add``
        (as for :func:`warnings.warn`), so wrappers point the warning at their own caller."""
        if name in self._entries:
            warnings.warn(f"{self.kind} {name!r} registered again; the new one wins",
                          RuntimeWarning, stacklevel=stacklevel + 1)
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@registry.register("name")``."""

        def decorator(entry: T) -> T:
            return self.add(name, entry, stacklevel=2)

        return decorator

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name is a one-line error."""
        entry = self._entries.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.5)
            raise self.error(f"unknown {self.kind} {name!r}",
                             hint=f"did you mean {close[0]!r}?" if close
                             else f"use one of: {', '.join(self.names())}")
        return entry

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def pop(self, name: str, default: T | None = None) -> T | None:
        """Unregister ``name`` (tests clean up after themselves with it)."""
        return self._entries.pop(name, default)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
