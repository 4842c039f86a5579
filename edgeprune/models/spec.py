"""The model spec grammar: one parser from a ``--model`` string to a :class:`ModelSpec`.

Spec grammar (:func:`parse_model_spec`)::

    torchvision:resnet18                      a torchvision classification architecture
    torchvision:resnet18(num_classes=10)      ... with constructor keyword arguments (literals)
    resnet18                                  shorthand for torchvision:resnet18
    builtin:mnist-cnn                         a trained network shipped in a package (weights on)
    path/to/file.py:factory(width=8)          a factory function in a Python file
    package.module:factory                    a factory function in an importable module
    runs/fit-1/model                          a pruned model directory written by edgeprune

Parsing imports nothing heavy and builds nothing: :mod:`edgeprune.models.build` builds the
architectures, :mod:`edgeprune.models.load` turns any spec (a pruned directory included) into a
model with its weights.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune._userfile import mistyped_prefix
from edgeprune.errors import ModelSpecError

MANIFEST = "model.json"  # a directory holding it is a pruned model (edgeprune.models.pruned_dir)
_CALL = re.compile(r"^(?P<name>[^()]+?)\s*(?:\((?P<args>.*)\))?\s*$", re.S)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec; ``kwargs`` are literal constructor arguments."""

    kind: str  # torchvision | builtin | file | module | pruned
    target: str  # architecture name, builtin name, file path, module name or directory
    factory: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "factory": self.factory,
                "kwargs": dict(self.kwargs), "text": self.text}


def is_pruned_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a pruned model directory (it holds the manifest ``model.json``)."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file()


def parse_model_spec(text: str) -> ModelSpec:
    """Parse a model spec string; errors are one line and name the accepted forms."""
    raw = text.strip()
    if not raw:
        raise ModelSpecError("empty model spec", hint=_FORMS)
    if is_pruned_dir(raw):
        return ModelSpec("pruned", raw, text=raw)
    if raw.startswith("torchvision:"):
        name, kwargs = _split_call(raw[len("torchvision:"):], raw)
        return ModelSpec("torchvision", name, kwargs=kwargs, text=raw)
    if raw.startswith("builtin:"):
        name, kwargs = _split_call(raw[len("builtin:"):], raw)
        return ModelSpec("builtin", name, kwargs=kwargs, text=raw)
    head, sep, tail = _rsplit_factory(raw)
    if sep:
        factory, kwargs = _split_call(tail, raw)
        if head.endswith(".py"):
            return ModelSpec("file", head, factory=factory, kwargs=kwargs, text=raw)
        if re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", head):
            meant = mistyped_prefix(head, ("builtin", "torchvision"))
            if meant:
                raise ModelSpecError(f"unknown model spec prefix {head + ':'!r} (no module "
                                     f"{head!r} either)", hint=f"did you mean '{meant}:'?")
            return ModelSpec("module", head, factory=factory, kwargs=kwargs, text=raw)
        raise ModelSpecError(f"cannot read model spec {raw!r}: {head!r} is neither a .py file "
                             "nor a module name", hint=_FORMS)
    name, kwargs = _split_call(raw, raw)
    if Path(name).exists():
        raise ModelSpecError(f"{raw!r} is a path but not a pruned model directory",
                             hint="pass a directory written by 'edgeprune prune' (it holds "
                             "model.json), or a Python file as path/file.py:factory")
    if re.fullmatch(r"[a-z][a-z0-9_]*", name):
        return ModelSpec("torchvision", name, kwargs=kwargs, text=raw)
    raise ModelSpecError(f"cannot read model spec {raw!r}", hint=_FORMS)


_FORMS = ("use torchvision:NAME[(k=v,...)], builtin:NAME, path/file.py:factory, "
          "package.module:factory, or a pruned model directory")


def absolute_spec(text: str, *, base: str | os.PathLike[str] | None = None) -> str:
    """``text`` with the path of a ``file.py:factory`` spec made absolute (other specs as is).

    A relative path is taken relative to ``base`` (default: the current directory), so a spec
    stored in a pruned directory's manifest still works from any directory later.
    """
    try:
        spec = parse_model_spec(text)
    except ModelSpecError:
        return text  # not ours to judge here; loading the spec reports it
    if spec.kind != "file" or Path(spec.target).expanduser().is_absolute():
        return spec.text
    head, _, tail = _rsplit_factory(spec.text)
    root = Path(base) if base is not None else Path.cwd()
    return f"{os.path.normpath(root / Path(head).expanduser())}:{tail}"


def _rsplit_factory(raw: str) -> tuple[str, str, str]:
    """Split ``head:factory(args)`` at the colon before the factory (args may hold colons)."""
    paren = raw.find("(")
    scope = raw if paren < 0 else raw[:paren]
    idx = scope.rfind(":")
    if idx <= 0 or (idx == 1 and raw[0].isalpha() and raw[2:3] in ("\\", "/")):
        return raw, "", ""
    return raw[:idx], ":", raw[idx + 1:]


def _split_call(text: str, raw: str) -> tuple[str, dict[str, Any]]:
    match = _CALL.match(text.strip())
    if not match or not match.group("name").strip():
        raise ModelSpecError(f"cannot read model spec {raw!r}", hint=_FORMS)
    name = match.group("name").strip()
    args = match.group("args")
    if not args or not args.strip():
        return name, {}
    try:
        call = ast.parse(f"f({args})", mode="eval").body
        assert isinstance(call, ast.Call)
        if call.args:
            raise ValueError("positional arguments")
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError, AssertionError) as exc:
        raise ModelSpecError(
            f"cannot read the arguments of model spec {raw!r} ({exc})",
            hint="write keyword arguments with literal values, e.g. resnet18(num_classes=10)",
        ) from None
    return name, kwargs
