"""Fine-tuning after pruning: recipes (data) and one loop that runs them.

A :class:`Recipe` is a frozen dataclass whose fields are the keys of a ``[recipe]`` TOML table;
recipes are registered by name (:func:`register_recipe`) and fetched with overrides
(:func:`get_recipe`). Built in:

- ``full``: every parameter trains (SGD, momentum 0.9, lr 0.01, cosine schedule).
- ``partial``: the documents' recipe — only the pruned layers, their BatchNorm and the classifier
  train (every other BatchNorm keeps its running statistics), with a lower learning rate (1e-4,
  Adam) and more epochs.
- ``distill``: ``full`` plus knowledge distillation from the unpruned model: the loss is
  ``(1 - alpha) * CE + alpha * T² * KL(softmax(teacher/T) || softmax(student/T))``.

:func:`finetune` trains a model in place. It is deterministic for a seed: torch's RNG and the
train loader's shuffle generator are seeded at the start, and their states are stored in the
checkpoint written (atomically) after every epoch, so an interrupted run resumed from its
checkpoint ends with the same weights as one that was never interrupted. Checkpoints hold no
pickles: tensors go to safetensors files, everything else (optimizer hyper-parameters, RNG
states of Python and numpy, history) to JSON.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune._io import atomic_write_bytes, atomic_write_json
from edgeprune._registry import Registry
from edgeprune._signals import raise_if_interrupted
from edgeprune.config import FieldProblem
from edgeprune.config import from_dict as config_from_dict
from edgeprune.errors import CheckpointError, ConfigError, UsageError
from edgeprune.training.evaluate import EvalResult, evaluate

__all__ = [
    "EpochHook",
    "EpochRecord",
    "FinetuneResult",
    "Recipe",
    "classifier_layers",
    "finetune",
    "get_recipe",
    "list_recipes",
    "register_recipe",
    "set_threads",
]

Progress = Callable[[dict[str, Any]], None]
CHECKPOINT_VERSION = 1
_BN = nn.modules.batchnorm._BatchNorm


# --- recipes -----------------------------------------------------------------------------------


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
    _validate(recipe, f"recipe {recipe.name!r}")
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


def _validate(recipe: Recipe, source: str) -> None:
    try:
        recipe._check()
    except FieldProblem as exc:
        raise ConfigError(f"{source}: key '{exc.key}': {exc.message}", hint=exc.hint) from None


register_recipe(Recipe(name="full"))
register_recipe(Recipe(name="partial", trainable="pruned", optimizer="adam", lr=1e-4,
                       weight_decay=0.0, epochs=10, lr_schedule="constant"))
register_recipe(Recipe(name="distill", distill=True, alpha=0.5, temperature=4.0))


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_top1: float
    val_loss: float
    lr: float
    n_batches: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tune did. ``final`` is measured on the whole val loader at the end (after the
    best weights were restored, when the recipe says so); ``history`` uses ``val_max_batches``.
    """

    recipe: Recipe
    history: tuple[EpochRecord, ...]
    best_epoch: int
    best_val_top1: float
    final: EvalResult
    stopped_early: bool
    resumed_from_epoch: int  # 0: a fresh run
    trainable_params: int
    restored_best: bool

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.to_dict(),
            "history": [r.to_dict() for r in self.history],
            "best_epoch": self.best_epoch,
            "best_val_top1": self.best_val_top1,
            "final": self.final.to_dict(),
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "resumed_from_epoch": self.resumed_from_epoch,
            "trainable_params": self.trainable_params,
            "restored_best": self.restored_best,
        }


@runtime_checkable
class EpochHook(Protocol):
    """Called after each epoch's training step, before validation (schedules use it to prune).

    Returns True when it changed the model's *structure* (the optimizer is then rebuilt).
    ``state()`` (JSON data) is stored in the checkpoint; ``restore(state, model)`` is called on
    resume before the weights load, so it can rebuild the architecture (e.g. replay pruning).
    """

    def __call__(self, epoch: int, model: nn.Module) -> bool: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any], model: nn.Module) -> None: ...


# --- threads and trainable set -----------------------------------------------------------------


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def set_threads(n: int = 0) -> Iterator[int]:
    """Set torch's intra-op threads to ``n`` (0: the usable core count); restore them after."""
    previous = torch.get_num_threads()
    wanted = n or default_threads()
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(previous)


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


def _trainable_modules(model: nn.Module, recipe: Recipe,
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
def _freeze(model: nn.Module, trainable: set[str] | None) -> Iterator[None]:
    """``requires_grad`` off outside ``trainable``; the caller's flags come back afterwards."""
    saved = {name: p.requires_grad for name, p in model.named_parameters()}
    _apply_freeze(model, trainable)
    try:
        yield
    finally:
        for name, param in model.named_parameters():
            if name in saved:
                param.requires_grad_(saved[name])


def _apply_freeze(model: nn.Module, trainable: set[str] | None) -> None:
    if trainable is None:
        return
    for name, param in model.named_parameters():
        param.requires_grad_(name.rpartition(".")[0] in trainable)


def _train_mode(model: nn.Module, trainable: set[str] | None) -> None:
    """Train mode, except frozen BatchNorms keep their running statistics (eval mode)."""
    model.train()
    if trainable is None:
        return
    for name, module in model.named_modules():
        if isinstance(module, _BN) and name not in trainable:
            module.eval()


def _make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UsageError("no parameter is left to train", hint="check pruned_layers and recipe")
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _loss(logits: torch.Tensor, labels: torch.Tensor, recipe: Recipe,
          teacher_logits: torch.Tensor | None) -> torch.Tensor:
    ce = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
    if teacher_logits is None:
        return ce
    t = recipe.temperature
    kd = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True) * (t * t)
    return (1 - recipe.alpha) * ce + recipe.alpha * kd


# --- the loop ----------------------------------------------------------------------------------


@dataclass
class _State:
    """What the loop carries across epochs and what a checkpoint restores."""

    epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_top1: float = -1.0
    best_weights: dict[str, torch.Tensor] | None = None
    stale_epochs: int = 0
    stopped_early: bool = False
    finished: bool = False


def finetune(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    recipe: Recipe | str = "full",
    *,
    teacher: nn.Module | None = None,
    pruned_layers: Collection[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: Progress | None = None,
    on_epoch_end: EpochHook | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place with ``recipe`` and return what happened.

    ``teacher`` (the unpruned model) is required by distillation recipes. ``pruned_layers``
    names the modules a ``trainable="pruned"`` recipe unfreezes. With ``checkpoint_dir`` a
    checkpoint is written after every epoch and, with ``resume``, a run found there continues
    from its last completed epoch (``resume=False`` starts over and replaces it). ``progress``
    gets ``{"stage": "finetune", "event": "start"|"batch"|"epoch"|"done", ...}`` events.
    ``on_epoch_end`` lets a schedule change the model between epochs (see :class:`EpochHook`).
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    _validate(recipe, f"recipe {recipe.name!r}")
    if recipe.distill and teacher is None:
        raise UsageError(f"recipe {recipe.name!r} distils from a teacher, but none was given",
                         hint="pass teacher=<the unpruned model> or use the 'full' recipe")
    if teacher is not None and not recipe.distill:
        raise UsageError("a teacher was given but the recipe does not distil",
                         hint="use the 'distill' recipe or set distill = true")
    ckpt = _Checkpoints(Path(checkpoint_dir)) if checkpoint_dir is not None else None
    emit = progress or (lambda _event: None)
    with set_threads(recipe.num_threads):
        if teacher is not None:  # before seeding: reading a batch may draw from the RNGs
            check_teacher(teacher, model, val_loader)
        trainable = _trainable_modules(model, recipe, pruned_layers)
        state = _State()
        torch.manual_seed(recipe.seed)
        random.seed(recipe.seed)
        np.random.seed(recipe.seed % 2**32)
        _seed_loader(train_loader, recipe.seed)
        if ckpt is not None and not resume:
            ckpt.clear()
        loaded = ckpt.load(model, recipe, train_loader, on_epoch_end) if (
            ckpt is not None and resume) else None
        with _freeze(model, trainable):
            optimizer = _make_optimizer(model, recipe)
            if loaded is not None:
                state, opt_state = loaded
                if opt_state is not None:
                    optimizer.load_state_dict(opt_state)
            resumed_from = state.epoch
            n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            emit({"stage": "finetune", "event": "start", "recipe": recipe.name,
                  "epochs": recipe.epochs, "epoch": state.epoch,
                  "n_batches": _n_batches(train_loader, recipe.max_batches_per_epoch),
                  "trainable_params": n_trainable,
                  "message": f"fine-tuning ({recipe.name}) for {recipe.epochs} epochs"
                  + (f", resuming after epoch {state.epoch}" if state.epoch else "")})
            if teacher is not None:
                teacher.eval()
            while not state.finished and state.epoch < recipe.epochs:
                epoch = state.epoch + 1
                record = _run_epoch(model, train_loader, val_loader, recipe, optimizer, epoch,
                                    trainable, teacher, emit)
                if on_epoch_end is not None and on_epoch_end(epoch, model):
                    _apply_freeze(model, trainable)  # pruning replaces parameters
                    optimizer = _make_optimizer(model, recipe)
                    # earlier epochs trained another architecture: best and patience restart
                    state.best_epoch, state.best_top1, state.best_weights = 0, -1.0, None
                    state.stale_epochs = 0
                record = _validate_epoch(model, val_loader, recipe, record)
                _update(state, record, model, recipe)
                emit({"stage": "finetune", "event": "epoch", **record.to_dict(),
                      "epochs": recipe.epochs, "best_epoch": state.best_epoch,
                      "message": f"epoch {epoch}/{recipe.epochs}: loss {record.train_loss:.4f}, "
                      f"val top-1 {record.val_top1:.2%}, lr {record.lr:.3g}"})
                if ckpt is not None:
                    ckpt.save(model, optimizer, state, recipe, train_loader, on_epoch_end)
        restored = _finish(model, state, recipe)
        if ckpt is not None:
            ckpt.save(model, None, state, recipe, train_loader, on_epoch_end)
        final = evaluate(model, val_loader)
    emit({"stage": "finetune", "event": "done", "top1": final.top1,
          "message": f"fine-tuned: val top-1 {final.top1:.2%}"
          + (f" (best epoch {state.best_epoch} restored)" if restored else "")})
    return FinetuneResult(
        recipe=recipe, history=tuple(state.history), best_epoch=state.best_epoch,
        best_val_top1=max(state.best_top1, 0.0), final=final, stopped_early=state.stopped_early,
        resumed_from_epoch=resumed_from, trainable_params=n_trainable, restored_best=restored)


def check_teacher(teacher: nn.Module, student: nn.Module, loader: Iterable[Any]) -> None:
    """Refuse a teacher that cannot teach ``student`` on ``loader``'s images, before training.

    One real batch goes through both (eval mode, no gradients): the teacher must accept the
    images and return the student's output shape. A teacher with the student's very weights
    (the unpruned model handed over as its own teacher) only warns: the run works but learns
    nothing from the teacher.
    """
    from edgeprune.training.evaluate import first_batch, forward_checked

    name = _model_name(teacher)
    images = first_batch(loader)
    if images is None:
        return  # an empty loader: training reports it
    with _eval_mode(teacher, student), torch.no_grad():
        wanted = tuple(forward_checked(student, images).shape)
        try:
            got = tuple(teacher(images).shape)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = " ".join((str(exc).strip().splitlines() or [type(exc).__name__])[0].split())
            raise UsageError(
                f"the teacher {name} does not accept the student's images of shape "
                f"{tuple(images.shape[1:])}: {first}", hint=_TEACHER_HINT) from None
    if got != wanted:
        raise UsageError(f"the teacher {name} returns shape {got[1:]} per batch of "
                         f"{images.shape[0]} images, the student {wanted[1:]}",
                         hint=_TEACHER_HINT)
    if teacher is student or _same_weights(teacher, student):
        warnings.warn(f"the teacher {name} has the same architecture and weights as the "
                      "student: distilling from itself teaches it nothing — distil a pruned "
                      "model from its unpruned original, or use the 'full' recipe",
                      UserWarning, stacklevel=3)


_TEACHER_HINT = ("distil from the unpruned model the student was pruned from (CLI: --teacher "
                 "SPEC --teacher-weights FILE): it takes the same images and has the same outputs")


def _model_name(model: nn.Module) -> str:
    spec = getattr(model, "edgeprune_spec", None)
    return repr(spec) if isinstance(spec, str) else f"({type(model).__name__})"


@contextmanager
def _eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode for a side-effect-free forward pass (BatchNorm keeps its statistics)."""
    modes = [m.training for m in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype
        and torch.equal(sa[k], sb[k]) for k in sa)


def _run_epoch(model: nn.Module, loader: Iterable[Any], val_loader: Iterable[Any],
               recipe: Recipe, optimizer: torch.optim.Optimizer, epoch: int,
               trainable: set[str] | None, teacher: nn.Module | None,
               emit: Progress) -> EpochRecord:
    lr = recipe.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    _train_mode(model, trainable)
    limit = recipe.max_batches_per_epoch
    total = _n_batches(loader, limit)
    started = time.monotonic()
    loss_sum, count, n_batches = 0.0, 0, 0
    for index, batch in enumerate(loader):
        if limit and index >= limit:
            break
        raise_if_interrupted()
        images, labels = batch[0], batch[1]
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(images)
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(model(images), labels, recipe, teacher_logits)
        if not torch.isfinite(loss.detach()):
            raise UsageError(f"the training loss became {float(loss.detach())} in epoch {epoch}",
                             hint="lower the learning rate (--lr)")
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        loss_sum += value * len(labels)
        count += len(labels)
        n_batches += 1
        emit({"stage": "finetune", "event": "batch", "epoch": epoch, "epochs": recipe.epochs,
              "batch": n_batches, "n_batches": total, "loss": value})
    if count == 0:
        raise UsageError("the train loader yielded no batches", hint="check the data spec")
    model.eval()
    return EpochRecord(epoch=epoch, train_loss=loss_sum / count, val_top1=0.0, val_loss=0.0,
                       lr=lr, n_batches=n_batches, seconds=time.monotonic() - started)


def _validate_epoch(model: nn.Module, val_loader: Iterable[Any], recipe: Recipe,
                    record: EpochRecord) -> EpochRecord:
    result = evaluate(model, val_loader, max_batches=recipe.val_max_batches or None)
    return dataclasses.replace(record, val_top1=result.top1, val_loss=result.loss)


def _update(state: _State, record: EpochRecord, model: nn.Module, recipe: Recipe) -> None:
    state.epoch = record.epoch
    state.history.append(record)
    if record.val_top1 > state.best_top1 + recipe.min_delta or state.best_epoch == 0:
        state.best_epoch, state.best_top1, state.stale_epochs = record.epoch, record.val_top1, 0
        if recipe.restore_best:
            state.best_weights = _state_copy(model)
    else:
        state.stale_epochs += 1
        if recipe.patience and state.stale_epochs >= recipe.patience:
            state.stopped_early = True
            state.finished = True
    if state.epoch >= recipe.epochs:
        state.finished = True


def _finish(model: nn.Module, state: _State, recipe: Recipe) -> bool:
    """Restore the best weights where the recipe asks and they differ from the last epoch's."""
    if not (recipe.restore_best and state.best_weights is not None and state.history
            and state.best_epoch != state.history[-1].epoch):
        return False
    own = model.state_dict()
    if any(own[k].shape != v.shape for k, v in state.best_weights.items() if k in own):
        return False  # the structure changed since (a schedule pruned after the best epoch)
    model.load_state_dict(state.best_weights)
    return True


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _n_batches(loader: Iterable[Any], limit: int) -> int | None:
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return limit or None
    return min(n, limit) if limit else n


def _loader_generator(loader: Iterable[Any]) -> torch.Generator | None:
    """The generator that drives a DataLoader's shuffle (None: it uses torch's global RNG)."""
    sampler = getattr(loader, "sampler", None)
    gen = getattr(sampler, "generator", None) or getattr(loader, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None


def _seed_loader(loader: Iterable[Any], seed: int) -> None:
    gen = _loader_generator(loader)
    if gen is not None:
        gen.manual_seed(seed)
    base = getattr(loader, "generator", None)
    if isinstance(base, torch.Generator) and base is not gen:
        base.manual_seed(seed)


# --- checkpoints -------------------------------------------------------------------------------


class _Checkpoints:
    """``DIR/epoch-NNNN/`` (weights, optimizer tensors, best weights, state.json) + ``latest.json``.

    Each epoch directory is written under a temporary name and renamed into place; then
    ``latest.json`` is replaced atomically to point at it; then older epoch directories go.
    A crash at any point leaves the previous complete checkpoint readable.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def clear(self) -> None:
        if not self.root.exists():
            return
        (self.root / "latest.json").unlink(missing_ok=True)
        for path in self.root.glob("epoch-*"):
            shutil.rmtree(path, ignore_errors=True)

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, state: _State,
             recipe: Recipe, loader: Iterable[Any], hook: EpochHook | None) -> None:
        from safetensors.torch import save

        self.root.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{state.epoch:04d}" + ("-final" if optimizer is None else "")
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        opt_json: dict[str, Any] | None = None
        rng: dict[str, torch.Tensor] = {"torch": torch.get_rng_state()}
        gen = _loader_generator(loader)
        if gen is not None:
            rng["loader"] = gen.get_state()
        if optimizer is not None:
            opt_tensors, opt_json = _split_optimizer(optimizer.state_dict())
            atomic_write_bytes(tmp / "optimizer.safetensors", save(opt_tensors))
        atomic_write_bytes(tmp / "weights.safetensors", save(_plain(model.state_dict())))
        atomic_write_bytes(tmp / "rng.safetensors", save(rng))
        if state.best_weights is not None:
            atomic_write_bytes(tmp / "best.safetensors", save(_plain(state.best_weights)))
        py_state = random.getstate()
        np_state = np.random.get_state()
        atomic_write_json(tmp / "state.json", {
            "version": CHECKPOINT_VERSION,
            "recipe": recipe.to_dict(),
            "epoch": state.epoch,
            "history": [r.to_dict() for r in state.history],
            "best_epoch": state.best_epoch,
            "best_top1": state.best_top1,
            "stale_epochs": state.stale_epochs,
            "stopped_early": state.stopped_early,
            "finished": state.finished,
            "optimizer": opt_json,
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "hook": hook.state() if hook is not None and hasattr(hook, "state") else None,
        })
        final = self.root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_json(self.root / "latest.json", {"dir": name, "epoch": state.epoch})
        for old in self.root.glob("epoch-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, model: nn.Module, recipe: Recipe, loader: Iterable[Any],
             hook: EpochHook | None) -> tuple[_State, dict[str, Any] | None] | None:
        from safetensors.torch import load_file

        pointer = self.root / "latest.json"
        if not pointer.is_file():
            return None
        try:
            where = self.root / json.loads(pointer.read_text())["dir"]
            data = json.loads((where / "state.json").read_text())
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"checkpoint in {str(self.root)!r} is unreadable: {exc}",
                                  hint="delete the directory or start over (resume=False / "
                                  "--force)") from None
        if data.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint in {str(self.root)!r} has version "
                                  f"{data.get('version')}", hint="start over with --force")
        if data["recipe"] != recipe.to_dict():
            changed = sorted(k for k, v in recipe.to_dict().items() if data["recipe"].get(k) != v)
            raise CheckpointError(f"checkpoint in {str(self.root)!r} was written with another "
                                  f"recipe (differs in: {', '.join(changed)})",
                                  hint="resume with the same recipe, or start over "
                                  "(resume=False / --force)")
        if hook is not None and data.get("hook") is not None and hasattr(hook, "restore"):
            hook.restore(data["hook"], model)
        weights = load_file(str(where / "weights.safetensors"))
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint in {str(self.root)!r} does not fit the model: "
                                  f"{first}", hint="resume with the model the run started from, "
                                  "or start over (resume=False / --force)") from None
        rng = load_file(str(where / "rng.safetensors"))
        torch.set_rng_state(rng["torch"])
        gen = _loader_generator(loader)
        if gen is not None and "loader" in rng:
            gen.set_state(rng["loader"])
        py = data["python_rng"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        npr = data["numpy_rng"]
        np.random.set_state((npr[0], np.asarray(npr[1], dtype=np.uint32), *npr[2:]))
        best = where / "best.safetensors"
        state = _State(
            epoch=int(data["epoch"]),
            history=[EpochRecord(**r) for r in data["history"]],
            best_epoch=int(data["best_epoch"]), best_top1=float(data["best_top1"]),
            best_weights=load_file(str(best)) if best.is_file() else None,
            stale_epochs=int(data["stale_epochs"]), stopped_early=bool(data["stopped_early"]),
            finished=bool(data["finished"]))
        opt_state = None
        if data.get("optimizer") is not None:
            tensors = load_file(str(where / "optimizer.safetensors"))
            opt_state = _join_optimizer(tensors, data["optimizer"])
        return state, opt_state


def _plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous, unshared CPU copies (safetensors refuses shared storage)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def _split_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor],
                                                             dict[str, Any]]:
    """Optimizer state → (tensors keyed ``"<param>/<name>"``, JSON for everything else)."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        plain[str(index)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{key}"] = value.detach().cpu().clone().contiguous()
            else:
                plain[str(index)][key] = value
    groups = json.loads(json.dumps(state_dict["param_groups"]))
    return tensors, {"state": plain, "param_groups": groups}


def _join_optimizer(tensors: Mapping[str, torch.Tensor],
                    data: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in data["state"].items()}
    for key, tensor in tensors.items():
        index, _, name = key.partition("/")
        state.setdefault(int(index), {})[name] = tensor
    groups = copy.deepcopy(list(data["param_groups"]))
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}
