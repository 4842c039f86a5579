"""Frozen dataclasses ⇄ TOML, validated on load.

Every config in edgeprune (profiles, targets, gate files) is a frozen dataclass whose fields map
1:1 to TOML keys; nested tables are nested dataclasses. :func:`from_dict` walks the type hints
and refuses anything it cannot place, with a :class:`~edgeprune.errors.ConfigError` that names
the file, the dotted key and the fix (unknown keys get a did-you-mean suggestion). Classes add
their own rules in a ``_check()`` method that raises :class:`FieldProblem`.

Only ``tomllib`` (``tomli`` on Python 3.10) is imported: the CLI loads this on start-up.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from edgeprune.errors import ConfigError, NotFoundError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

T = TypeVar("T")

__all__ = ["FieldProblem", "from_dict", "load_file", "read_toml", "to_dict"]


class FieldProblem(ValueError):
    """Raised by a dataclass's ``_check()``: which key is wrong and how to fix it."""

    def __init__(self, key: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.hint = hint


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file and tomllib's line/column."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"config file {str(path)!r} does not exist",
                            hint="check the path") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror}",
                          hint="check the file's permissions") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text", hint="save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}",
                          hint="fix the syntax at the line shown (https://toml.io)") from None


def load_file(cls: type[T], path: str | Path, *, defaults: Mapping[str, Any] | None = None) -> T:
    """Read ``path`` and build ``cls`` from it; ``defaults`` fill keys the file leaves out."""
    data = dict(defaults or {})
    data.update(read_toml(path))
    return from_dict(cls, data, source=str(path))


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from plain data, validating every key."""
    if not isinstance(data, Mapping):
        raise _error(source, prefix.rstrip(".") or "(top level)",
                     f"expected a table, got {_tname(data)}",
                     "write it as a [table] or { key = value } inline table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
        fix = (f"did you mean {close[0]!r}?" if close
               else f"remove it; known keys: {', '.join(sorted(fields))}")
        raise _error(source, prefix + key, "unknown key", fix)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key = prefix + name
        if name not in data:
            if (field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING):
                raise _error(source, key, "required key is missing", f"add `{name} = ...`")
            continue
        kwargs[name] = _convert(hints[name], data[name], source, key)
    obj = cls(**kwargs)
    check = getattr(obj, "_check", None)
    if callable(check):
        try:
            check()
        except FieldProblem as exc:
            raise _error(source, prefix + exc.key, exc.message, exc.hint) from None
    return obj


def to_dict(obj: Any) -> Any:
    """Plain JSON/TOML-ready data from a dataclass (tuples become lists, None kept)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


# --- conversion --------------------------------------------------------------------------------


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        last: ConfigError | None = None
        for option in options:
            try:
                return _convert(option, value, source, key)
            except ConfigError as exc:
                last = exc
        assert last is not None
        raise last
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"use one of {choices}"
            raise _error(source, key, f"{value!r} is not allowed", fix)
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=source, prefix=key + ".")
    if origin is tuple:
        if not isinstance(value, list):
            raise _error(source, key, f"expected an array, got {_tname(value)}",
                         f"write it as `{key.rsplit('.', 1)[-1]} = [ ... ]`")
        item_tp = args[0] if args else Any
        if (len(args) == 2 and args[1] is Ellipsis) or len(args) <= 1:
            return tuple(_convert(item_tp, v, source, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _error(source, key, f"expected {len(args)} items, got {len(value)}",
                         f"give exactly {len(args)} values")
        return tuple(_convert(a, v, source, f"{key}[{i}]")
                     for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise _error(source, key, f"expected a table, got {_tname(value)}",
                         "write it as a [table] or { key = value }")
        val_tp = args[1] if len(args) == 2 else Any
        return types.MappingProxyType(
            {str(k): _convert(val_tp, v, source, f"{key}.{k}") for k, v in value.items()})
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _error(source, key, f"expected true or false, got {_tname(value)}",
                         "write `true` or `false` (no quotes)")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(source, key, f"expected an integer, got {_tname(value)}",
                         "write a whole number without quotes")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _error(source, key, f"expected a number, got {_tname(value)}",
                         "write a number without quotes")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _error(source, key, f"expected a string, got {_tname(value)}",
                         'write it in double quotes: "..."')
        return value
    raise TypeError(f"config.from_dict cannot handle type {tp!r} (key {key})")  # a bug, not input


def _error(source: str, key: str, message: str, hint: str) -> ConfigError:
    return ConfigError(f"{source}: key '{key}': {message}", hint=hint)


def _tname(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


# --- discovery ---------------------------------------------------------------------------------


def user_config_dir() -> Path:
    """``$EDGEPRUNE_CONFIG_DIR`` or ``~/.config/edgeprune`` (XDG_CONFIG_HOME honoured)."""
    import os

    env = os.environ.get("EDGEPRUNE_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "edgeprune"


def search_dirs(kind: str) -> list[tuple[str, Path]]:
    """Where ``kind`` ("profiles" or "targets") TOML files live, lowest priority first.

    1. the wheel's ``edgeprune/_data/<kind>`` (pyproject force-includes the repo folders there);
    2. the repository's ``<kind>/`` next to the package (editable installs, a checkout);
    3. the user's ``~/.config/edgeprune/<kind>`` (or ``$EDGEPRUNE_CONFIG_DIR/<kind>``).
    A later directory's file overrides an earlier one of the same name; explicit
    ``--profiles-file``/``--targets-file`` files override them all.
    """
    pkg = Path(__file__).resolve().parent
    return [
        ("builtin", pkg / "_data" / kind),
        ("builtin", pkg.parent / kind),
        ("user", user_config_dir() / kind),
    ]


def discover(
    kind: str, extra_files: typing.Iterable[str | Path] = ()
) -> dict[str, tuple[str, Path]]:
    """Map name -> (origin, path) of every ``*.toml`` of ``kind``, later sources winning."""
    found: dict[str, tuple[str, Path]] = {}
    for origin, directory in search_dirs(kind):
        if directory.is_dir():
            for path in sorted(directory.glob("*.toml")):
                found[path.stem] = (origin, path)
    for extra in extra_files:
        path = Path(extra).expanduser()
        if not path.is_file():
            raise NotFoundError(f"{kind} file {str(path)!r} does not exist",
                                hint="check the path given to the --*-file flag")
        found[path.stem] = ("file", path)
    return found
