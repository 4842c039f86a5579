"""Data factories: user code that builds its own loaders.

Contract (docs/data.md): the factory is called with those of ``batch_size``, ``seed``,
``input_shape`` and ``num_workers`` that its signature names (all of them if it takes
``**kwargs``) and returns either ``(train_loader, val_loader)`` or a dict with ``"train"`` and
``"val"`` and optionally ``"num_classes"``, ``"class_names"``, ``"mean"``, ``"std"``. Loaders
are any iterables of ``(images N×C×H×W, labels N)`` batches that can be iterated more than once.
Running a factory runs the user's code, like a model spec does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune._userfile import Wording, import_user_code
from edgeprune.data._spec import DataSpec
from edgeprune.errors import DataSpecError

_PASSABLE = ("batch_size", "seed", "input_shape", "num_workers")
_CONTRACT = ("return (train_loader, val_loader) or {'train': ..., 'val': ..., "
             "'num_classes': ...} (see docs/data.md)")


@dataclass(frozen=True)
class FactoryResult:
    train: Iterable[Any]
    val: Iterable[Any]
    num_classes: int | None
    class_names: tuple[str, ...] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


_IMPORT_WORDING = Wording(
    error=DataSpecError,
    module_prefix="_edgeprune_data_",
    no_file=("data factory file {target!r} does not exist",
             "check the path in path/to/file.py:factory"),
    not_python=("cannot import {target!r} as Python", "name a .py file"),
    file_failed_hint="fix the error in that file (EDGEPRUNE_DEBUG=1 shows the traceback)",
    no_module=("module {target!r} cannot be imported ({exc})",
               "install it or add its folder to PYTHONPATH"),
    module_failed_hint="fix the error in that module",
)


def resolve_factory(spec: DataSpec) -> Callable[..., Any]:
    path = Path(spec.target).expanduser() if spec.kind == "pyfile" else None
    module = import_user_code(spec.target, _IMPORT_WORDING, path=path)
    factory = getattr(module, spec.attr or "", None)
    if not callable(factory):
        raise DataSpecError(f"{spec.target!r} has no callable {spec.attr!r}",
                            hint="name a function that returns loaders")
    return factory


def call_factory(spec: DataSpec, **available: Any) -> FactoryResult:
    factory = resolve_factory(spec)
    try:
        params = inspect.signature(factory).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in available.items()
                  if k in _PASSABLE and (takes_all or k in params)}
    except (TypeError, ValueError):  # builtins without a signature: call bare
        kwargs = {}
    try:
        result = factory(**kwargs)
    except Exception as exc:
        raise DataSpecError(f"data factory {spec.canonical()!r} raised {type(exc).__name__}: "
                            f"{exc}", hint="fix the factory (EDGEPRUNE_DEBUG=1 shows the "
                            "traceback)") from exc
    return _interpret(spec, result)


def _interpret(spec: DataSpec, result: Any) -> FactoryResult:
    name = spec.canonical()
    if isinstance(result, (tuple, list)) and len(result) == 2:
        train, val = result
        extra: dict[str, Any] = {}
    elif isinstance(result, dict) and "train" in result and "val" in result:
        train, val, extra = result["train"], result["val"], result
        unknown = set(result) - {"train", "val", "num_classes", "class_names", "mean", "std"}
        if unknown:
            raise DataSpecError(f"data factory {name!r} returned unknown key "
                                f"{sorted(unknown)[0]!r}", hint=_CONTRACT)
    else:
        raise DataSpecError(f"data factory {name!r} returned {type(result).__name__}",
                            hint=_CONTRACT)
    for split, loader in (("train", train), ("val", val)):
        if not isinstance(loader, Iterable) or isinstance(loader, Iterator):
            raise DataSpecError(f"data factory {name!r}: its {split} loader is not re-iterable",
                                hint="return DataLoaders (or lists of (images, labels) batches)")
    class_names = extra.get("class_names")
    num_classes = extra.get("num_classes")
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise DataSpecError(f"data factory {name!r}: num_classes must be a positive int",
                            hint=_CONTRACT)
    mean, std = extra.get("mean"), extra.get("std")
    return FactoryResult(train, val, num_classes, class_names,
                         tuple(float(v) for v in mean) if mean is not None else None,
                         tuple(float(v) for v in std) if std is not None else None)
