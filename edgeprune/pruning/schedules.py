"""Pruning pipelines: when to prune relative to training, and how pruned weights may recover.

One entry, :func:`run_schedule`, runs a schedule registered by name (:func:`register_schedule`):

- ``oneshot``: prune once to the config's ratio, then fine-tune for ``epochs``.
- ``iterative``: N rounds (``prune_config.iterative_steps``, 3 when it is 1) of "prune a little,
  fine-tune": after round r the model has lost ``ratio × r / N`` of its original channels; the
  ``epochs`` are shared out over the rounds. Channels are re-scored on the fine-tuned weights
  before every round, so a channel that became useful during fine-tuning is spared.
- ``during-training``: train for ``epochs``; at N epochs spread over the run the model is pruned a
  step further while training continues (the optimizer is rebuilt for the smaller tensors).
- ``retrain``: prune the architecture, re-initialise every module that has ``reset_parameters()``
  and train the smaller network from scratch (Liu et al. 2019 ask whether pruned weights matter).
- ``soft``: Soft Filter Pruning (He et al. 2018, :mod:`edgeprune.pruning.soft`). After every
  epoch the lowest-L2 filters of each channel group are set to zero but keep training (they get
  gradients and may grow back); after the last epoch the lowest filters are zeroed once more and
  only those channels are removed for good (through
  :func:`edgeprune.pruning.materialize.materialize`, which checks the outputs did not change).

Every schedule returns a :class:`ScheduleResult` with the accuracy before, right after pruning
(where a pruned-but-untrained model exists) and at the end. :func:`compare_soft_hard` runs
``soft`` and ``oneshot`` at the same ratio and epochs and returns both accuracies.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune._registry import Registry
from edgeprune.errors import UsageError
from edgeprune.models.cost import count_macs, count_params
from edgeprune.pruning import engine
from edgeprune.pruning.prune import (
    PruneConfig,
    PruneResult,
    group_ratios,
    kept_channels,
    prune,
)
from edgeprune.pruning.soft import SoftFilterPruning
from edgeprune.training.evaluate import EvalResult, evaluate
from edgeprune.training.finetune import FinetuneResult, finetune
from edgeprune.training.recipes import Recipe, get_recipe

__all__ = [
    "ScheduleResult",
    "SoftHardComparison",
    "compare_soft_hard",
    "get_schedule",
    "list_schedules",
    "prune_epochs",
    "pruned_layers",
    "pruned_layers_from_history",
    "register_schedule",
    "reinitialize",
    "run_schedule",
]

Progress = Callable[[dict[str, Any]], None]
Inputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleResult:
    """The pruned, trained model and the figures of the run; ``to_dict()`` is all but the model.

    ``history`` replays the final architecture on the unpruned one (``engine.replay``);
    ``phases`` lists what each step did (prune facts, fine-tune histories) in order.
    """

    schedule: str
    model: nn.Module
    before: EvalResult
    pruned: EvalResult | None  # right after pruning, before any training (None: no such point)
    after: EvalResult
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    epochs: int
    history: tuple[Mapping[str, Any], ...]
    pruned_layers: tuple[str, ...]
    phases: tuple[Mapping[str, Any], ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "accuracy_before": self.before.to_dict(),
            "accuracy_pruned": self.pruned.to_dict() if self.pruned else None,
            "accuracy_after": self.after.to_dict(),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "params_removed_ratio": 1 - self.params_after / self.params_before
            if self.params_before else 0.0,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "epochs": self.epochs,
            "history": [dict(s) for s in self.history],
            "pruned_layers": list(self.pruned_layers),
            "phases": [dict(p) for p in self.phases],
            "notes": list(self.notes),
        }


@dataclass
class _Run:
    """Everything a schedule function needs; built by :func:`run_schedule`."""

    model: nn.Module
    bundle: Any
    config: PruneConfig
    recipe: Recipe
    epochs: int
    example_inputs: Inputs
    emit: Progress
    checkpoint_dir: Path | None
    name: str
    phases: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _calibration: list[torch.Tensor] | None = None
    _labeled: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    _targets: list[tuple[str, int, float, frozenset[str]]] | None = None

    def ckpt(self, phase: str) -> Path | None:
        return self.checkpoint_dir / phase if self.checkpoint_dir is not None else None

    def prune(self, model: nn.Module, config: PruneConfig, *, inplace: bool = False
              ) -> PruneResult:
        """Prune with the config's criterion, feeding it real data when it needs some."""
        calibration = labeled = None
        if config.criterion == "activation":
            if self._calibration is None:
                from edgeprune.data import calibration_batches

                self._calibration = calibration_batches(self.bundle, 8, 32, split="train",
                                                        seed=config.seed)
            calibration = self._calibration
        if config.criterion == "taylor":
            if self._labeled is None:
                self._labeled = _first_batches(self.bundle.train, 4)
            labeled = self._labeled
        result = prune(model, self.example_inputs, config, calibration=calibration,
                       labeled=labeled, inplace=inplace)
        self.notes.extend(n for n in result.notes if n not in self.notes)
        facts = result.to_dict()
        for key in ("widths_before", "widths_after", "history"):
            facts.pop(key, None)
        self.phases.append({"phase": "prune", **facts})
        self.emit({"stage": "schedule", "event": "prune", "schedule": self.name,
                   "params": result.params_after,
                   "message": f"pruned: {result.params_before:,} → {result.params_after:,} "
                   "parameters"})
        return result

    def finetune(self, model: nn.Module, recipe: Recipe, phase: str, *,
                 teacher: nn.Module | None = None, layers: Sequence[str] = (),
                 hook: Any = None) -> FinetuneResult:
        if recipe.distill and teacher is None:
            teacher = self.model  # the unpruned input model
        result = finetune(model, self.bundle.train, self.bundle.val, recipe,
                          teacher=teacher if recipe.distill else None,
                          pruned_layers=layers or None, checkpoint_dir=self.ckpt(phase),
                          progress=self.emit, on_epoch_end=hook)
        self.phases.append({"phase": phase, **result.to_dict()})
        return result

    def evaluate(self, model: nn.Module) -> EvalResult:
        return evaluate(model, self.bundle.val, progress=self.emit)

    def step_config(self, model: nn.Module, step: int, steps: int) -> PruneConfig:
        """The config of step ``step`` of ``steps`` for ``model`` (the input model pruned by
        the earlier steps): each group keeps what one-shot pruning of the input model to
        ``ratio × step / steps`` would keep, counted from the group's *original* width.

        Relative ratios rounded at every step would compound the rounding (32 channels at 0.6
        in 3 steps: 32 → 26 → 20 → 14, where one-shot keeps 13), so after the last step the
        model would be wider than the one-shot model at the same ratio. Global scope ranks
        channels across groups and keeps the relative ratio of :func:`_step_config`.
        """
        config = self.config
        if config.scope != "uniform":
            return _step_config(config, step, steps)
        if self._targets is None:
            graph = engine.build_graph(self.model, self.example_inputs,
                                       ignored_layers=config.ignored_layers)
            ratios = group_ratios(self.model, graph, config)
            self._targets = [(g.root, g.size, ratios.get(g.root, 0.0), _out_names(g))
                             for g in engine.channel_groups(graph)]
        graph = engine.build_graph(model, self.example_inputs,
                                   ignored_layers=config.ignored_layers)
        cut: dict[str, float] = {}
        for group in engine.channel_groups(graph):
            names = _out_names(group)
            target = next((t for t in self._targets if t[0] == group.root), None) or next(
                (t for t in self._targets if t[3] & names), None)
            if target is None or target[2] <= 0:
                continue
            kept = kept_channels(target[1], target[2] * step / steps, config)
            if group.size > kept:
                cut[group.root] = (group.size - kept) / group.size
        if not cut:
            return _step_config(config, step, steps)
        return replace(config, ratio=0.0, layer_ratios=cut, only_listed=True, layers=None,
                       iterative_steps=1)


ScheduleFn = Callable[[_Run], tuple[nn.Module, EvalResult | None, list[Any], tuple[str, ...]]]
_SCHEDULES: Registry[ScheduleFn] = Registry("schedule")


def register_schedule(name: str) -> Callable[[ScheduleFn], ScheduleFn]:
    """Register a schedule function ``(run) -> (model, pruned_eval, history, pruned_layers)``."""
    return _SCHEDULES.register(name)


def get_schedule(name: str) -> ScheduleFn:
    return _SCHEDULES.get(name)


def list_schedules() -> list[str]:
    return _SCHEDULES.names()


def run_schedule(
    model: nn.Module,
    data_bundle: Any,
    schedule_name: str,
    prune_config: PruneConfig,
    recipe: Recipe | str,
    *,
    epochs: int,
    example_inputs: Inputs,
    progress: Progress | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> ScheduleResult:
    """Run the schedule ``schedule_name`` on a copy of ``model`` (the input is left untouched).

    ``epochs`` is the training the schedule spends in total (shared out over the rounds of
    ``iterative``). ``recipe`` (a :class:`~edgeprune.training.recipes.Recipe` or a registered
    name) says how each training phase runs; its own ``epochs`` is replaced. ``progress``
    receives the fine-tune and evaluate events plus ``{"stage": "schedule", ...}`` ones. With
    ``checkpoint_dir`` every training phase checkpoints into a subdirectory and an interrupted
    run started again with the same arguments resumes (pruning is deterministic and redone).
    """
    fn = get_schedule(schedule_name)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UsageError(f"epochs must be a positive integer, not {epochs!r}",
                         hint="pass e.g. epochs=2")
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    emit = progress or (lambda _event: None)
    model.eval()
    run = _Run(model=model, bundle=data_bundle, config=prune_config, recipe=recipe,
               epochs=epochs, example_inputs=example_inputs, emit=emit,
               checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
               name=schedule_name)
    emit({"stage": "schedule", "event": "start", "schedule": schedule_name, "epochs": epochs,
          "message": f"schedule {schedule_name}: {epochs} epochs, ratio {prune_config.ratio}"})
    before = run.evaluate(model)
    params_before, macs_before = count_params(model), count_macs(model, example_inputs)
    final, pruned_eval, history, layers = fn(run)
    after = run.evaluate(final)
    emit({"stage": "schedule", "event": "done", "schedule": schedule_name, "top1": after.top1,
          "message": f"{schedule_name}: top-1 {before.top1:.2%} → {after.top1:.2%}"})
    return ScheduleResult(
        schedule=schedule_name, model=final, before=before, pruned=pruned_eval, after=after,
        params_before=params_before, params_after=count_params(final), macs_before=macs_before,
        macs_after=count_macs(final, example_inputs), epochs=epochs,
        history=tuple(history), pruned_layers=tuple(layers), phases=tuple(run.phases),
        notes=tuple(run.notes))


# --- helpers -----------------------------------------------------------------------------------


def pruned_layers(result: PruneResult) -> tuple[str, ...]:
    """Every layer of the channel groups that lost channels: the roots, their BatchNorms and the
    consumers whose inputs shrank — what the ``partial`` recipe unfreezes."""
    names = {name for g in result.groups if g.removed for name in g.layers}
    return tuple(sorted(names))


def reinitialize(model: nn.Module) -> int:
    """Call ``reset_parameters()`` on every module that has it; returns how many did."""
    count = 0
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            count += 1
    return count


def _first_batches(loader: Any, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for index, batch in enumerate(loader):
        if index >= n:
            break
        batches.append((batch[0], batch[1]))
    return batches


def _rounds(run: _Run) -> int:
    steps = run.config.iterative_steps
    return max(1, min(steps if steps > 1 else 3, run.epochs))


def _split_epochs(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i >= parts - extra else 0) for i in range(parts)]


def _step_config(config: PruneConfig, step: int, steps: int) -> PruneConfig:
    """The config for one step of a schedule that reaches ``config`` after ``steps`` steps.

    After step s a group has lost ``ratio × s / steps`` of its original channels, so the ratio
    relative to the channels left before the step is ``1 - (1 - r·s/S) / (1 - r·(s-1)/S)``.
    """

    def rel(ratio: float) -> float:
        done, goal = ratio * (step - 1) / steps, ratio * step / steps
        return max(0.0, 1 - (1 - goal) / (1 - done)) if done < 1 else 0.0

    ratios = ({k: rel(v) for k, v in config.layer_ratios.items()}
              if config.layer_ratios else None)
    return replace(config, ratio=rel(config.ratio), layer_ratios=ratios, iterative_steps=1)


def _out_names(group: engine.ChannelGroup) -> frozenset[str]:
    return frozenset(m.name for m in group.members if m.dim == "out")


def _phase_recipe(run: _Run, epochs: int) -> Recipe:
    return replace(run.recipe, epochs=epochs)


# --- the schedules -----------------------------------------------------------------------------


@register_schedule("oneshot")
def _oneshot(run: _Run) -> tuple[nn.Module, EvalResult | None, list[Any], tuple[str, ...]]:
    result = run.prune(run.model, replace(run.config, iterative_steps=1))
    pruned_eval = run.evaluate(result.model)
    layers = pruned_layers(result)
    run.finetune(result.model, _phase_recipe(run, run.epochs), "finetune", layers=layers)
    return result.model, pruned_eval, list(result.history), layers


@register_schedule("iterative")
def _iterative(run: _Run) -> tuple[nn.Module, EvalResult | None, list[Any], tuple[str, ...]]:
    rounds = _rounds(run)
    model, history, layers = run.model, [], set()
    first_pruned: EvalResult | None = None
    for step, epochs in enumerate(_split_epochs(run.epochs, rounds), start=1):
        result = run.prune(model, run.step_config(model, step, rounds))
        model = result.model
        if first_pruned is None:
            first_pruned = run.evaluate(model)
        history.extend(result.history)
        step_layers = pruned_layers(result)
        layers |= set(step_layers)
        run.emit({"stage": "schedule", "event": "round", "round": step, "rounds": rounds,
                  "message": f"round {step}/{rounds}: fine-tuning {epochs} "
                  f"epoch{'' if epochs == 1 else 's'}"})
        run.finetune(model, _phase_recipe(run, epochs), f"round-{step}", layers=sorted(layers))
    return model, first_pruned, history, tuple(sorted(layers))


class _PruneAtEpochs:
    """Epoch hook of ``during-training``: prune a step further after the chosen epochs."""

    def __init__(self, run: _Run, at: Sequence[int]) -> None:
        self.run = run
        self.at = list(at)
        self.history: list[dict[str, Any]] = []
        self.layers: set[str] = set()

    def __call__(self, epoch: int, model: nn.Module) -> bool:
        if epoch not in self.at:
            return False
        step = self.at.index(epoch) + 1
        result = self.run.prune(model, self.run.step_config(model, step, len(self.at)),
                                inplace=True)
        self.history.extend(dict(s) for s in result.history)
        self.layers |= set(pruned_layers(result))
        return True

    def state(self) -> dict[str, Any]:
        return {"history": self.history, "layers": sorted(self.layers)}

    def restore(self, state: Mapping[str, Any], model: nn.Module) -> None:
        self.history = [dict(s) for s in state.get("history", [])]
        self.layers = set(state.get("layers", []))
        if self.history:
            engine.replay(model, self.run.example_inputs, self.history)


def prune_epochs(epochs: int, steps: int) -> list[int]:
    """Epochs after which ``during-training`` prunes: spread over the run, never the last one
    (the last epoch always trains the final architecture)."""
    if epochs < 2:
        return [1]
    picks = {min(epochs - 1, max(1, round(k * epochs / (steps + 1)))) for k in
             range(1, steps + 1)}
    return sorted(picks)


@register_schedule("during-training")
def _during(run: _Run) -> tuple[nn.Module, EvalResult | None, list[Any], tuple[str, ...]]:
    model = copy.deepcopy(run.model)
    at = prune_epochs(run.epochs, _rounds(run))
    hook = _PruneAtEpochs(run, at)
    run.emit({"stage": "schedule", "event": "plan", "prune_after_epochs": at,
              "message": f"pruning after epoch(s) {', '.join(map(str, at))} of {run.epochs}"})
    recipe = _phase_recipe(run, run.epochs)
    if recipe.trainable != "all":
        raise UsageError("during-training trains the whole network",
                         hint="use a recipe with trainable = 'all' (e.g. full or distill)")
    run.finetune(model, recipe, "train", hook=hook)
    return model, None, hook.history, tuple(sorted(hook.layers))


@register_schedule("retrain")
def _retrain(run: _Run) -> tuple[nn.Module, EvalResult | None, list[Any], tuple[str, ...]]:
    result = run.prune(run.model, replace(run.config, iterative_steps=1))
    model = result.model
    torch.manual_seed(run.recipe.seed)
    count = reinitialize(model)
    run.notes.append(f"re-initialised {count} modules (reset_parameters) after pruning")
    pruned_eval = run.evaluate(model)
    recipe = _phase_recipe(run, run.epochs)
    if recipe.trainable != "all":
        raise UsageError("retrain trains the re-initialised network from scratch",
                         hint="use a recipe with trainable = 'all' (e.g. full)")
    run.finetune(model, recipe, "retrain")
    return model, pruned_eval, list(result.history), pruned_layers(result)


# --- soft filter pruning (edgeprune.pruning.soft) ----------------------------------------------


@register_schedule("soft")
def _soft(run: _Run) -> tuple[nn.Module, EvalResult | None, list[Any], tuple[str, ...]]:
    from edgeprune.data import calibration_batches

    model = copy.deepcopy(run.model)
    sfp = SoftFilterPruning(model, run.example_inputs, run.config)
    recipe = _phase_recipe(run, run.epochs)
    if recipe.trainable != "all":
        raise UsageError("soft filter pruning trains every filter",
                         hint="use a recipe with trainable = 'all' (e.g. full or distill)")
    run.finetune(model, recipe, "soft", hook=sfp)
    calibration = calibration_batches(run.bundle, 4, 32, split="val", seed=run.config.seed)
    cut = sfp.remove_zeroed(model, run.example_inputs, calibration)
    result = cut.result
    run.phases.append({"phase": "materialize",
                       "zeroed": {k: len(v) for k, v in cut.zeroed.items()},
                       "biases_zeroed": list(cut.biases_zeroed), **result.to_dict()})
    if {k: v for k, v in result.removed.items() if v} != cut.expected:
        run.notes.append(f"materialize removed {result.removed}, soft pruning zeroed "
                         f"{cut.expected}")
    layers = tuple(sorted({m.name for g in sfp.groups for m in g.members
                           if cut.zeroed.get(g.root)}))
    return result.model, None, list(result.history), layers


# --- soft vs hard ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoftHardComparison:
    """Soft filter pruning and one-shot hard pruning at the same ratio and training budget."""

    soft: ScheduleResult
    hard: ScheduleResult

    def to_dict(self) -> dict[str, Any]:
        def brief(r: ScheduleResult) -> dict[str, Any]:
            return {"top1_before": r.before.top1, "top1_after": r.after.top1,
                    "params_after": r.params_after, "macs_after": r.macs_after}

        return {"soft": brief(self.soft),
                "hard": brief(self.hard),
                "soft_minus_hard_top1": self.soft.after.top1 - self.hard.after.top1}


def compare_soft_hard(model: nn.Module, data_bundle: Any, prune_config: PruneConfig,
                      recipe: Recipe | str, *, epochs: int, example_inputs: Inputs,
                      progress: Progress | None = None) -> SoftHardComparison:
    """Run ``soft`` and ``oneshot`` from the same trained model; return both results."""
    soft = run_schedule(model, data_bundle, "soft", prune_config, recipe, epochs=epochs,
                        example_inputs=example_inputs, progress=progress)
    hard = run_schedule(model, data_bundle, "oneshot", prune_config, recipe, epochs=epochs,
                        example_inputs=example_inputs, progress=progress)
    return SoftHardComparison(soft=soft, hard=hard)


def pruned_layers_from_history(model: nn.Module, example_inputs: Inputs,
                               history: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The layers of a pruned model's groups whose roots a pruning history names (what the
    ``partial`` recipe unfreezes for a model loaded from a pruned directory).

    A group counts when its root is named, or when a named layer's *output* channels are in it
    (the rebuilt graph may root it elsewhere); a named layer that only *consumes* a group (ResNet's
    ``layer2.0.conv1`` reads the layer-1 residual stream) does not bring that group in."""
    roots = {str(step.get("root")) for step in history}
    if not roots:
        return ()
    graph = engine.build_graph(model, example_inputs)
    names = {m.name for g in engine.channel_groups(graph)
             if g.root in roots or any(m.name in roots and m.dim == "out" for m in g.members)
             for m in g.members}
    return tuple(sorted(names))
