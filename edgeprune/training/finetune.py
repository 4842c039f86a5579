"""The fine-tuning loop: :func:`finetune` runs a :class:`~edgeprune.training.recipes.Recipe`.

:func:`finetune` trains a model in place. It is deterministic for a seed: torch's RNG and the
train loader's shuffle generator are seeded at the start, and their states are stored in the
checkpoint written (atomically) after every epoch (:mod:`edgeprune.training.checkpoints`), so an
interrupted run resumed from its checkpoint ends with the same weights as one that was never
interrupted. Recipes, their registry and which layers a recipe trains live in
:mod:`edgeprune.training.recipes`. Progress is reported as events to a callback; nothing prints.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune._signals import raise_if_interrupted
from edgeprune.errors import UsageError
from edgeprune.training.checkpoints import (
    Checkpoints,
    EpochRecord,
    LoopState,
    Resumable,
    loader_generator,
)
from edgeprune.training.evaluate import EvalResult, evaluate, first_batch, forward_checked
from edgeprune.training.recipes import (
    Recipe,
    apply_freeze,
    freeze,
    get_recipe,
    train_mode,
    trainable_modules,
    validate_recipe,
)
from edgeprune.training.threads import torch_threads

__all__ = [
    "EpochHook",
    "EpochRecord",
    "FinetuneResult",
    "check_teacher",
    "default_threads",
    "finetune",
    "set_threads",
]

Progress = Callable[[dict[str, Any]], None]


# --- results -----------------------------------------------------------------------------------


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
class EpochHook(Resumable, Protocol):
    """Called after each epoch's training step, before validation (schedules use it to prune).

    Returns True when it changed the model's *structure* (the optimizer is then rebuilt).
    ``state()`` (JSON data) is stored in the checkpoint; ``restore(state, model)`` is called on
    resume before the weights load, so it can rebuild the architecture (e.g. replay pruning).
    """

    def __call__(self, epoch: int, model: nn.Module) -> bool: ...


# --- threads -----------------------------------------------------------------------------------


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def set_threads(n: int = 0) -> Iterator[int]:
    """Set torch's intra-op threads to ``n`` (0: the usable core count); restore them after
    (:func:`~edgeprune.training.threads.torch_threads`: safe from several threads)."""
    with torch_threads(n or default_threads()) as in_effect:
        yield in_effect


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
    validate_recipe(recipe, f"recipe {recipe.name!r}")
    if recipe.distill and teacher is None:
        raise UsageError(f"recipe {recipe.name!r} distils from a teacher, but none was given",
                         hint="pass teacher=<the unpruned model> or use the 'full' recipe")
    if teacher is not None and not recipe.distill:
        raise UsageError("a teacher was given but the recipe does not distil",
                         hint="use the 'distill' recipe or set distill = true")
    ckpt = Checkpoints(Path(checkpoint_dir)) if checkpoint_dir is not None else None
    emit = progress or (lambda _event: None)
    with set_threads(recipe.num_threads):
        if teacher is not None:  # before seeding: reading a batch may draw from the RNGs
            check_teacher(teacher, model, val_loader)
        trainable = trainable_modules(model, recipe, pruned_layers)
        state = LoopState()
        torch.manual_seed(recipe.seed)
        random.seed(recipe.seed)
        np.random.seed(recipe.seed % 2**32)
        _seed_loader(train_loader, recipe.seed)
        if ckpt is not None and not resume:
            ckpt.clear()
        loaded = ckpt.load(model, recipe, train_loader, on_epoch_end) if (
            ckpt is not None and resume) else None
        with freeze(model, trainable):
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
                    apply_freeze(model, trainable)  # pruning replaces parameters
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
    train_mode(model, trainable)
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


def _update(state: LoopState, record: EpochRecord, model: nn.Module, recipe: Recipe) -> None:
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


def _finish(model: nn.Module, state: LoopState, recipe: Recipe) -> bool:
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


def _seed_loader(loader: Iterable[Any], seed: int) -> None:
    gen = loader_generator(loader)
    if gen is not None:
        gen.manual_seed(seed)
    base = getattr(loader, "generator", None)
    if isinstance(base, torch.Generator) and base is not gen:
        base.manual_seed(seed)
