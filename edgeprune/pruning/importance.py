"""Importance criteria: which channels of a group to keep.

A criterion is a callable ``(group, ctx) -> scores`` returning one score per root channel of a
:class:`~edgeprune.pruning.engine.ChannelGroup` (higher = keep). Criteria are registered by name
(:func:`register_importance`) and built with :func:`get_importance`; a criterion that needs the
whole model first (gradients, activation statistics) does that work in ``prepare(model, groups,
ctx)``, which :func:`edgeprune.pruning.prune.prune` calls once per prune step, before scoring.

**Aggregation over a group.** A group couples several layers (the root conv, its BatchNorm, the
next conv's input slice, residual partners, ...). Each member that covers every root channel
gives a raw score vector; each vector is divided by its own mean (so a member with large weights
does not drown the others), and the group score is the **mean** of these normalised vectors.
Group scores therefore average 1 within every group, which is what lets global pruning compare
channels across groups without wiping out a whole layer.

Built-in criteria: ``l1``/``l2`` (filter norms, Torch-Pruning's group magnitude), ``bn_scale``
(|gamma|), ``taylor`` (first-order Taylor, needs labeled batches), ``activation`` (mean |output|
of the root over real calibration batches), ``fpgm`` (distance to the geometric median of the
layer's filters) and ``random`` (seeded baseline).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from edgeprune._registry import Registry
from edgeprune.errors import ConfigError, MissingDataError, UsageError

if TYPE_CHECKING:
    from edgeprune.pruning.engine import ChannelGroup, Member

__all__ = [
    "Importance",
    "ImportanceContext",
    "MissingDataError",
    "get_importance",
    "list_importances",
    "register_importance",
]

_EPS = 1e-12
_CONV = nn.modules.conv._ConvNd
_BN = nn.modules.batchnorm._BatchNorm

Batch = torch.Tensor | Sequence[torch.Tensor]



@dataclass
class ImportanceContext:
    """What data-driven criteria may use; ``notes`` collects what they want the user to know.

    ``calibration``: input batches (tensors, or ``(x, y)`` pairs whose ``x`` is used) — real data.
    ``labeled``: ``(x, y)`` batches for gradient-based criteria; ``loss_fn`` defaults to
    cross-entropy. ``seed`` drives ``random``; ``step`` is the prune step being scored.
    """

    calibration: Sequence[Batch] = ()
    labeled: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    seed: int = 0
    step: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


@runtime_checkable
class Importance(Protocol):
    """Per-root-channel scores for a group; higher means keep."""

    def __call__(self, group: ChannelGroup, ctx: ImportanceContext) -> torch.Tensor: ...


# --- registry ----------------------------------------------------------------------------------

Factory = Callable[..., Importance]

_REGISTRY: Registry[Factory] = Registry("importance criterion")  # name -> factory


def register_importance(name: str) -> Callable[[Factory], Factory]:
    """Register a criterion factory (a class or a function returning a callable) under ``name``.

    Registering a name twice replaces the first entry and warns, so a plugin can override a
    built-in on purpose but never by accident.
    """
    return _REGISTRY.register(name)


def get_importance(name: str, **kwargs: Any) -> Importance:
    """Build the criterion registered as ``name`` with its options (e.g. ``include_inputs``)."""
    factory = _REGISTRY.get(name)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad options for criterion {name!r}: {exc}",
                          hint="check the option names in the criterion's docstring") from None


def list_importances() -> list[str]:
    return _REGISTRY.names()


# --- per-member slices -------------------------------------------------------------------------


def _axis(module: nn.Module, dim: str) -> int:
    """The weight axis holding a member's channels (conv weights are (out, in/groups, ...))."""
    if isinstance(module, _CONV):
        transposed = bool(getattr(module, "transposed", False))
        depthwise = module.groups == module.out_channels > 1
        if dim == "out" or depthwise:
            return 1 if transposed else 0
        return 0 if transposed else 1
    if isinstance(module, nn.Linear):
        return 0 if dim == "out" else 1
    if isinstance(module, nn.LayerNorm):
        return module.weight.dim() - 1
    return 0


def _root_idxs(member: Member) -> tuple[int, ...]:
    root_idxs = getattr(member, "root_idxs", ())
    return tuple(root_idxs) if root_idxs else tuple(range(len(member.idxs)))


def _covers_group(member: Member, size: int) -> bool:
    """True when every root channel owns the same number of this member's channels."""
    if not member.idxs:
        return False
    counts = torch.bincount(torch.tensor(_root_idxs(member)), minlength=size)
    return len(counts) == size and bool((counts == counts[0]).all()) and int(counts[0]) > 0


def _per_channel(tensor: torch.Tensor, member: Member, axis: int,
                 reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``reduce`` over each of the member's channel slices of ``tensor`` (one value per idx).

    ``reduce`` maps a ``(channels, n)`` matrix to one row per channel; it runs on the whole
    tensor and the member's channels are picked afterwards (cheaper than copying slices).
    """
    index = torch.tensor(member.idxs, dtype=torch.long)
    moved = tensor.detach().movedim(axis, 0)
    return reduce(moved.reshape(moved.shape[0], -1).float()).index_select(0, index)


def _to_root(values: torch.Tensor, member: Member, size: int) -> torch.Tensor:
    """Sum per-idx values into per-root-channel values (a flatten consumer owns several idxs)."""
    out = torch.zeros(size, dtype=values.dtype)
    return out.index_add_(0, torch.tensor(_root_idxs(member), dtype=torch.long), values)


def _combine(scores: list[torch.Tensor], size: int) -> torch.Tensor | None:
    """Mean of the members' mean-normalised scores (see the module docstring)."""
    if not scores:
        return None
    stacked = torch.stack([s / (s.mean() + _EPS) for s in scores])
    return stacked.mean(dim=0)


def _is_weighted(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and isinstance(module, (_CONV, nn.Linear, _BN,
                                                                    nn.LayerNorm, nn.GroupNorm))


def _member_sums(member: Member, size: int, tensors: Callable[[nn.Module], list[torch.Tensor]],
                 elementwise: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Per root channel: sum of ``elementwise`` over the member's weight (and bias) slices."""
    module = member.module
    axis = _axis(module, member.dim)
    total = torch.zeros(size)
    for i, tensor in enumerate(tensors(module)):
        if i == 1 and (member.dim != "out" or tensor.dim() != 1):
            continue  # a bias belongs to output channels only
        per_idx = _per_channel(tensor, member, 0 if i == 1 else axis,
                               lambda x: elementwise(x).sum(dim=1))
        total += _to_root(per_idx, member, size)
    return total


# --- magnitude ---------------------------------------------------------------------------------


class Magnitude:
    """Lp norm of each channel's weights, aggregated over the group.

    "out" members contribute their filters (weight slice along the output axis, plus the bias
    for conv/linear layers) and norm layers their scale (gamma); with ``include_inputs`` (the
    default, Torch-Pruning's group magnitude) "in" members also contribute the input slice that
    disappears with the channel. ``include_inputs=False`` scores by the producing filters only.
    """

    def __init__(self, p: float = 2.0, *, include_inputs: bool = True) -> None:
        self.p = float(p)
        self.include_inputs = include_inputs

    def __call__(self, group: ChannelGroup, ctx: ImportanceContext) -> torch.Tensor:
        scores = []
        for member in group.members:
            if not _is_weighted(member.module) or not _covers_group(member, group.size):
                continue
            if member.dim == "in" and not self.include_inputs:
                continue
            scores.append(self.member_score(member, group.size))
        combined = _combine(scores, group.size)
        if combined is None:
            ctx.note(f"{group.root}: no weighted member to score; lowest indices go first")
            return torch.ones(group.size)
        return combined

    def member_score(self, member: Member, size: int) -> torch.Tensor:
        p = self.p
        if p == 1.0:
            return _member_sums(member, size, _weight_and_bias, torch.abs)
        power = torch.square if p == 2.0 else (lambda x: x.abs().pow(p))
        return _member_sums(member, size, _weight_and_bias, power).pow(1.0 / p)


def _weight_and_bias(module: nn.Module) -> list[torch.Tensor]:
    tensors = [module.weight]
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor) and not isinstance(module, (_BN, nn.LayerNorm,
                                                                  nn.GroupNorm)):
        tensors.append(bias)
    return tensors


@register_importance("l1")
def _l1(*, include_inputs: bool = True) -> Importance:
    return Magnitude(1.0, include_inputs=include_inputs)


@register_importance("l2")
def _l2(*, include_inputs: bool = True) -> Importance:
    return Magnitude(2.0, include_inputs=include_inputs)


@register_importance("bn_scale")
class BNScale:
    """|gamma| of the group's BatchNorm members (network slimming); l2 where a group has none."""

    def __init__(self) -> None:
        self._fallback = Magnitude(2.0)

    def __call__(self, group: ChannelGroup, ctx: ImportanceContext) -> torch.Tensor:
        scores = [
            _to_root(_per_channel(m.module.weight, m, 0, lambda x: x.abs().sum(dim=1)),
                     m, group.size)
            for m in group.members
            if isinstance(m.module, _BN) and m.module.affine and _covers_group(m, group.size)
        ]
        combined = _combine(scores, group.size)
        if combined is None:
            ctx.note(f"bn_scale: {group.root} has no BatchNorm; its channels were scored by l2")
            return self._fallback(group, ctx)
        return combined


# --- data-driven -------------------------------------------------------------------------------


def _inputs(batch: Batch) -> tuple[torch.Tensor, ...]:
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return (batch[0],)
    raise UsageError(f"a calibration batch must be a tensor or an (x, y) pair, got "
                     f"{type(batch).__name__}", hint="pass a list of input tensors")


class _EvalMode:
    """Run the model in eval mode (BN running stats untouched), restoring its mode afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.was_training = model.training

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


@register_importance("taylor")
class Taylor:
    """First-order Taylor: the loss change when a channel goes, ``sum |w * dL/dw|`` over its slice.

    ``prepare`` runs forward and backward once over ``ctx.labeled`` (gradients summed over the
    batches, BN in eval mode, the model's ``.grad`` fields left untouched); every group of the step
    is then scored from those gradients. The slices are the same as for the magnitude criteria.
    """

    def __init__(self, *, include_inputs: bool = True) -> None:
        self.include_inputs = include_inputs
        self._grads: dict[int, torch.Tensor] = {}

    def prepare(self, model: nn.Module, groups: Sequence[ChannelGroup],
                ctx: ImportanceContext) -> None:
        if not ctx.labeled:
            raise MissingDataError(
                "the taylor criterion needs labeled batches to compute gradients",
                hint="pass labeled=[(x, y), ...] (a few batches of real data) or choose l2")
        loss_fn = ctx.loss_fn or nn.functional.cross_entropy
        params = list(model.parameters())
        frozen = [p for p in params if not p.requires_grad]
        sums = [torch.zeros_like(p) for p in params]
        try:
            for p in frozen:  # a frozen layer still has a Taylor score
                p.requires_grad_(True)
            with _EvalMode(model):
                for x, y in ctx.labeled:
                    loss = loss_fn(model(x), y)
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                    for total, grad in zip(sums, grads, strict=True):
                        if grad is not None:
                            total += grad.detach()
        finally:
            for p in frozen:
                p.requires_grad_(False)
        self._grads = {id(p): g for p, g in zip(params, sums, strict=True)}

    def __call__(self, group: ChannelGroup, ctx: ImportanceContext) -> torch.Tensor:
        if not self._grads:
            raise MissingDataError("taylor scores need gradients: prepare() was not called",
                                   hint="score through edgeprune.pruning.prune.prune, or call "
                                   "prepare(model, groups, ctx) first")
        scores = []
        for member in group.members:
            if not _is_weighted(member.module) or not _covers_group(member, group.size):
                continue
            if member.dim == "in" and not self.include_inputs:
                continue
            scores.append(_member_sums(member, group.size, self._products, lambda x: x.abs()))
        combined = _combine(scores, group.size)
        return combined if combined is not None else torch.ones(group.size)

    def _products(self, module: nn.Module) -> list[torch.Tensor]:
        out = []
        for tensor in _weight_and_bias(module):
            grad = self._grads.get(id(tensor))
            if grad is None or grad.shape != tensor.shape:
                raise MissingDataError("taylor gradients are stale (the model changed since "
                                       "prepare())", hint="call prepare() again after pruning")
            out.append(tensor.detach() * grad)
        return out


@register_importance("activation")
class Activation:
    """Mean absolute activation of each root channel over real calibration batches.

    Forward hooks on the root modules record ``mean |output|`` per output channel (over batch and
    spatial positions) while ``ctx.calibration`` runs through the model in eval mode — the rule
    of the documents' ResNet-18 example. With ``site="bn"`` the statistic is taken after the
    group's first BatchNorm instead (normalised outputs, closer to what the next layer sees).
    Without calibration data it refuses: scores from random noise would rank channels by noise.
    """

    def __init__(self, *, site: str = "root") -> None:
        if site not in ("root", "bn"):
            raise ConfigError(f"activation site {site!r} is not 'root' or 'bn'",
                              hint="use site='root' (the conv itself) or site='bn'")
        self.site = site
        self._stats: dict[str, torch.Tensor] = {}

    def prepare(self, model: nn.Module, groups: Sequence[ChannelGroup],
                ctx: ImportanceContext) -> None:
        if not ctx.calibration:
            raise MissingDataError(
                "the activation criterion needs calibration batches of real inputs",
                hint="pass calibration=[x, ...] (e.g. a few batches of your validation set); "
                "random noise is never used in their place")
        sites = {g.root: self._site(g) for g in groups}
        modules = dict(model.named_modules())
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        handles = []

        def hook_for(root: str) -> Callable[..., None]:
            def hook(module: nn.Module, _args: Any, output: torch.Tensor) -> None:
                # channels are dim 1 for conv/norm outputs (N, C, ...), the last dim for linear
                channel_dim = output.dim() - 1 if isinstance(module, nn.Linear) else 1
                value = output.detach().abs().float().movedim(channel_dim, 0)
                per_channel = value.reshape(value.shape[0], -1)
                if root in sums:
                    sums[root] += per_channel.sum(dim=1)
                else:
                    sums[root] = per_channel.sum(dim=1)
                counts[root] = counts.get(root, 0) + per_channel.shape[1]
            return hook

        for root, site in sites.items():
            handles.append(modules[site].register_forward_hook(hook_for(root)))
        try:
            with _EvalMode(model), torch.no_grad():
                for batch in ctx.calibration:
                    model(*_inputs(batch))
        finally:
            for handle in handles:
                handle.remove()
        self._stats = {root: sums[root] / counts[root] for root in sums}

    def _site(self, group: ChannelGroup) -> str:
        if self.site == "bn":
            for member in group.members:
                if member.dim == "out" and isinstance(member.module, _BN):
                    return member.name
        return group.root

    def __call__(self, group: ChannelGroup, ctx: ImportanceContext) -> torch.Tensor:
        stats = self._stats.get(group.root)
        if stats is None:
            raise MissingDataError(f"no activation statistics for {group.root}",
                                   hint="call prepare(model, groups, ctx) with calibration data "
                                   "(edgeprune.pruning.prune.prune does this)")
        if stats.numel() != group.size:
            raise MissingDataError(f"activation statistics for {group.root} are stale",
                                   hint="call prepare() again after pruning")
        return stats.clone()


# --- others ------------------------------------------------------------------------------------


@register_importance("fpgm")
class FPGM:
    """Filter pruning via the geometric median (He et al., 2019): redundant filters go.

    Each "out" conv/linear member scores a filter by its summed L2 distance to the layer's other
    filters; filters close to the geometric median are the most replaceable, so they score low.
    """

    def __call__(self, group: ChannelGroup, ctx: ImportanceContext) -> torch.Tensor:
        scores = []
        for member in group.members:
            module = member.module
            if member.dim != "out" or not isinstance(module, (_CONV, nn.Linear)):
                continue
            if not _covers_group(member, group.size):
                continue
            rows = _per_channel(module.weight, member, _axis(module, "out"), lambda x: x)
            per_idx = torch.cdist(rows, rows).sum(dim=1)
            scores.append(_to_root(per_idx, member, group.size))
        combined = _combine(scores, group.size)
        return combined if combined is not None else Magnitude(2.0)(group, ctx)


@register_importance("random")
class RandomImportance:
    """Uniform random scores: the baseline every real criterion should beat.

    Seeded by ``ctx.seed``, the root's name and the step, so a run is reproducible and groups of
    the same size do not get the same permutation.
    """

    def __call__(self, group: ChannelGroup, ctx: ImportanceContext) -> torch.Tensor:
        seed = zlib.crc32(f"{ctx.seed}:{ctx.step}:{group.root}".encode())
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(group.size, generator=generator)
