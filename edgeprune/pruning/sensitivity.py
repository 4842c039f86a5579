"""Per-layer sensitivity: how much accuracy each channel group loses when pruned alone.

Layers differ: the first conv of a network often cannot lose a quarter of its filters, a wide
late layer can lose most of them. One global ratio ignores that. :func:`analyze` prunes every
channel group on its own at several ratios (no fine-tuning, the rest of the network untouched),
measures the val accuracy drop and the parameters removed, and :func:`choose_ratios` turns the
curves into per-layer ratios for a target — the largest ratio per layer whose drop stays within
a bound, with the bound found by bisection when a parameter-reduction target is given.

The per-layer drops are measured one layer at a time; pruning several layers together usually
costs more than the largest single drop (drops roughly add up), so treat ``max_drop`` as a
per-layer budget and check the combined model (``edgeprune prune --ratios FILE`` then evaluate).

Outputs: :meth:`SensitivityResult.to_dict` (JSON), :func:`write_ratios_toml` (the ``[ratios]``
file that ``edgeprune prune --ratios`` and
:func:`edgeprune.pruning.prune_config.load_layer_ratios` read) and
:func:`plot` (a PNG drawn through :mod:`edgeprune._plotting`; :func:`write_outputs` leaves it out
when matplotlib is not installed).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune._io import atomic_write_bytes, atomic_write_text
from edgeprune._plotting import PlottingUnavailable, figure, png_bytes
from edgeprune._signals import raise_if_interrupted
from edgeprune.errors import PruningError, UsageError
from edgeprune.models.cost import count_params
from edgeprune.pruning import engine
from edgeprune.pruning.prune import PruneConfig, prune
from edgeprune.training.evaluate import evaluate

__all__ = [
    "DEFAULT_RATIOS",
    "LayerPoint",
    "SensitivityResult",
    "analyze",
    "choose_ratios",
    "plot",
    "write_outputs",
    "write_ratios_toml",
]

Progress = Callable[[dict[str, Any]], None]
Inputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class LayerPoint:
    """One group pruned alone at one ratio."""

    ratio: float
    top1: float
    drop: float  # baseline top-1 minus this top-1 (positive = worse)
    params_removed: int
    channels_removed: int

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "top1": self.top1, "drop": self.drop,
                "params_removed": self.params_removed, "channels_removed": self.channels_removed}


@dataclass(frozen=True)
class SensitivityResult:
    """Baseline accuracy and, per group root, the curve over ``ratios``."""

    baseline_top1: float
    params: int
    ratios: tuple[float, ...]
    criterion: str
    layers: Mapping[str, tuple[LayerPoint, ...]]
    channels: Mapping[str, int]
    val_batches: int | None  # None: the whole val loader
    skipped: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline_top1": self.baseline_top1,
            "params": self.params,
            "ratios": list(self.ratios),
            "criterion": self.criterion,
            "val_batches": self.val_batches,
            "layers": {name: {"channels": self.channels[name],
                              "points": [p.to_dict() for p in points]}
                       for name, points in self.layers.items()},
            "skipped": dict(self.skipped),
        }


def analyze(
    model: nn.Module,
    val_loader: Any,
    example_inputs: Inputs,
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    criterion: str = "l2",
    max_batches: int | None = None,
    calibration: Sequence[Any] | None = None,
    labeled: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> SensitivityResult:
    """Prune each channel group alone at each ratio and measure val top-1 (no fine-tuning).

    ``max_batches`` limits the val batches per measurement (faster, noisier). ``layers``
    restricts the analysis to these group roots. ``calibration``/``labeled`` feed the
    ``activation``/``taylor`` criteria. ``model`` is not modified.
    """
    ratios = tuple(sorted({float(r) for r in ratios}))
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise UsageError(f"sensitivity ratios must lie in (0, 1), got {list(ratios)}",
                         hint="pass e.g. 0.25,0.5,0.75")
    emit = progress or (lambda _event: None)
    base = evaluate(model, val_loader, max_batches=max_batches)
    graph = engine.build_graph(model, example_inputs)
    groups = engine.channel_groups(graph)
    skipped = engine.skipped_groups(graph)
    roots = [g.root for g in groups]
    if layers is not None:
        unknown = sorted(set(layers) - set(roots))
        if unknown:
            raise UsageError(f"not prunable group roots: {', '.join(unknown[:3])}",
                             hint=f"choose among: {', '.join(roots[:8])}")
        roots = [r for r in roots if r in layers]
    sizes = {g.root: g.size for g in groups}
    params = count_params(model)
    total = len(roots) * len(ratios)
    curves: dict[str, tuple[LayerPoint, ...]] = {}
    done = 0
    for root in roots:
        points = []
        for ratio in ratios:
            raise_if_interrupted()
            config = PruneConfig(ratio=ratio, criterion=criterion, layer_ratios={root: ratio},
                                 only_listed=True)
            try:
                result = prune(model, example_inputs, config, calibration=calibration,
                               labeled=labeled)
            except PruningError as exc:
                skipped = {**skipped, root: f"ratio {ratio}: {exc.message}"}
                break
            top1 = evaluate(result.model, val_loader, max_batches=max_batches).top1
            removed = sum(len(g.removed) for g in result.groups)
            points.append(LayerPoint(ratio=ratio, top1=top1, drop=base.top1 - top1,
                                     params_removed=params - result.params_after,
                                     channels_removed=removed))
            done += 1
            emit({"stage": "sensitivity", "event": "point", "layer": root, "ratio": ratio,
                  "top1": top1, "done": done, "total": total,
                  "message": f"{root} at {ratio:.2f}: top-1 {top1:.2%} "
                  f"(drop {100 * (base.top1 - top1):+.2f} pt)"})
        curves[root] = tuple(points)
    return SensitivityResult(baseline_top1=base.top1, params=params, ratios=ratios,
                             criterion=criterion, layers=curves,
                             channels={r: sizes[r] for r in curves}, val_batches=max_batches,
                             skipped=skipped)


def _pick(result: SensitivityResult, bound: float) -> dict[str, float]:
    """Per layer, the largest measured ratio whose drop is within ``bound`` (and all smaller)."""
    chosen: dict[str, float] = {}
    for name, points in result.layers.items():
        best = 0.0
        for point in points:  # ratios ascending; stop at the first one over the bound
            if point.drop > bound + 1e-12:
                break
            best = point.ratio
        if best > 0:
            chosen[name] = best
    return chosen


def _removed(result: SensitivityResult, ratios: Mapping[str, float]) -> int:
    """Parameters removed by ``ratios``, summed over layers measured alone (an estimate:
    neighbouring groups share the consumer between them, so the sum slightly overcounts)."""
    total = 0
    for name, ratio in ratios.items():
        for point in result.layers[name]:
            if point.ratio == ratio:
                total += point.params_removed
    return total


def choose_ratios(result: SensitivityResult, *, max_drop: float | None = None,
                  target_reduction: float | None = None, model: nn.Module | None = None,
                  example_inputs: Inputs | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-layer ratios for a target; returns ``(ratios, facts)``.

    ``max_drop`` (e.g. 0.01 = one point of top-1): each layer gets its largest ratio whose own
    drop is at most that. ``target_reduction`` (fraction of parameters to remove): the smallest
    per-layer drop bound whose choice removes at least that much, found by bisection; with
    both, the bound never exceeds ``max_drop``. Parameters removed are measured by pruning
    ``model`` (with ``example_inputs``) when given, else estimated by summing the single-layer
    measurements (which overcounts where neighbouring groups share a consumer).
    """
    if max_drop is None and target_reduction is None:
        raise UsageError("choose a target", hint="pass max_drop=... and/or target_reduction=...")
    if target_reduction is not None and not 0 < target_reduction < 1:
        raise UsageError(f"target reduction {target_reduction} is outside (0, 1)",
                         hint="give the fraction of parameters to remove, e.g. 0.3")
    measured = model is not None and example_inputs is not None

    def removed(ratios: Mapping[str, float]) -> int:
        if not ratios:
            return 0
        if not measured:
            return _removed(result, ratios)
        config = PruneConfig(layer_ratios=dict(ratios), only_listed=True,
                             criterion=result.criterion)
        pruned = prune(model, example_inputs, config)  # type: ignore[arg-type]
        return pruned.params_before - pruned.params_after

    ceiling = math.inf if max_drop is None else max_drop
    bound = ceiling
    if target_reduction is not None:
        candidates = sorted({p.drop for pts in result.layers.values() for p in pts} | {0.0})
        candidates = [c for c in candidates if c <= ceiling] or [0.0]
        low, high = 0, len(candidates) - 1
        if removed(_pick(result, candidates[high])) >= target_reduction * result.params:
            while low < high:  # smallest bound meeting the target; removal grows with it
                mid = (low + high) // 2
                if removed(_pick(result, candidates[mid])) >= target_reduction * result.params:
                    high = mid
                else:
                    low = mid + 1
        bound = candidates[high]
    ratios = _pick(result, bound)
    n_removed = removed(ratios)
    facts = {
        "max_drop": max_drop,
        "target_reduction": target_reduction,
        "drop_bound": None if math.isinf(bound) else bound,
        "params_removed": n_removed,
        "params_removed_measured": measured,
        "reduction": n_removed / result.params if result.params else 0.0,
        "target_met": target_reduction is None or n_removed >= target_reduction * result.params,
        "sum_of_layer_drops": sum(p.drop for name, r in ratios.items()
                                  for p in result.layers[name] if p.ratio == r),
    }
    return ratios, facts


def write_ratios_toml(path: str | os.PathLike[str], ratios: Mapping[str, float],
                      comment: str = "") -> Path:
    """Write the ``[ratios]`` table that ``edgeprune prune --ratios FILE`` reads."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines.append("[ratios]")
    lines += [f"{json.dumps(name)} = {ratio!r}" for name, ratio in sorted(ratios.items())]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def plot(result: SensitivityResult, path: str | os.PathLike[str]) -> Path:
    """Top-1 against ratio, one line per layer, as a PNG.

    Raises :class:`~edgeprune._plotting.PlottingUnavailable` when matplotlib is not installed.
    """
    fig, ax = figure(7, 4.5)
    for name, points in result.layers.items():
        ax.plot([0.0] + [p.ratio for p in points],
                [result.baseline_top1] + [p.top1 for p in points], marker="o", label=name)
    ax.set_xlabel("fraction of the layer's channels pruned (alone, no fine-tuning)")
    ax.set_ylabel("val top-1")
    ax.set_title(f"Per-layer sensitivity ({result.criterion})")
    ax.grid(alpha=0.3)
    if len(result.layers) <= 20:
        ax.legend(fontsize="small", ncol=2 if len(result.layers) > 8 else 1)
    fig.tight_layout()
    return atomic_write_bytes(path, png_bytes(fig, tight=False))


def write_outputs(result: SensitivityResult, out_dir: str | os.PathLike[str], *,
                  max_drop: float | None = None, target_reduction: float | None = None,
                  model: nn.Module | None = None, example_inputs: Inputs | None = None,
                  make_plot: bool = True) -> dict[str, Any]:
    """``sensitivity.json``, ``ratios.toml`` (when a target is given) and ``sensitivity.png``.

    Pass the analysed ``model`` and ``example_inputs`` to measure the parameters the
    recommended ratios remove instead of estimating them.
    """
    from edgeprune._io import atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    data = result.to_dict()
    if max_drop is not None or target_reduction is not None:
        ratios, facts = choose_ratios(result, max_drop=max_drop,
                                      target_reduction=target_reduction, model=model,
                                      example_inputs=example_inputs)
        data["recommendation"] = {"ratios": ratios, **facts}
        comment = (f"per-layer ratios from edgeprune sensitivity ({result.criterion}); "
                   f"max_drop={max_drop}, target_reduction={target_reduction}\n"
                   f"parameters removed: {facts['reduction']:.1%}"
                   + ("" if facts["params_removed_measured"] else " (estimated)"))
        files["ratios"] = str(write_ratios_toml(out / "ratios.toml", ratios, comment))
    if make_plot:
        try:
            files["plot"] = str(plot(result, out / "sensitivity.png"))
        except PlottingUnavailable as exc:
            data["plot_skipped"] = str(exc)
    files["json"] = str(out / "sensitivity.json")
    data["files"] = files
    atomic_write_json(out / "sensitivity.json", data)
    return data
