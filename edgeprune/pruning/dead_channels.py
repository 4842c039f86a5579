"""Which channels carry nothing: dead and constant channels of a (masked) model, per group.

Zeroed filters leave channels that no longer depend on the input. For each channel group (see
:mod:`edgeprune.pruning.engine`) this module finds them in two steps; nothing is changed.

1. *Structurally data-independent*: every producer that adds into the group's channel (a
   non-depthwise conv or linear "out" member) has a zero filter for it, or its output is killed
   before any branch by a depthwise conv with a zero filter or a norm with zero scale. Only then
   can the channel's value not depend on the input. Producers that only *multiply* the channel
   (squeeze-excitation scales) do not count, but then only a dead (zero) channel may go.
2. *Measured*: the value every consumer (an "in" member) receives on that channel is recorded on
   the calibration inputs — after whatever BatchNorm, activation (ReLU, ReLU6, Hardswish, SiLU,
   ...), pooling or residual add lies between, because it is the real forward pass that is
   observed. All zero: the channel is **dead** and removing it is exact. One constant value:
   it is a **constant channel**, *exact* when every consumer can absorb it into its bias
   (:func:`folds_exactly`), *inexact* otherwise. Anything else (a constant through a
   zero-padded depthwise conv varies at the borders; squeeze-excitation rescales it per image)
   is *varying*.

In a residual group a channel counts only when it is dead in every coupled producer: one live
branch makes it vary (it is reported as *partly dead*). Groups with a LayerNorm/GroupNorm (which
normalise across channels, so removing any channel changes the others) are left alone.

:func:`detect_dead_channels` is the report; :func:`analyse_channels` is the same analysis on a
graph already built, which :func:`edgeprune.pruning.materialize.materialize` then acts on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.pruning import engine
from edgeprune.pruning.masks import masked_copy

__all__ = [
    "ChannelAnalysis",
    "GroupChannels",
    "analyse_channels",
    "detect_dead_channels",
    "folds_exactly",
    "input_batches",
]

Inputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]
_CONV = nn.modules.conv._ConvNd
_CHANNELWISE_NORM = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_MIXING_NORM = (nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class GroupChannels:
    """What :func:`detect_dead_channels` found in one group (root channel indices).

    ``constant_exact`` channels can be folded into every consumer exactly; ``constant_inexact``
    ones cannot (a zero-padded conv consumes them); ``partly_dead`` ones are zero in some
    producers but alive in another coupled one (kept: residual rule); ``varying`` ones are
    data-independent but not one constant (kept).
    """

    root: str
    size: int
    dead: tuple[int, ...] = ()
    constant_exact: tuple[int, ...] = ()
    constant_inexact: tuple[int, ...] = ()
    partly_dead: tuple[int, ...] = ()
    varying: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "size": self.size,
            "dead": list(self.dead),
            "constant_exact": list(self.constant_exact),
            "constant_inexact": list(self.constant_inexact),
            "partly_dead": list(self.partly_dead),
            "varying": list(self.varying),
        }



@dataclass(frozen=True)
class ChannelAnalysis:
    """What :func:`analyse_channels` found, and the values consumers receive on each channel."""

    found: dict[str, GroupChannels]  # root → its dead and constant channels (groups with any)
    probes: Mapping[str, _Probe]

    def constants(self, group: engine.ChannelGroup, k: int) -> dict[str, float]:
        """Consumer name → the one value it receives on root channel ``k`` of ``group``.

        Empty when any consumer sees the channel vary. Read it before anything is pruned: the
        probes are indexed by the consumers' channels at analysis time.
        """
        consumers = [m for m in group.members if m.dim == "in"]
        return {m.name: v for m, v in _consumer_values(consumers, self.probes, k) or []}


def input_batches(
    calibration: Inputs | Sequence[Inputs] | None, example_inputs: Inputs
) -> list[Inputs]:
    """The batches to observe: ``calibration`` (one batch or several), else the example inputs."""
    if calibration is None:
        return [example_inputs]
    if isinstance(calibration, torch.Tensor):
        return [calibration]
    batches = list(calibration)
    if not batches:
        raise UsageError("calibration is empty", hint="pass at least one batch of real inputs")
    return batches


def detect_dead_channels(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    calibration: Inputs | Sequence[Inputs] | None = None,
) -> dict[str, GroupChannels]:
    """Root name → dead and constant channels of each group that has any (nothing is changed).

    Works on a copy: ``torch.nn.utils.prune`` masks and ``masks`` are applied to the copy.
    """
    work = masked_copy(model, masks)
    graph = engine.build_graph(work, example_inputs)
    groups = engine.channel_groups(graph)
    return analyse_channels(work, graph, groups, input_batches(calibration, example_inputs)).found


@dataclass
class _Probe:
    """Per consumer input channel: min and max over every position and sample seen."""

    low: torch.Tensor | None = None
    high: torch.Tensor | None = None

    def update(self, values: torch.Tensor, axis: int) -> None:
        moved = values.detach().movedim(axis, 0).reshape(values.shape[axis], -1)
        low, high = moved.amin(dim=1), moved.amax(dim=1)
        self.low = low if self.low is None else torch.minimum(self.low, low)
        self.high = high if self.high is None else torch.maximum(self.high, high)



def analyse_channels(
    model: nn.Module,
    graph: engine.Graph,
    groups: list[engine.ChannelGroup],
    batches: list[Inputs],
) -> ChannelAnalysis:
    """Find the dead and constant channels of ``groups`` (of ``graph``, built on ``model``),
    observing the consumers on ``batches``."""
    candidates: dict[str, tuple[list[int], list[int], set[int]]] = {}
    consumers: dict[str, nn.Module] = {}
    for group in groups:
        killed, partly, gated = _structural(graph, group)
        if killed or partly:
            candidates[group.root] = (killed, partly, gated)
            for member in group.members:
                if member.dim == "in":
                    consumers[member.name] = member.module
    probes = _observe(model, consumers, batches) if consumers else {}
    found: dict[str, GroupChannels] = {}
    for group in groups:
        if group.root not in candidates:
            continue
        killed, partly, gated = candidates[group.root]
        found[group.root] = _classify(group, killed, partly, gated, probes)
    return ChannelAnalysis(found=found, probes=probes)


def _structural(
    graph: engine.Graph, group: engine.ChannelGroup
) -> tuple[list[int], list[int], set[int]]:
    """Channels data-independent in every producer, those zero in only some, and the gated.

    A *gate* is a producer whose output only multiplies the channel (the scale branch of a
    squeeze-excitation block): ``x · g(x)`` is exactly zero when ``x`` is, whatever ``g``, so
    gates do not keep a channel alive — but a live gate makes a non-zero constant vary (and a
    saturated hard-sigmoid could hide that on calibration data), so gated channels may only go
    when they are dead.
    """
    if any(isinstance(m.module, _MIXING_NORM) for m in group.members):
        return [], [], set()
    if not all(m.one_to_one for m in group.members if m.dim == "out"):
        return [], [], set()
    out_members = {m.name: m for m in group.members if m.dim == "out"}
    producers = [m for m in out_members.values() if _mixes_channels(m.module)]
    gates = [m for m in producers if engine.is_gate(graph, m.module)]
    additive = [m for m in producers if m not in gates]
    if not additive:
        return [], [], set()
    per_producer = [_killed(graph, p, out_members) for p in additive]
    all_killed = set.intersection(*per_producer)
    any_killed = set.union(*per_producer) | _zero_filters_anywhere(out_members.values())
    gated: set[int] = set()
    for gate in gates:
        gated |= all_killed - _killed(graph, gate, out_members)
    return sorted(all_killed), sorted(any_killed - all_killed), gated



def _mixes_channels(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, _CONV) and not engine.is_depthwise(module)


def _zero_rows(module: nn.Module) -> torch.Tensor | None:
    """Per output channel: True where the filter (or a norm's scale) is entirely zero."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() == 0:
        return None
    if isinstance(module, _CONV) and getattr(module, "transposed", False):
        return None  # ConvTranspose keeps outputs on axis 1; not handled
    return weight.detach().reshape(weight.shape[0], -1).ne(0).sum(dim=1).eq(0)


def _zero_channels(module: nn.Module, idxs: Sequence[int]) -> set[int]:
    """Root channels ``k`` whose filter ``idxs[k]`` in ``module`` is zero."""
    rows = _zero_rows(module)
    if rows is None or not bool(rows.any()):
        return set()
    return {k for k, idx in enumerate(idxs) if bool(rows[idx])}


def _zero_filters_anywhere(members: Iterable[engine.Member]) -> set[int]:
    zero: set[int] = set()
    for member in members:
        if isinstance(member.module, (_CONV, nn.Linear, *_CHANNELWISE_NORM)):
            zero |= _zero_channels(member.module, member.idxs)
    return zero


def _killed(
    graph: engine.Graph, producer: engine.Member, out_members: Mapping[str, engine.Member]
) -> set[int]:
    """Root channels whose contribution from ``producer`` cannot depend on the input.

    Either its own filter is zero, or the single path from it (through parameter-free
    element-wise ops) reaches a depthwise conv or channel-wise norm of the group whose filter
    or scale is zero for the channel before the path branches or merges.
    """
    killed = _zero_channels(producer.module, producer.idxs)
    for node in engine.path_after(graph, producer.module):
        if node.inputs != 1:
            break  # an add / concat / mul: other branches join here
        module = node.module
        if node.name in out_members:
            member = out_members[node.name]
            if not (engine.is_depthwise(module) or isinstance(module, _CHANNELWISE_NORM)):
                break
            killed |= _zero_channels(module, member.idxs)
            continue
        if node.has_parameters or isinstance(module, (_CONV, nn.Linear)):
            break
    return killed


def _observe(
    model: nn.Module, consumers: Mapping[str, nn.Module], batches: list[Inputs]
) -> dict[str, _Probe]:
    probes = {name: _Probe() for name in consumers}
    handles = []
    for name, module in consumers.items():
        axis = -1 if isinstance(module, nn.Linear) else 1

        def hook(_m: nn.Module, args: tuple[Any, ...], name: str = name, axis: int = axis) -> None:
            probes[name].update(args[0], axis)

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for batch in batches:
                if isinstance(batch, torch.Tensor):
                    model(batch)
                else:
                    model(*batch)
    finally:
        for handle in handles:
            handle.remove()
    return probes


def _classify(
    group: engine.ChannelGroup,
    killed: list[int],
    partly: list[int],
    gated: set[int],
    probes: Mapping[str, _Probe],
) -> GroupChannels:
    dead: list[int] = []
    exact: list[int] = []
    inexact: list[int] = []
    varying: list[int] = []
    consumers = [m for m in group.members if m.dim == "in"]
    for k in killed:
        values = _consumer_values(consumers, probes, k)
        if values is None:
            varying.append(k)
        elif all(v == 0.0 for _, v in values):
            dead.append(k)
        elif k in gated:
            varying.append(k)
        elif all(folds_exactly(m.module) for m, _ in values):
            exact.append(k)
        else:
            inexact.append(k)
    return GroupChannels(
        root=group.root,
        size=group.size,
        dead=tuple(dead),
        constant_exact=tuple(exact),
        constant_inexact=tuple(inexact),
        partly_dead=tuple(partly),
        varying=tuple(varying),
    )


def _consumer_values(
    consumers: Sequence[engine.Member], probes: Mapping[str, _Probe], k: int
) -> list[tuple[engine.Member, float]] | None:
    """The one value each consumer receives on root channel ``k``; None if any varies."""
    values: list[tuple[engine.Member, float]] = []
    for member in consumers:
        probe = probes.get(member.name)
        if probe is None or probe.low is None or probe.high is None:
            return None
        idxs = [i for i, r in zip(member.idxs, member.root_idxs, strict=True) if r == k]
        if not idxs:
            continue
        low = float(probe.low[idxs].min())
        high = float(probe.high[idxs].max())
        if not (math.isfinite(low) and math.isfinite(high)) or high - low > 1e-6 * max(
            1.0, abs(high)
        ):
            return None
        values.append((member, high if low == high else (low + high) / 2))
    return values


def folds_exactly(module: nn.Module) -> bool:
    """True when a constant input channel adds exactly ``W[:, i] · c`` to every output."""
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, _CONV) and not module.transposed:
        padding = module.padding
        no_pad = padding == "valid" if isinstance(padding, str) else all(p == 0 for p in padding)
        return no_pad or module.padding_mode != "zeros"
    return False

