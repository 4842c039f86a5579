"""Fake → real: turn a masked or zero-filter model into a physically smaller one.

Masks and zeroed filters do not shrink a model. :func:`materialize` finds the channels that
carry no information (:mod:`edgeprune.pruning.dead_channels`: dead channels, always zero, and
constant ones), removes them through the pruning engine (so every dependent layer — the next
conv's inputs, BatchNorm, residual partners, downsample paths, concat consumers, depthwise
convs, the classifier's inputs — stays consistent) and checks the outputs did not change.

Removing a dead channel is exact. A constant ``c`` is *folded* into a consumer's bias
(``bias += W[:, i] · c``; for a bias-free conv followed by a BatchNorm, into the norm's running
mean) where that is exact: a linear layer, a conv without zero padding (any kernel) or with
constant-preserving padding. A zero-padded conv (3×3 with padding 1) sees ``0`` instead of ``c``
at the borders, so folding there is inexact. ``constant_channels`` decides: ``"fold"``
(default) folds where every consumer is exact and keeps the channel otherwise; ``"keep"`` never
removes constant channels; ``"remove-and-report"`` also removes the inexact and the
data-independent but varying ones (folding the interior value where there is one) and reports
the deviation each removal caused, measured on the calibration inputs.

Parity is checked in float64 (free of float32 summation-order noise): a deviation above the
tolerance where every removal should have been exact raises :class:`ParityError`.

The masks a model may arrive with (``torch.nn.utils.prune``, edgeprune keep-masks, masked state
dicts) are handled by :mod:`edgeprune.pruning.masks`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeprune.errors import ParityError, UsageError
from edgeprune.models.cost import count_macs, count_params
from edgeprune.pruning import engine
from edgeprune.pruning.dead_channels import (
    ChannelAnalysis,
    GroupChannels,
    analyse_channels,
    input_batches,
)
from edgeprune.pruning.masks import masked_copy

__all__ = [
    "CONSTANT_POLICIES",
    "MaterializeResult",
    "materialize",
]

CONSTANT_POLICIES = ("fold", "keep", "remove-and-report")

Inputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaterializeResult:
    """The smaller model and what it cost; ``to_dict()`` is everything but the model."""

    model: nn.Module
    removed: dict[str, int]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    max_abs_diff: float  # in float64: the transform's own error, free of float32 rounding
    notes: tuple[str, ...] = ()
    history: list[dict[str, Any]] = field(default_factory=list)
    # the same comparison run in float32, where fewer channels change the summation order
    max_abs_diff_float32: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": dict(self.removed),
            "removed_channels": sum(self.removed.values()),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "max_abs_diff": self.max_abs_diff,
            "max_abs_diff_float32": self.max_abs_diff_float32,
            "notes": list(self.notes),
            "history": copy.deepcopy(self.history),
        }


# --- the transform -----------------------------------------------------------------------------


def materialize(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    constant_channels: str = "fold",
    tolerance: float = 1e-5,
    calibration: Inputs | Sequence[Inputs] | None = None,
) -> MaterializeResult:
    """Return a physically smaller copy of ``model`` without its dead (and foldable) channels.

    ``model`` may carry ``torch.nn.utils.prune`` masks or plain zero filters; ``masks`` adds
    edgeprune keep-masks. The reference is the masked model itself: the result's outputs are
    compared with it on ``calibration`` (a batch, or a list of batches, of real inputs) or else
    on ``example_inputs``. A deviation above ``tolerance`` where removal should have been exact
    raises :class:`ParityError`. ``model`` is not modified.
    """
    if constant_channels not in CONSTANT_POLICIES:
        raise UsageError(
            f"constant_channels={constant_channels!r} is not a policy",
            hint=f"use one of {', '.join(CONSTANT_POLICIES)}",
        )
    work = masked_copy(model, masks)
    batches = input_batches(calibration, example_inputs)
    reference = [_run(work, b) for b in batches]
    reference64 = _run_double(work, batches)
    params_before = count_params(work)
    macs_before = count_macs(work, example_inputs)

    graph = engine.build_graph(work, example_inputs)
    groups = engine.channel_groups(graph)
    analysis = analyse_channels(work, graph, groups, batches)
    found = analysis.found
    notes = _notes_before(graph, found, constant_channels, calibration is None)

    plan = _plan(groups, found, constant_channels, notes)
    constants = _constants(groups, plan, analysis)
    exact_plan = {root: p for root, p in plan.items() if p[1]}
    inexact_plan = {root: p for root, p in plan.items() if not p[1]}
    removed: dict[str, int] = {}
    for root, (channels, _) in exact_plan.items():
        removed[root] = _remove(graph, root, channels, constants[root])
    diff = _max_diff_double(work, batches, reference64)
    if diff > tolerance:
        raise ParityError(
            f"materialized model deviates by {diff:.3g} (> {tolerance:g}) although only dead "
            "or exactly foldable channels were removed",
            hint="report this model: a layer between the removed channels and their consumers "
            "is not channel-wise; meanwhile use constant_channels='keep'",
        )
    for root, (channels, _) in inexact_plan.items():
        removed[root] = _remove(graph, root, channels, constants[root])
        now = _max_diff_double(work, batches, reference64)
        notes.append(
            f"{root}: removed {len(channels)} constant channel(s) that no consumer absorbs "
            f"exactly; max abs deviation is now {now:.3g} (was {diff:.3g})"
        )
        diff = now
    if not removed:
        notes.append("no removable channels: the model is returned unchanged")
    return MaterializeResult(
        model=work,
        removed=removed,
        params_before=params_before,
        params_after=count_params(work),
        macs_before=macs_before,
        macs_after=count_macs(work, example_inputs),
        max_abs_diff=diff,
        notes=tuple(notes),
        history=engine.history(graph),
        max_abs_diff_float32=_max_diff(work, batches, reference),
    )


def _plan(
    groups: list[engine.ChannelGroup],
    found: Mapping[str, GroupChannels],
    policy: str,
    notes: list[str],
) -> dict[str, tuple[list[int], bool]]:
    """Root → (channels to remove, exact?) under the policy."""
    by_root = {g.root: g for g in groups}
    plan: dict[str, tuple[list[int], bool]] = {}
    for root, info in found.items():
        group = by_root[root]
        exact = list(info.dead) + (list(info.constant_exact) if policy != "keep" else [])
        inexact = [*info.constant_inexact, *info.varying] if policy == "remove-and-report" else []
        if len(exact) + len(inexact) >= group.size:
            kept = (inexact or exact).pop()
            notes.append(f"{root}: every channel is dead or constant; channel {kept} is kept")
        if exact or inexact:
            plan[root] = (sorted(exact + inexact), not inexact)
    return plan


def _notes_before(
    graph: engine.Graph,
    found: Mapping[str, GroupChannels],
    policy: str,
    no_calibration: bool,
) -> list[str]:
    notes: list[str] = []
    if no_calibration:
        notes.append("constancy was checked on the example inputs only (no calibration data)")
    for root, reason in engine.skipped_groups(graph).items():
        notes.append(f"{root}: not examined ({reason})")
    for root, info in found.items():
        if info.partly_dead:
            notes.append(
                f"{root}: kept {len(info.partly_dead)} channel(s) zero in some coupled layers "
                "but alive in another coupled producer (a residual partner or a "
                "squeeze-excitation scale)"
            )
        if info.varying and policy != "remove-and-report":
            notes.append(
                f"{root}: kept {len(info.varying)} data-independent channel(s) whose value is "
                "not one constant (zero-padded depthwise conv or channel rescaling follows)"
            )
        if info.constant_inexact and policy == "fold":
            notes.append(
                f"{root}: kept {len(info.constant_inexact)} constant channel(s) feeding a "
                "zero-padded conv, where folding is inexact at the borders "
                "(constant_channels='remove-and-report' removes them and measures the cost)"
            )
        constants = len(info.constant_exact) + len(info.constant_inexact)
        if constants and policy == "keep":
            notes.append(f"{root}: kept {constants} constant channel(s) (policy 'keep')")
    return notes


def _constants(
    groups: list[engine.ChannelGroup],
    plan: Mapping[str, tuple[list[int], bool]],
    analysis: ChannelAnalysis,
) -> dict[str, dict[int, dict[str, float]]]:
    """Root → root channel → consumer name → the constant it receives, from the analysis.

    Read before anything is pruned: pruning one group shifts the concat offsets at which
    *other* groups' channels enter their consumers, so probe indices go stale; root channel
    numbers and consumer names do not.
    """
    by_root = {g.root: g for g in groups}
    table: dict[str, dict[int, dict[str, float]]] = {}
    for root, (channels, _) in plan.items():
        table[root] = {
            k: analysis.constants(by_root[root], k)
            for k in channels
            if k not in analysis.found[root].dead
        }
    return table


def _remove(
    graph: engine.Graph,
    root: str,
    channels: list[int],
    constants: Mapping[int, Mapping[str, float]],
) -> int:
    """Fold the constant ones among ``channels`` into their consumers, then prune them all.

    The group is fetched fresh, so the consumers' indices are the current ones.
    """
    group = engine.group_of(graph, root)
    consumers = [m for m in group.members if m.dim == "in"]
    for k, values in constants.items():
        for member in consumers:
            if member.name in values and k in member.root_idxs:
                _fold(graph, member, k, values[member.name])
    engine.prune_group(graph, group, channels)
    return len(channels)


def _fold(graph: engine.Graph, member: engine.Member, k: int, value: float) -> None:
    """Add channel ``k``'s constant contribution ``W[:, i] · c`` to the consumer's outputs.

    Into its bias when it has one; else, when a BatchNorm reads only this layer, into the
    norm's running mean (``BN(y + d)`` with mean ``m`` is ``BN(y)`` with mean ``m - d``), so the
    parameter set does not change; else a zero bias is added first (recorded in the history).
    """
    module = member.module
    idxs = [i for i, r in zip(member.idxs, member.root_idxs, strict=True) if r == k]
    with torch.no_grad():
        delta = _contribution(module, idxs) * value
        if module.bias is not None:
            module.bias += delta
            return
        bn = engine.batchnorm_after(graph, module)
        if bn is not None:
            bn.running_mean -= delta.to(bn.running_mean.dtype)
            return
        engine.add_bias(graph, member.name)
        module.bias += delta


def _contribution(module: nn.Module, idxs: Sequence[int]) -> torch.Tensor:
    """Per output channel: the summed weights that input channels ``idxs`` meet."""
    weight = module.weight.detach()
    if isinstance(module, nn.Linear):
        return weight[:, list(idxs)].sum(dim=1)
    total = torch.zeros(weight.shape[0], dtype=weight.dtype)
    per_group_in = weight.shape[1]
    out_per_group = weight.shape[0] // module.groups
    spatial = tuple(range(1, weight.dim() - 1))
    for i in idxs:
        g, local = divmod(i, per_group_in)
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        total[rows] += weight[rows, local].sum(dim=spatial)
    return total


# --- parity ------------------------------------------------------------------------------------


def _run(model: nn.Module, inputs: Inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(inputs) if isinstance(inputs, torch.Tensor) else model(*inputs)
    return engine.flatten_tensors(out)


def _run_double(model: nn.Module, batches: list[Inputs]) -> list[list[torch.Tensor]]:
    """Outputs of a float64 twin of ``model``: parity free of float32 summation-order noise.

    Removing a dead channel changes how many terms a following layer sums, so float32 outputs
    move by a few ulps of their magnitude (1e-5 on logits of ~30) although the transform is
    exact; in float64 an exact removal stays below 1e-12.
    """
    twin = copy.deepcopy(model).double()
    return [_run(twin, _as_double(b)) for b in batches]


def _as_double(inputs: Inputs) -> Inputs:
    if isinstance(inputs, torch.Tensor):
        return inputs.double() if inputs.is_floating_point() else inputs
    return tuple(_as_double(x) for x in inputs)  # type: ignore[return-value]


def _max_diff_double(
    model: nn.Module, batches: list[Inputs], reference: list[list[torch.Tensor]]
) -> float:
    diff = 0.0
    for got_all, ref in zip(_run_double(model, batches), reference, strict=True):
        for got, want in zip(got_all, ref, strict=True):
            diff = max(diff, float((got - want).abs().max()))
    return diff


def _max_diff(
    model: nn.Module, batches: list[Inputs], reference: list[list[torch.Tensor]]
) -> float:
    diff = 0.0
    for batch, ref in zip(batches, reference, strict=True):
        for got, want in zip(_run(model, batch), ref, strict=True):
            diff = max(diff, float((got - want).abs().max()))
    return diff
