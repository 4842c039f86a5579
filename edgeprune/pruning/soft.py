"""Soft Filter Pruning (He et al. 2018): zero filters while training, remove them at the end.

After every epoch the lowest-L2 filters of each channel group are set to zero but keep training
(they get gradients and may grow back); after the last epoch the lowest filters are zeroed once
more and only those channels are removed for good through
:func:`edgeprune.pruning.materialize.materialize`, which checks the outputs did not change: a
channel whose bias (or BatchNorm shift) leaves it dead is removed, a constant one is folded into
the next layer where that is exact; only groups with a constant that cannot be folded (a
zero-padded conv follows) get their bias and BatchNorm zeroed before the cut
(:meth:`SoftFilterPruning.remove_zeroed`). Coupled layers (residual partners, downsample paths)
are zeroed together, per channel group. BatchNorm is left alone while training: a zero scale
would stop the gradient to the filter and no zeroed filter could ever recover.

The ``soft`` schedule of :mod:`edgeprune.pruning.schedules` trains with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.pruning import engine
from edgeprune.pruning.materialize import MaterializeResult, materialize
from edgeprune.pruning.prune import PruneConfig, group_ratios, kept_channels

__all__ = ["SoftCut", "SoftFilterPruning"]

Inputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]
_CONV = nn.modules.conv._ConvNd
_BN = nn.modules.batchnorm._BatchNorm


@dataclass(frozen=True)
class SoftCut:
    """The end of soft filter pruning: the last zeroed channels and the model without them."""

    result: MaterializeResult
    zeroed: Mapping[str, list[int]]  # root → root channels zeroed by the last cut
    biases_zeroed: tuple[str, ...]  # roots whose biases and BatchNorm were zeroed before removal

    @property
    def expected(self) -> dict[str, int]:
        """Root → how many channels the last cut zeroed (what should have been removed)."""
        return {root: len(ch) for root, ch in self.zeroed.items() if ch}


class SoftFilterPruning:
    """Zero the lowest-L2 filters of each channel group at a rate, keep them trainable.

    Build it on the model to be trained; it is the
    :class:`~edgeprune.training.finetune.EpochHook` that ``finetune`` calls after every epoch.
    Scores are the L2 norm of a channel's filters over all the group's producing conv/linear
    layers (so residual partners are scored and zeroed together). Between epochs only filter
    weights are zeroed (see :func:`_zero_member`); :meth:`finalize` zeroes once more, biases and
    BatchNorm scale/shift included, so the selected channels are dead and removing them is exact.
    """

    def __init__(self, model: nn.Module, example_inputs: Inputs, config: PruneConfig) -> None:
        if config.scope != "uniform":
            raise UsageError("soft filter pruning zeroes filters per layer (scope 'uniform')",
                             hint="set scope = 'uniform' in the prune config")
        graph = engine.build_graph(model, example_inputs, ignored_layers=config.ignored_layers)
        ratios = group_ratios(model, graph, config)
        self.config = config
        self.groups = [g for g in engine.channel_groups(graph) if ratios.get(g.root, 0) > 0]
        self.n_zero = {g.root: g.size - kept_channels(g.size, ratios[g.root], config)
                       for g in self.groups}
        self.zeroed: dict[str, list[int]] = {}

    def __call__(self, epoch: int, model: nn.Module) -> bool:
        self.zero(final=False)
        return False

    def state(self) -> dict[str, Any]:
        return {"zeroed": self.zeroed}

    def restore(self, state: Mapping[str, Any], model: nn.Module) -> None:
        self.zeroed = {k: list(v) for k, v in state.get("zeroed", {}).items()}

    def zero(self, *, final: bool) -> dict[str, list[int]]:
        """Zero the lowest-L2 channels of every group; returns root → channels zeroed."""
        with torch.no_grad():
            for group in self.groups:
                n = self.n_zero[group.root]
                if n <= 0:
                    continue
                scores = self.scores(group)
                chosen = sorted(int(i) for i in torch.argsort(scores, stable=True)[:n])
                for member in group.members:
                    _zero_member(member, chosen, final=final)
                self.zeroed[group.root] = chosen
        return dict(self.zeroed)

    def finalize(self) -> dict[str, list[int]]:
        return self.zero(final=True)

    def remove_zeroed(self, model: nn.Module, example_inputs: Inputs,
                      calibration: Sequence[Any]) -> SoftCut:
        """Make the last cut on the trained ``model`` (the one this was built on) and return a
        physically smaller copy without the zeroed channels; ``model`` keeps its zeros.

        A zeroed filter's channel still carries its bias / BatchNorm shift: dead after a ReLU
        when negative (removed exactly), else a constant that materialize folds into the next
        layer where that is exact — the trained model is kept as it was validated. Only groups
        whose constants cannot be folded (a zero-padded conv follows) get their bias and
        BatchNorm zeroed too (the final cut of :meth:`finalize`), then go.
        """
        zeroed = self.zero(final=False)  # the last cut, scored on the trained weights
        expected = {root: len(ch) for root, ch in zeroed.items() if ch}
        result = materialize(model, example_inputs, calibration=calibration)
        short = sorted(k for k, n in expected.items() if result.removed.get(k, 0) < n)
        if short:
            with torch.no_grad():
                for group in self.groups:
                    if group.root in short:
                        for member in group.members:
                            _zero_member(member, zeroed[group.root], final=True)
            result = materialize(model, example_inputs, calibration=calibration)
        return SoftCut(result=result, zeroed=zeroed, biases_zeroed=tuple(short))

    @staticmethod
    def scores(group: engine.ChannelGroup) -> torch.Tensor:
        total = torch.zeros(group.size)
        for member, rows in group.weights():
            if member.dim == "out" and isinstance(member.module, (_CONV, nn.Linear)):
                total += rows.float().pow(2).sum(dim=1)
                bias = getattr(member.module, "bias", None)
                if isinstance(bias, torch.Tensor):
                    picked = bias.detach().index_select(0, torch.tensor(member.idxs))
                    total.index_add_(0, torch.tensor(member.root_idxs), picked.float().pow(2))
        return total.sqrt()



def _zero_member(member: engine.Member, channels: Sequence[int], *, final: bool) -> None:
    """Zero the member's filters of ``channels``; ``final`` also zeroes biases and BN affine.

    While training only the filter weights are zeroed: a zeroed filter whose channel still
    carries its bias (or BatchNorm shift) passes gradients through the activation and can grow
    back. Zeroing the bias too would leave it at a ReLU's zero point with no gradient at all.
    """
    module = member.module
    if member.dim != "out":
        return
    wanted = set(channels)
    idxs = [i for i, r in zip(member.idxs, member.root_idxs, strict=True) if r in wanted]
    if not idxs:
        return
    index = torch.tensor(idxs, dtype=torch.long)
    if isinstance(module, (_CONV, nn.Linear)):
        transposed = bool(getattr(module, "transposed", False))
        module.weight.index_fill_(1 if transposed else 0, index, 0.0)
        if final and module.bias is not None:
            module.bias.index_fill_(0, index, 0.0)
    elif final and isinstance(module, _BN) and module.affine:
        module.weight.index_fill_(0, index, 0.0)
        module.bias.index_fill_(0, index, 0.0)
