"""Fake → real: turn a masked or zero-filter model into a physically smaller one.

Masks and zeroed filters do not shrink a model. :func:`materialize` finds the channels that
carry no information, removes them through the pruning engine (so every dependent layer — the
next conv's inputs, BatchNorm, residual partners, downsample paths, concat consumers, depthwise
convs, the classifier's inputs — stays consistent) and checks the outputs did not change.

Which channels can go. For each channel group (see :mod:`edgeprune.engine`):

1. *Structurally data-independent*: every producer that adds into the group's channel (a
   non-depthwise conv or linear "out" member) has a zero filter for it, or its output is killed
   before any branch by a depthwise conv with a zero filter or a norm with zero scale. Only then
   can the channel's value not depend on the input. Producers that only *multiply* the channel
   (squeeze-excitation scales) do not count, but then only a dead (zero) channel may go.
2. *Measured*: the value every consumer (an "in" member) receives on that channel is recorded on
   the calibration inputs — after whatever BatchNorm, activation (ReLU, ReLU6, Hardswish, SiLU,
   ...), pooling or residual add lies between, because it is the real forward pass that is
   observed. All zero: the channel is **dead** and removing it is exact. One constant value:
   it is a **constant channel**. Anything else (a constant through a zero-padded depthwise conv
   varies at the borders; squeeze-excitation rescales it per image) is kept, except under
   ``"remove-and-report"``.
3. A constant ``c`` is *folded* into a consumer's bias (``bias += W[:, i] · c``; for a
   bias-free conv followed by a BatchNorm, into the norm's running mean) where that is exact:
   a linear layer, a conv without zero padding (any kernel) or with constant-preserving
   padding. A zero-padded conv (3×3 with padding 1) sees ``0`` instead of ``c`` at the borders,
   so folding there is inexact. ``constant_channels`` decides: ``"fold"`` (default) folds where
   every consumer is exact and keeps the channel otherwise; ``"keep"`` never removes constant
   channels; ``"remove-and-report"`` also removes the inexact and the data-independent but
   varying ones (folding the interior value where there is one) and reports the deviation each
   removal caused, measured on the calibration inputs.

In a residual group a channel goes only when it is dead in every coupled producer: one live
branch makes it vary, so it stays. Groups with a LayerNorm/GroupNorm (which normalise across
channels, so removing any channel changes the others) are left alone.

edgeprune's own masks are ``dict[str, torch.Tensor]``: module name → boolean *keep* mask over
that module's output channels (conv/linear filters, or a BatchNorm's channels). ``False``
switches the channel off: the filter and its bias (or the norm's scale and shift) become zero.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from edgeprune.errors import CheckpointError, ParityError, UsageError
from edgeprune.models.cost import count_macs, count_params
from edgeprune.pruning import engine

__all__ = [
    "CONSTANT_POLICIES",
    "GroupChannels",
    "MaterializeResult",
    "apply_masks",
    "apply_torch_prune_masks",
    "detect_dead_channels",
    "load_masked_state_dict",
    "materialize",
]

CONSTANT_POLICIES = ("fold", "keep", "remove-and-report")

Inputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]
_CONV = nn.modules.conv._ConvNd
_CHANNELWISE_NORM = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_MIXING_NORM = (nn.LayerNorm, nn.GroupNorm)


# --- results -----------------------------------------------------------------------------------


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


# --- masks -------------------------------------------------------------------------------------


def apply_torch_prune_masks(model: nn.Module) -> list[str]:
    """Bake ``torch.nn.utils.prune`` reparametrisations into plain parameters, in place.

    Every ``x_orig`` + ``x_mask`` pair (with its forward pre-hook) becomes a plain ``x`` equal
    to ``x_orig * x_mask``. Returns ``"module.x"`` for each parameter converted.
    """
    converted: list[str] = []
    for name, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                param = hook._tensor_name
                torch_prune.remove(module, param)
                converted.append(f"{name}.{param}" if name else param)
    return converted


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Switch off the channels edgeprune ``masks`` mark ``False``, in place (see module doc)."""
    for name, mask in masks.items():
        try:
            module = model.get_submodule(name)
        except AttributeError as exc:
            raise UsageError(
                f"mask names {name!r}, which is not a layer of the model",
                hint="key masks by qualified module names (model.named_modules())",
            ) from exc
        keep = torch.as_tensor(mask).to(torch.bool).flatten()
        width = _out_width(module, name)
        if keep.numel() != width:
            raise UsageError(
                f"mask for {name!r} has {keep.numel()} entries, the layer has {width} channels",
                hint="give one boolean per output channel",
            )
        off = ~keep
        with torch.no_grad():
            for attr in ("weight", "bias"):
                tensor = getattr(module, attr, None)
                if isinstance(tensor, torch.Tensor):
                    tensor[off] = 0


def _out_width(module: nn.Module, name: str) -> int:
    if isinstance(module, _CONV):
        return int(module.out_channels)
    if isinstance(module, nn.Linear):
        return int(module.out_features)
    if isinstance(module, _CHANNELWISE_NORM) and getattr(module, "affine", False):
        return int(module.num_features)
    raise UsageError(
        f"mask for {name!r}: {type(module).__name__} has no output channels to mask",
        hint="mask conv, linear or affine BatchNorm layers",
    )


def load_masked_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a state dict that may hold ``x_orig``/``x_mask`` pairs, applying each mask.

    Such state dicts come from models saved while ``torch.nn.utils.prune`` was active. The
    model gets plain parameters (``x = x_orig * x_mask``); returns the model.
    """
    plain = {k: v for k, v in state_dict.items() if not k.endswith(("_orig", "_mask"))}
    for key, value in state_dict.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" not in state_dict:
            plain[key] = value  # not a prune pair: let load_state_dict judge it
        if not key.endswith("_orig"):
            continue
        base = key[: -len("_orig")]
        mask = state_dict.get(base + "_mask")
        if mask is None:
            raise CheckpointError(
                f"{key!r} has no matching {base + '_mask'!r}",
                hint="save the state dict with both halves of each torch.nn.utils.prune pair",
            )
        plain[base] = value * mask.to(value.dtype)
    try:
        model.load_state_dict(plain, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1] if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(
            f"masked state dict does not fit the model: {first.strip()}",
            hint="build the architecture the weights were trained with",
        ) from exc
    return model


# --- analysis ----------------------------------------------------------------------------------


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
    work = _prepared_copy(model, masks)
    graph = engine.build_graph(work, example_inputs)
    groups = engine.channel_groups(graph)
    found, _ = _analyse(work, graph, groups, _batches(calibration, example_inputs))
    return found


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


def _analyse(
    model: nn.Module,
    graph: engine.Graph,
    groups: list[engine.ChannelGroup],
    batches: list[Inputs],
) -> tuple[dict[str, GroupChannels], dict[str, _Probe]]:
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
    return found, probes


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
    gates = [m for m in producers if _is_gate(graph, m)]
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


def _is_gate(graph: engine.Graph, producer: engine.Member) -> bool:
    """True when the producer's single path (through parameter-free ops) ends in a multiply."""
    dg = graph.dg
    node = dg.module2node.get(producer.module)
    while node is not None and len(node.outputs) == 1:
        node = node.outputs[0]
        if len(node.inputs) > 1:
            return "mul" in str(getattr(node.module, "_grad_fn", "")).lower()
        if dg._module2name.get(node.module) is not None:
            return False  # a real layer on the way: not a plain gate
    return False


def _mixes_channels(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, _CONV) and not engine._is_depthwise(module)


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
    dg = graph.dg
    node = dg.module2node.get(producer.module)
    while node is not None and len(node.outputs) == 1:
        node = node.outputs[0]
        if len(node.inputs) != 1:
            break  # an add / concat / mul: other branches join here
        module = node.module
        name = dg._module2name.get(module)
        if name in out_members:
            member = out_members[name]
            if not (engine._is_depthwise(module) or isinstance(module, _CHANNELWISE_NORM)):
                break
            killed |= _zero_channels(module, member.idxs)
            continue
        if any(True for _ in module.parameters(recurse=False)) or isinstance(
            module, (_CONV, nn.Linear)
        ):
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
        for batch in batches:
            _run(model, batch)
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
        elif all(_fold_exact(m.module) for m, _ in values):
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


def _fold_exact(module: nn.Module) -> bool:
    """True when a constant input channel adds exactly ``W[:, i] · c`` to every output."""
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, _CONV) and not module.transposed:
        padding = module.padding
        no_pad = padding == "valid" if isinstance(padding, str) else all(p == 0 for p in padding)
        return no_pad or module.padding_mode != "zeros"
    return False


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
        bn = _batchnorm_after(graph, module)
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


def _batchnorm_after(graph: engine.Graph, module: nn.Module) -> nn.Module | None:
    node = graph.dg.module2node.get(module)
    if node is None or len(node.outputs) != 1:
        return None
    after = node.outputs[0]
    bn = after.module
    if (
        isinstance(bn, nn.modules.batchnorm._BatchNorm)
        and len(after.inputs) == 1
        and bn.running_mean is not None
    ):
        return bn
    return None


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
    work = _prepared_copy(model, masks)
    batches = _batches(calibration, example_inputs)
    reference = [_run(work, b) for b in batches]
    reference64 = _run_double(work, batches)
    params_before = count_params(work)
    macs_before = count_macs(work, example_inputs)

    graph = engine.build_graph(work, example_inputs)
    groups = engine.channel_groups(graph)
    found, probes = _analyse(work, graph, groups, batches)
    notes = _notes_before(graph, found, constant_channels, calibration is None)

    plan = _plan(groups, found, constant_channels, notes)
    constants = _constants(groups, plan, found, probes)
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
    found: Mapping[str, GroupChannels],
    probes: Mapping[str, _Probe],
) -> dict[str, dict[int, dict[str, float]]]:
    """Root → root channel → consumer name → the constant it receives, from the probes.

    Read before anything is pruned: pruning one group shifts the concat offsets at which
    *other* groups' channels enter their consumers, so probe indices go stale; root channel
    numbers and consumer names do not.
    """
    by_root = {g.root: g for g in groups}
    table: dict[str, dict[int, dict[str, float]]] = {}
    for root, (channels, _) in plan.items():
        consumers = [m for m in by_root[root].members if m.dim == "in"]
        table[root] = {
            k: {m.name: v for m, v in _consumer_values(consumers, probes, k) or []}
            for k in channels
            if k not in found[root].dead
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


# --- helpers -----------------------------------------------------------------------------------


def _prepared_copy(model: nn.Module, masks: Mapping[str, torch.Tensor] | None) -> nn.Module:
    work = _deepcopy(model)
    apply_torch_prune_masks(work)
    if masks:
        apply_masks(work, masks)
    work.eval()
    return work


def _deepcopy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also copes with active ``torch.nn.utils.prune`` hooks.

    Their computed ``x = x_orig * x_mask`` attribute is a non-leaf tensor, which deepcopy
    refuses; it is swapped for a detached copy during the copy (the hook recomputes it on
    every forward anyway) and put back afterwards.
    """
    swapped: list[tuple[nn.Module, str, torch.Tensor]] = []
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                name = hook._tensor_name
                value = getattr(module, name, None)
                if isinstance(value, torch.Tensor) and not value.is_leaf:
                    swapped.append((module, name, value))
                    setattr(module, name, value.detach())
    try:
        return copy.deepcopy(model)
    finally:
        for module, name, value in swapped:
            setattr(module, name, value)


def _batches(calibration: Inputs | Sequence[Inputs] | None, example_inputs: Inputs) -> list[Inputs]:
    if calibration is None:
        return [example_inputs]
    if isinstance(calibration, torch.Tensor):
        return [calibration]
    batches = list(calibration)
    if not batches:
        raise UsageError("calibration is empty", hint="pass at least one batch of real inputs")
    return batches


def _run(model: nn.Module, inputs: Inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(inputs) if isinstance(inputs, torch.Tensor) else model(*inputs)
    return engine._flatten_tensors(out)


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
