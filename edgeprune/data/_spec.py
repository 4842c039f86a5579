"""Data specs: the one grammar that names where training and validation images come from.

::

    builtin:digits | builtin:mnist5k | builtin:animals    real data shipped inside packages
    imagefolder:PATH        PATH/train/<class>/*.png and PATH/val/<class>/*.png (or one pool)
    cifar10:PATH            CIFAR-10 python batches: data_batch_1..5, test_batch, batches.meta
    path/to/file.py:NAME    a factory in a Python file, returning loaders
    package.module:NAME     a factory in an importable module, returning loaders
    PATH                    a bare directory: cifar10 if it holds test_batch, else imagefolder

Parsing prefixed specs is purely syntactic; a bare path is looked at on disk to tell which kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgeprune.errors import DataSpecError

DataKind = Literal["builtin", "imagefolder", "cifar10", "pyfile", "module"]

BUILTIN_NAMES: tuple[str, ...] = ("digits", "mnist5k", "animals")

_GRAMMAR_HINT = (
    "use builtin:digits, builtin:mnist5k, builtin:animals, imagefolder:PATH, cifar10:PATH, "
    "path/to/file.py:factory or package.module:factory (see docs/data.md)"
)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_RE = re.compile(rf"^{_IDENT}(\.{_IDENT})*$")
_ATTR_RE = re.compile(rf"^{_IDENT}$")


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec.

    ``target`` is the builtin name, the directory, the ``.py`` file or the module; ``attr`` is the
    factory's name for ``pyfile``/``module`` specs. ``text`` is what the user wrote.
    """

    kind: DataKind
    target: str
    attr: str | None = None
    text: str = ""

    def __str__(self) -> str:
        return self.text or self.canonical()

    def canonical(self) -> str:
        if self.kind in ("pyfile", "module"):
            return f"{self.target}:{self.attr}"
        return f"{self.kind}:{self.target}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "attr": self.attr, "text": str(self)}


def parse_data_spec(text: str) -> DataSpec:
    """Parse ``text`` into a :class:`DataSpec`; raise :class:`DataSpecError` naming the fix."""
    if not isinstance(text, str) or not text.strip():
        raise DataSpecError("empty data spec", hint=_GRAMMAR_HINT)
    raw = text.strip()
    scheme, sep, rest = raw.partition(":")
    if sep and scheme.lower() == "builtin":
        name = rest.strip().lower()
        if name not in BUILTIN_NAMES:
            raise DataSpecError(
                f"unknown built-in data set {rest!r}",
                hint="choose one of " + ", ".join(f"builtin:{n}" for n in BUILTIN_NAMES),
            )
        return DataSpec("builtin", name, text=raw)
    if sep and scheme.lower() in ("imagefolder", "cifar10"):
        if not rest.strip():
            raise DataSpecError(f"data spec {raw!r} names no directory",
                                hint=f"write {scheme}:PATH/TO/FOLDER")
        kind: DataKind = "imagefolder" if scheme.lower() == "imagefolder" else "cifar10"
        return DataSpec(kind, rest.strip(), text=raw)
    if sep:
        head, _, attr = raw.rpartition(":")
        if head.endswith(".py"):
            _check_attr(raw, attr)
            return DataSpec("pyfile", head, attr, text=raw)
        if _MODULE_RE.match(head):
            from edgeprune._userfile import mistyped_prefix

            meant = mistyped_prefix(scheme, ("builtin", "imagefolder", "cifar10"))
            if meant:
                raise DataSpecError(f"unknown data spec prefix {scheme + ':'!r} (no module "
                                    f"{scheme!r} either)", hint=f"did you mean '{meant}:'?")
            _check_attr(raw, attr)
            return DataSpec("module", head, attr, text=raw)
    return _bare_directory(raw)


def _check_attr(raw: str, attr: str) -> None:
    if not _ATTR_RE.match(attr):
        raise DataSpecError(
            f"data spec {raw!r}: {attr!r} is not a Python name for a factory",
            hint="write path/to/file.py:make_loaders or package.module:make_loaders",
        )


def input_paths(text: str | None) -> tuple[str, ...]:
    """The directory or file a data spec reads (so an output can be kept from clobbering it);
    none for built-in data, a module factory or a spec that does not parse."""
    if not text:
        return ()
    try:
        spec = parse_data_spec(text)
    except DataSpecError:
        return ()
    return (spec.target,) if spec.kind in ("imagefolder", "cifar10", "pyfile") else ()


def _bare_directory(raw: str) -> DataSpec:
    path = Path(raw).expanduser()
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise DataSpecError(f"data spec {raw!r} is not a known form and {what}",
                            hint=_GRAMMAR_HINT)
    if (path / "test_batch").is_file() or (path / "data_batch_1").is_file():
        return DataSpec("cifar10", raw, text=raw)
    return DataSpec("imagefolder", raw, text=raw)
