"""Fine-tuning recipes (data) and the freezing rules a recipe implies.

A :class:`Recipe` is a frozen dataclass whose fields are the keys of a ``[recipe]`` TOML table;
recipes are registered by name (:func:`register_recipe`) and fetched with overrides
(:func:`get_recipe`). Built in:

- ``full``: every parameter trains (SGD, momentum 0.9, lr 0.01, cosine schedule).
- ``partial``: the documents' recipe — only the pruned layers, their BatchNorm and the classifier
  train (every other BatchNorm keeps its running statistics), with a lower learning rate (1e-4,
  Adam) and more epochs.
- ``distill``: ``full`` plus knowledge distillation from the unpruned model: the loss is
  ``(1 - alpha) * CE + alpha * T² * KL(softmax(teacher/T) || softmax(student/T))``.

:func:`trainable_modules`, :func:`freeze` and :func:`train_mode` turn a recipe's ``trainable``
into ``requires_grad`` flags and BatchNorm modes; :mod:`edgeprune.training.finetune` runs them.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Literal

from torch import nn

from edgeprune._registry import Registry
from edgeprune.config import FieldProblem
from edgeprune.config import from_dict as config_from_dict
from edgeprune.errors import ConfigError, UsageError

__all__ = [
    "Recipe",
    "apply_freeze",
    "classifier_layers",
    "freeze",
    "get_recipe",
    "list_recipes",
    "register_recipe",
    "train_mode",
    "trainable_modules",
    "validate_recipe",
]

_BN = nn.modules.batchnorm._BatchNorm


@dataclass(frozen=True)
class Recipe:
    """How to fine-tune; the fields are the keys of a ``[recipe]`` TOML table.

    ``trainable``: ``"all"`` or ``"pruned"`` (only ``pruned_layers`` passed to :func:`finetune`,
    the BatchNorm among them and the classifier). ``lr_schedule``: per-epoch ``cosine`` (to 0
    over ``epochs``), ``step`` (× ``gamma`` every ``step_size`` epochs) or ``constant``.
    ``patience`` > 0 stops after that many epochs without a val top-1 gain above ``min_delta``.
    ``max_batches_per_epoch`` / ``val_max_batches``: 0 means all (small values for quick runs;
    the val check then sees the *first* batches of the val loader, which is not shuffled, so
    on class-sorted data it is a biased sample — ``final`` always uses the whole val loader).
    ``num_threads``: torch intra-op threads, 0 = the cores this process may use.
    """

    name: str = "full"
    trainable: Literal["all", "pruned"] = "all"
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 5
    lr_schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_size: int = 3
    gamma: float = 0.1
    patience: int = 0
    min_delta: float = 0.0
    distill: bool = False
    alpha: float = 0.5
    temperature: float = 4.0
    label_smoothing: float = 0.0
    max_batches_per_epoch: int = 0
    val_max_batches: int = 0
    restore_best: bool = True
    seed: int = 0
    num_threads: int = 0

    def _check(self) -> None:
        for key in ("lr", "weight_decay", "momentum", "min_delta", "label_smoothing"):
            value = getattr(self, key)
            if not value >= 0 or not math.isfinite(value):
                raise FieldProblem(key, f"must be a finite number >= 0, got {value!r}",
                                   f"set {key} = 0 or more")
        for key, low in (("epochs", 1), ("step_size", 1), ("patience", 0),
                         ("max_batches_per_epoch", 0), ("val_max_batches", 0),
                         ("num_threads", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise FieldProblem(key, f"must be an integer >= {low}, got {value!r}",
                                   f"set {key} = {low} or more")
        if not 0.0 <= self.alpha <= 1.0:
            raise FieldProblem("alpha", f"distillation weight {self.alpha!r} is outside [0, 1]",
                               "set alpha between 0 (plain CE) and 1 (teacher only)")
        if not self.temperature > 0:
            raise FieldProblem("temperature", f"temperature {self.temperature!r} must be > 0",
                               "use e.g. temperature = 4.0")
        if not 0 < self.gamma <= 1:
            raise FieldProblem("gamma", f"step decay {self.gamma!r} is outside (0, 1]",
                               "use e.g. gamma = 0.1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "recipe") -> Recipe:
        """Build from a TOML/JSON table; errors name ``source``, the key and the fix."""
        return config_from_dict(cls, data, source=source)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 1-based ``epoch`` (a pure function: nothing to checkpoint)."""
        if self.lr_schedule == "constant":
            return self.lr
        if self.lr_schedule == "step":
            return self.lr * self.gamma ** ((epoch - 1) // self.step_size)
        return self.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / self.epochs))


_RECIPES: Registry[Recipe] = Registry("recipe")


def register_recipe(recipe: Recipe) -> Recipe:
    """Register ``recipe`` under ``recipe.name``; registering a name again warns and replaces."""
    validate_recipe(recipe, f"recipe {recipe.name!r}")
    return _RECIPES.add(recipe.name, recipe, stacklevel=2)


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """The recipe registered as ``name`` with ``overrides`` (field = value) applied and checked."""
    base = _RECIPES.get(name)
    known = {f.name for f in fields(Recipe)}
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            raise ConfigError(f"recipe {name!r}: unknown key {key!r}",
                              hint=f"did you mean {close[0]!r}?" if close
                              else f"known keys: {', '.join(sorted(known))}")
    return Recipe.from_dict({**base.to_dict(), **overrides}, source=f"recipe {name!r}")


def list_recipes() -> list[str]:
    return _RECIPES.names()


def validate_recipe(recipe: Recipe, source: str) -> None:
    """Check ``recipe``'s values; a bad one is a :class:`ConfigError` naming ``source``."""
    try:
        recipe._check()
    except FieldProblem as exc:
        raise ConfigError(f"{source}: key '{exc.key}': {exc.message}", hint=exc.hint) from None


register_recipe(Recipe(name="full"))
register_recipe(Recipe(name="partial", trainable="pruned", optimizer="adam", lr=1e-4,
                       weight_decay=0.0, epochs=10, lr_schedule="constant"))
register_recipe(Recipe(name="distill", distill=True, alpha=0.5, temperature=4.0))


# --- what trains ---------------------------------------------------------------------------------


def classifier_layers(model: nn.Module) -> tuple[str, ...]:
    """The classifier: the last ``nn.Linear`` registered in the model (else the last conv)."""
    last: str | None = None
    for kinds in ((nn.Linear,), (nn.modules.conv._ConvNd,)):
        for name, module in model.named_modules():
            if isinstance(module, kinds):
                last = name
        if last is not None:
            return (last,)
    return ()


def trainable_modules(model: nn.Module, recipe: Recipe,
                       pruned_layers: Collection[str] | None) -> set[str] | None:
    """Names of modules that train (None: every module)."""
    if recipe.trainable == "all":
        return None
    if not pruned_layers:
        raise UsageError(f"recipe {recipe.name!r} trains only the pruned layers, but none were "
                         "named", hint="pass pruned_layers=... (e.g. from "
                         "schedules.pruned_layers(prune_result)) or use the 'full' recipe")
    names = dict(model.named_modules())
    unknown = sorted(set(pruned_layers) - set(names))
    if unknown:
        raise UsageError(f"pruned layer(s) not in the model: {', '.join(unknown[:3])}",
                         hint="name modules as listed by model.named_modules()")
    chosen = set(pruned_layers) | set(classifier_layers(model))
    return {n for n in names if n and any(n == c or n.startswith(c + ".") for c in chosen)}


@contextmanager
def freeze(model: nn.Module, trainable: set[str] | None) -> Iterator[None]:
    """``requires_grad`` off outside ``trainable``; the caller's flags come back afterwards."""
    saved = {name: p.requires_grad for name, p in model.named_parameters()}
    apply_freeze(model, trainable)
    try:
        yield
    finally:
        for name, param in model.named_parameters():
            if name in saved:
                param.requires_grad_(saved[name])


def apply_freeze(model: nn.Module, trainable: set[str] | None) -> None:
    """``requires_grad`` on exactly for the parameters of ``trainable`` modules (None: all)."""
    if trainable is None:
        return
    for name, param in model.named_parameters():
        param.requires_grad_(name.rpartition(".")[0] in trainable)


def train_mode(model: nn.Module, trainable: set[str] | None) -> None:
    """Train mode, except frozen BatchNorms keep their running statistics (eval mode)."""
    model.train()
    if trainable is None:
        return
    for name, module in model.named_modules():
        if isinstance(module, _BN) and name not in trainable:
            module.eval()
