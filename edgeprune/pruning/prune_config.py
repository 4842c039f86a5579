"""What to prune: :class:`PruneConfig` (the ``[prune]`` TOML table) and per-layer ratio files.

The config is checked in two steps: its own rules (ratios in ``[0, 1)``, a known criterion, ...)
when it is loaded or handed to :func:`edgeprune.pruning.prune.prune`, and the layer names it
gives against the model (:meth:`PruneConfig.validate`) before anything is traced, so a typo
fails fast with the closest real name. :func:`load_layer_ratios` reads the ``[ratios]`` files
that ``edgeprune sensitivity`` writes and ``edgeprune prune --ratios`` reads.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from torch import nn

from edgeprune.config import FieldProblem, read_toml
from edgeprune.config import from_dict as config_from_dict
from edgeprune.errors import ConfigError, NotFoundError
from edgeprune.pruning.importance import list_importances

__all__ = ["PruneConfig", "load_layer_ratios"]


@dataclass(frozen=True)
class PruneConfig:
    """How to prune; the fields are the keys of a ``[prune]`` TOML table.

    ``ratio``: fraction of channels removed per group (uniform) or over all groups (global).
    ``layer_ratios``: module name → ratio for that layer's group; other groups use ``ratio``,
    or are left alone with ``only_listed``. ``layers``: prune only these layers' groups.
    ``ignored_layers``: layers whose output channels are never pruned (their input channels
    still follow the layer before them). A layer name selects the group whose root it is, else
    the group in which its output channels are cut (a BatchNorm, a residual partner).
    """

    ratio: float = 0.5
    criterion: str = "l2"
    scope: Literal["uniform", "global"] = "uniform"
    layer_ratios: Mapping[str, float] | None = None
    only_listed: bool = False
    layers: tuple[str, ...] | None = None
    ignored_layers: tuple[str, ...] = ()
    round_to: int = 1
    min_channels: int = 1
    iterative_steps: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        # accept lists and dicts from Python callers; store immutable forms
        if self.layers is not None and not isinstance(self.layers, tuple):
            object.__setattr__(self, "layers", tuple(self.layers))
        if not isinstance(self.ignored_layers, tuple):
            object.__setattr__(self, "ignored_layers", tuple(self.ignored_layers))
        if self.layer_ratios is not None and not isinstance(self.layer_ratios, MappingProxyType):
            object.__setattr__(self, "layer_ratios", MappingProxyType(dict(self.layer_ratios)))

    def _check(self) -> None:
        """Rules beyond the types (called by the TOML loader and by :func:`prune`)."""
        _check_ratio("ratio", self.ratio)
        if self.criterion not in list_importances():
            close = difflib.get_close_matches(self.criterion, list_importances(), n=1, cutoff=0.5)
            raise FieldProblem("criterion", f"unknown criterion {self.criterion!r}",
                               f"did you mean {close[0]!r}?" if close
                               else f"use one of: {', '.join(list_importances())}")
        if self.scope not in ("uniform", "global"):
            close = difflib.get_close_matches(str(self.scope), ["uniform", "global"], n=1)
            raise FieldProblem("scope", f"unknown scope {self.scope!r}",
                               f"did you mean {close[0]!r}?" if close
                               else "use 'uniform' or 'global'")
        for name, value in (self.layer_ratios or {}).items():
            _check_ratio(f"layer_ratios.{name}", value)
        if self.layer_ratios and self.scope == "global":
            raise FieldProblem("layer_ratios", "per-layer ratios need scope = 'uniform'",
                               "drop layer_ratios or set scope = 'uniform'")
        if self.only_listed and not self.layer_ratios:
            raise FieldProblem("only_listed", "only_listed needs layer_ratios",
                               "add a layer_ratios table or drop only_listed")
        if self.layers is not None and not self.layers:
            raise FieldProblem("layers", "empty list of layers",
                               "name at least one layer, or drop the key to prune all")
        for key in ("round_to", "min_channels", "iterative_steps"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FieldProblem(key, f"must be an integer >= 1, got {value!r}",
                                   f"set {key} = 1 or more")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "prune config") -> PruneConfig:
        """Build from a TOML/JSON table; errors name ``source``, the key and the fix."""
        return config_from_dict(cls, data, source=source)

    def validate(self, model: nn.Module | None = None) -> None:
        """Raise :class:`ConfigError` naming the key when a rule is broken; with ``model``,
        also when a layer the config names is not one of its modules."""
        try:
            self._check()
        except FieldProblem as exc:
            raise ConfigError(f"prune config: key '{exc.key}': {exc.message}",
                              hint=exc.hint) from None
        if model is None:
            return
        known = {n for n, _ in model.named_modules() if n}
        layer_names = _layer_names(model)
        named = [("layers", n) for n in self.layers or ()]
        named += [(f"layer_ratios.{n}", n) for n in self.layer_ratios or {}]
        named += [("ignored_layers", n) for n in self.ignored_layers]
        for key, name in named:
            if name not in known:
                raise ConfigError(
                    f"prune config: key '{key}': no layer named {name!r} in the model",
                    hint=_did_you_mean(name, layer_names))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            data[f.name] = value
        return data


def _check_ratio(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise FieldProblem(key, f"ratio {value!r} is outside [0, 1)",
                           "give the fraction of channels to remove, e.g. 0.3 (1 would remove "
                           "every channel)")


# --- layer ratio files -------------------------------------------------------------------------


def load_layer_ratios(path: str | Path, model: nn.Module | None = None) -> dict[str, float]:
    """Read per-layer ratios from TOML (a ``[ratios]`` table) or JSON (an object, or one under
    ``"ratios"``); with ``model``, every name must be one of its layers.
    """
    path = Path(path)
    source = str(path)
    if path.suffix.lower() == ".json":
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFoundError(f"ratios file {source!r} does not exist",
                                hint="check the path") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: invalid JSON: {exc}",
                              hint='write {"ratios": {"layer2.0.conv1": 0.5}}') from None
        if isinstance(data, dict) and isinstance(data.get("ratios"), dict):
            data = data["ratios"]
        prefix = ""
    else:
        data = read_toml(path).get("ratios")
        prefix = "ratios."
        if data is None:
            raise ConfigError(f"{source}: no [ratios] table",
                              hint='add [ratios] with lines like "layer2.0.conv1" = 0.5')
        if isinstance(data, dict):
            data = _dotted(data)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: ratios must be a table of layer name = ratio",
                          hint='e.g. [ratios] "layer2.0.conv1" = 0.5')
    names = _layer_names(model) if model is not None else None
    ratios: dict[str, float] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        try:
            _check_ratio(key, value)
        except FieldProblem as exc:
            raise ConfigError(f"{source}: key '{key}': {exc.message}", hint=exc.hint) from None
        if names is not None and name not in names:
            raise ConfigError(f"{source}: key '{key}': no layer named {name!r} in the model",
                              hint=_did_you_mean(name, names))
        ratios[str(name)] = float(value)
    return ratios


def _dotted(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Unquoted TOML keys like ``layer2.0.conv1 = 0.5`` parse as nested tables: join them."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _layer_names(model: nn.Module) -> list[str]:
    kinds = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm,
             nn.GroupNorm)
    return [n for n, m in model.named_modules() if n and isinstance(m, kinds)]


def _did_you_mean(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.4)
    if close:
        return f"did you mean {close[0]!r}?"
    return "list the layer names with `edgeprune info MODEL` (or model.named_modules())"

