"""Structural pruning: remove whole channels, keep every dependent layer consistent.

:func:`prune` is the one verb: it takes a model, example inputs and a :class:`PruneConfig`,
scores every channel group (:mod:`edgeprune.pruning.importance`), removes the lowest-scoring
channels through :mod:`edgeprune.pruning.engine` and returns a :class:`PruneResult` with the
smaller model and the facts about it. Every prune checks itself: the forward pass must still run
and the output shape must be unchanged.

How many channels a group loses:

- ``scope="uniform"``: ``floor(ratio × channels)`` in every group (per-group ``layer_ratios``
  override ``ratio``). A 10-class ResNet-18 pruned at ``layer2.0.conv1`` with ratio 0.2 loses
  ``floor(0.2 × 128) = 25`` channels: 11,181,642 → 11,138,392 parameters.
- ``scope="global"``: ``floor(ratio × all channels)`` are ranked together; scores are normalised
  per group (mean 1) so that one layer with small weights is not wiped out, and every group
  keeps at least ``min_channels`` (and ``round_to``). With ``round_to > 1`` each group's width
  is rounded after the ranking, so the total removed is close to, not exactly, the target.
- ``round_to``: see :func:`round_kept`.
- ``iterative_steps=N``: the target ratio grows linearly over N steps (``ratio × s / N`` of the
  original channels after step s) and channels are re-scored before each step.

The config and per-layer ratio files live in :mod:`edgeprune.pruning.prune_config`;
:class:`PruneConfig` and :func:`load_layer_ratios` are importable from here too.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeprune.errors import ConfigError, PruningError
from edgeprune.models.cost import count_macs, count_params, width_table
from edgeprune.pruning import engine
from edgeprune.pruning.importance import Importance, ImportanceContext, get_importance
from edgeprune.pruning.prune_config import PruneConfig as PruneConfig
from edgeprune.pruning.prune_config import load_layer_ratios as load_layer_ratios

__all__ = ["GroupChange", "PruneConfig", "PruneResult", "channel_scores", "group_ratios",
           "kept_channels", "load_layer_ratios", "prune", "round_kept"]

Inputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class GroupChange:
    """One channel group: its root, its coupled layers, and which original channels went."""

    root: str
    layers: tuple[str, ...]
    channels_before: int
    channels_after: int
    removed: tuple[int, ...]  # indices in the unpruned root's numbering

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "layers": list(self.layers),
                "channels_before": self.channels_before, "channels_after": self.channels_after,
                "removed": list(self.removed)}


@dataclass(frozen=True)
class PruneResult:
    """The pruned model and what happened to it; :meth:`to_dict` is everything but the model.

    ``history`` is the engine's record of every prune step: ``engine.replay(fresh_model,
    example_inputs, history)`` rebuilds the pruned architecture, onto which the pruned state dict
    loads. ``notes`` are remarks from the criteria (e.g. a ``bn_scale`` fallback).
    """

    model: nn.Module
    config: PruneConfig
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    widths_before: Mapping[str, Mapping[str, int]]
    widths_after: Mapping[str, Mapping[str, int]]
    groups: tuple[GroupChange, ...]
    history: tuple[Mapping[str, Any], ...]
    notes: tuple[str, ...] = ()

    @property
    def removed_channels(self) -> dict[str, tuple[int, ...]]:
        """Group root → original channel indices removed (only groups that lost channels)."""
        return {g.root: g.removed for g in self.groups if g.removed}

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "params_removed_ratio": 1 - self.params_after / self.params_before
            if self.params_before else 0.0,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_removed_ratio": 1 - self.macs_after / self.macs_before
            if self.macs_before else 0.0,
            "widths_before": {k: dict(v) for k, v in self.widths_before.items()},
            "widths_after": {k: dict(v) for k, v in self.widths_after.items()},
            "groups": [g.to_dict() for g in self.groups],
            "history": [dict(step) for step in self.history],
            "notes": list(self.notes),
        }


# --- rounding ----------------------------------------------------------------------------------


def round_kept(kept: int, original: int, round_to: int) -> int:
    """Round a group's kept channel count to a multiple of ``round_to``.

    Why: CPU kernels process channels in SIMD vectors (NEON holds 4 fp32 / 8 fp16 / 16 int8
    lanes) and GPU/NPU kernels in tiles of 8–32; a layer with 61 channels runs at the speed of
    64 and wastes the remainder, so pruning to odd widths saves parameters but not latency.
    The count is rounded *up* (keep a few more channels rather than prune more than asked),
    never above ``original`` (then it rounds down instead), and never below ``round_to``; a
    group narrower than ``round_to`` is left as it is.
    """
    if round_to <= 1 or kept >= original:
        return min(kept, original)
    up = math.ceil(kept / round_to) * round_to
    if up <= original:
        return max(up, round_to)
    down = (original // round_to) * round_to
    return down if down >= round_to else original


def kept_channels(size: int, ratio: float, config: PruneConfig) -> int:
    """Channels a group of ``size`` keeps when pruned once at ``ratio``, as :func:`prune` counts
    them: ``floor(ratio × size)`` removed, at least ``config.min_channels`` kept (or all of a
    narrower group), the count rounded by :func:`round_kept` to ``config.round_to``."""
    removed = math.floor(size * ratio + 1e-9)  # 0.2 × 128 = 25, never 26
    kept = max(size - removed, min(config.min_channels, size))
    return round_kept(kept, size, config.round_to)


# --- the verb ----------------------------------------------------------------------------------


@dataclass
class _Track:
    """A group across steps: original size, target ratio, surviving original indices."""

    key: str
    ratio: float
    original: int
    layers: tuple[str, ...]
    outputs: tuple[str, ...]  # members whose output channels are cut: any may be the root later
    alive: list[int] = field(default_factory=list)


def prune(
    model: nn.Module,
    example_inputs: Inputs,
    config: PruneConfig | None = None,
    *,
    calibration: Sequence[Any] | None = None,
    labeled: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    importance: Importance | None = None,
    inplace: bool = False,
    progress: Progress | None = None,
) -> PruneResult:
    """Prune ``model`` structurally as ``config`` says and return the result.

    ``calibration`` (input batches of real data) feeds ``activation``; ``labeled`` ((x, y)
    batches) and ``loss_fn`` feed ``taylor``. ``importance`` overrides ``config.criterion`` with
    a criterion object (e.g. ``get_importance("l1", include_inputs=False)``). The model is
    deep-copied unless ``inplace`` (then a failed check may leave it partly pruned).
    """
    config = config or PruneConfig()
    config.validate(model)
    work = model if inplace else copy.deepcopy(model)
    criterion = importance or get_importance(config.criterion)
    ctx = ImportanceContext(calibration=tuple(calibration or ()), labeled=tuple(labeled or ()),
                            loss_fn=loss_fn, seed=config.seed)
    if importance is not None:
        ctx.note(f"channels scored by {type(importance).__name__} given by the caller "
                 f"(not config.criterion {config.criterion!r})")
    expected = _output_shapes(work, example_inputs)
    params_before = count_params(work)
    macs_before = count_macs(work, example_inputs)
    widths_before = width_table(work)
    graph = engine.build_graph(work, example_inputs, ignored_layers=config.ignored_layers)
    tracks = _plan(work, graph, config)
    for step in range(1, config.iterative_steps + 1):
        ctx.step = step
        removed = _step(work, graph, tracks, criterion, ctx, config)
        engine.check_forward(work, example_inputs, expected)
        if progress is not None:
            progress({"event": "prune_step", "step": step, "steps": config.iterative_steps,
                      "channels_removed": removed, "params": count_params(work)})
    changes = tuple(
        GroupChange(t.key, t.layers, t.original, len(t.alive),
                    tuple(sorted(set(range(t.original)) - set(t.alive))))
        for t in tracks.values())
    return PruneResult(
        model=work, config=config, params_before=params_before, params_after=count_params(work),
        macs_before=macs_before, macs_after=count_macs(work, example_inputs),
        widths_before=widths_before, widths_after=width_table(work), groups=changes,
        history=tuple(engine.history(graph)), notes=tuple(ctx.notes))


def _step(model: nn.Module, graph: engine.Graph, tracks: dict[str, _Track],
          criterion: Importance, ctx: ImportanceContext, config: PruneConfig) -> int:
    """Score the current groups, remove the chosen channels; return how many went."""
    owner = {name: t.key for t in tracks.values() for name in t.outputs}
    groups = [(owner[g.root], g) for g in engine.channel_groups(graph) if g.root in owner]
    groups = [(key, g) for key, g in groups if tracks[key].ratio > 0]
    prepare = getattr(criterion, "prepare", None)
    if callable(prepare) and groups:
        prepare(model, [g for _, g in groups], ctx)
    choose = _choose_global if config.scope == "global" else _choose_uniform
    chosen = choose(groups, tracks, criterion, ctx, config, ctx.step)
    for key, group in groups:
        picked = chosen.get(key, [])
        if picked:
            engine.prune_group(graph, group, picked, check=False)
            gone = set(picked)
            tracks[key].alive = [a for i, a in enumerate(tracks[key].alive) if i not in gone]
    return sum(len(v) for v in chosen.values())


def _output_shapes(model: nn.Module, example_inputs: Inputs) -> list[tuple[int, ...]]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = (model(example_inputs) if isinstance(example_inputs, torch.Tensor)
                   else model(*example_inputs))
    finally:
        model.train(was_training)
    return [tuple(t.shape) for t in engine.flatten_tensors(out)]


# --- planning ----------------------------------------------------------------------------------


def _plan(model: nn.Module, graph: engine.Graph, config: PruneConfig) -> dict[str, _Track]:
    """One track per prunable group, with the ratio the config gives it."""
    groups = engine.channel_groups(graph)
    tracks = {
        g.root: _Track(g.root, config.ratio, g.size,
                       tuple(dict.fromkeys(m.name for m in g.members)),
                       tuple(m.name for m in g.members if m.dim == "out"), list(range(g.size)))
        for g in groups
    }
    wanted = set(tracks)
    if config.layers is not None:
        wanted = {_group_of(name, groups, graph, config, "layers") for name in config.layers}
        for key, track in tracks.items():
            if key not in wanted:
                track.ratio = 0.0
    if config.layer_ratios:
        listed: dict[str, tuple[str, float]] = {}
        for name, ratio in config.layer_ratios.items():
            key = _group_of(name, groups, graph, config, f"layer_ratios.{name}")
            if key in listed and listed[key][1] != ratio:
                raise ConfigError(
                    f"prune config: layer_ratios give {listed[key][0]!r} ratio {listed[key][1]} "
                    f"and {name!r} ratio {ratio}, but both cut the same channel group",
                    hint=f"coupled layers share their channels; give one ratio for {key!r}")
            if key not in wanted:
                raise ConfigError(f"prune config: layer_ratios names {name!r}, which is not "
                                  "among `layers`", hint="add it to layers or drop it")
            listed[key] = (name, ratio)
        for key, track in tracks.items():
            if key in listed:
                track.ratio = listed[key][1]
            elif config.only_listed:
                track.ratio = 0.0
    return tracks


def group_ratios(model: nn.Module, graph: engine.Graph, config: PruneConfig) -> dict[str, float]:
    """Group root → the ratio ``config`` gives that group (0 for groups it leaves alone).

    The one place that maps the config's layer names to channel groups, for code that cuts
    channels by other means (soft filter pruning zeroes them instead of removing them).
    ``graph`` is ``engine.build_graph(model, ..., ignored_layers=config.ignored_layers)``.
    """
    return {root: track.ratio for root, track in _plan(model, graph, config).items()}


def channel_scores(model: nn.Module, example_inputs: Inputs, criterion: str = "l2", *,
                   calibration: Sequence[Any] | None = None,
                   seed: int = 0) -> dict[str, list[float]]:
    """Group root → one score per channel of ``model`` by ``criterion``, nothing pruned.

    For code that prices channels before deciding how many to remove (``fit``'s knapsack
    strategy); the same scores :func:`prune` ranks channels by.
    """
    work = copy.deepcopy(model)
    crit = get_importance(criterion)
    ctx = ImportanceContext(calibration=tuple(calibration or ()), seed=seed)
    groups = engine.channel_groups(engine.build_graph(work, example_inputs))
    prepare = getattr(crit, "prepare", None)
    if callable(prepare) and groups:
        prepare(work, groups, ctx)
    return {g.root: [float(v) for v in _scores(crit, g, ctx)] for g in groups}


def _group_of(name: str, groups: Sequence[engine.ChannelGroup], graph: engine.Graph,
              config: PruneConfig, key: str) -> str:
    """The group a layer name selects: the one it is root of, else the one cutting its outputs."""
    for group in groups:
        if group.root == name:
            return group.root
    for group in groups:
        if any(m.name == name and m.dim == "out" for m in group.members):
            return group.root
    skipped = engine.skipped_groups(graph)
    if name in skipped:
        why = skipped[name]
    elif name in config.ignored_layers:
        why = "it is listed in ignored_layers"
    else:
        why = ("no prunable channel group cuts its outputs (it produces the model output, "
               "or a layer coupled to it is ignored or unsupported)")
    raise PruningError(f"prune config: key '{key}': layer {name!r} cannot be pruned: {why}",
                       hint="choose a conv layer inside the network, e.g. one listed by "
                       "edgeprune.pruning.engine.channel_groups")


# --- choosing channels -------------------------------------------------------------------------


def _target_kept(track: _Track, ratio: float, step: int, config: PruneConfig) -> int:
    """Channels the group should have after ``step`` of the linear schedule (rounded)."""
    return kept_channels(track.original, ratio * step / config.iterative_steps, config)


def _scores(criterion: Importance, group: engine.ChannelGroup,
            ctx: ImportanceContext) -> torch.Tensor:
    scores = criterion(group, ctx).detach().float().flatten()
    if scores.numel() != group.size:
        raise PruningError(f"criterion returned {scores.numel()} scores for {group.root}, "
                           f"which has {group.size} channels",
                           hint="a criterion returns one score per root channel")
    return torch.nan_to_num(scores, nan=0.0)


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` lowest scores (ties: lower index first, so runs are reproducible)."""
    return sorted(int(i) for i in torch.argsort(scores, stable=True)[:n])


def _choose_uniform(groups: Sequence[tuple[str, engine.ChannelGroup]], tracks: dict[str, _Track],
                    criterion: Importance, ctx: ImportanceContext, config: PruneConfig,
                    step: int) -> dict[str, list[int]]:
    chosen: dict[str, list[int]] = {}
    for key, group in groups:
        track = tracks[key]
        n_remove = group.size - min(_target_kept(track, track.ratio, step, config), group.size)
        if n_remove > 0:
            chosen[key] = _lowest(_scores(criterion, group, ctx), n_remove)
    return chosen


def _choose_global(groups: Sequence[tuple[str, engine.ChannelGroup]], tracks: dict[str, _Track],
                   criterion: Importance, ctx: ImportanceContext, config: PruneConfig,
                   step: int) -> dict[str, list[int]]:
    """Rank every channel of every candidate group together, scores normalised per group."""
    if not groups:
        return {}
    total = sum(tracks[key].original for key, _ in groups)
    target = math.floor(total * config.ratio * step / config.iterative_steps + 1e-9)
    need = target - sum(tracks[key].original - group.size for key, group in groups)
    if need <= 0:
        return {}
    ranked: list[tuple[float, int, str, int]] = []
    scores_of: dict[str, torch.Tensor] = {}
    for order, (key, group) in enumerate(groups):
        scores = _scores(criterion, group, ctx)
        mean = float(scores.mean())
        if mean > 0:
            scores = scores / mean
        else:  # degenerate scores: rank within the group instead
            scores = torch.argsort(torch.argsort(scores)).float() / max(group.size - 1, 1) * 2
        scores_of[key] = scores
        ranked += [(float(s), order, key, i) for i, s in enumerate(scores.tolist())]
    ranked.sort()
    floor_of = {key: min(group.size, max(config.min_channels, config.round_to))
                for key, group in groups}
    size_of = {key: group.size for key, group in groups}
    picks = dict.fromkeys(size_of, 0)
    taken = 0
    for _, _, key, _ in ranked:
        if taken >= need:
            break
        if size_of[key] - picks[key] > floor_of[key]:
            picks[key] += 1
            taken += 1
    # a group's picks are its lowest scores; rounding its width may take a few more or fewer
    chosen: dict[str, list[int]] = {}
    for key, n_picked in picks.items():
        kept = round_kept(size_of[key] - n_picked, tracks[key].original, config.round_to)
        n_remove = size_of[key] - min(kept, size_of[key])
        if n_remove > 0:
            chosen[key] = _lowest(scores_of[key], n_remove)
    return chosen
