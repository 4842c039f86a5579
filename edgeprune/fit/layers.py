"""Tables of the unpruned model's conv/linear layers that latency models price widths with.

:func:`layer_costs` (MACs and elements moved per layer, and which channel groups cut it: the
knapsack's roofline, :mod:`edgeprune.fit.search.knapsack`) and :func:`mac_slopes` (the share of
the MACs each group's channels carry: netadapt's prior) — each from the pruning graph and
forward passes, without pruning anything. Both take their MACs from the one MAC counter,
:func:`edgeprune.models.cost.layer_macs` (per input: :func:`macs_per_input`), and the depthwise
rule from :func:`edgeprune.pruning.engine.is_depthwise`, so the tables the knapsack combines
agree with each other and with what pruning does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from edgeprune.models.cost import layer_macs
from edgeprune.pruning import engine

__all__ = ["layer_costs", "mac_slopes", "macs_per_input"]


def macs_per_input(model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Multiply-accumulates per input of every counted layer, by name:
    :func:`edgeprune.models.cost.layer_macs` divided by the batch of ``example``."""
    batch = example.shape[0]
    return {name: macs / batch for name, macs in layer_macs(model, example).items()}


def mac_slopes(model: nn.Module, example: torch.Tensor,
               layer_macs: Mapping[str, float]) -> dict[str, float]:
    """Per group: the fraction of the model's conv/linear MACs (``layer_macs``, by layer name)
    saved per unit fraction of the group's channels removed — first order, from the group's
    members (a prune of MobileNetV2 takes ~30 s here)."""
    graph = engine.build_graph(model, example)
    total = sum(layer_macs.values()) or 1
    slopes: dict[str, float] = {}
    for group in engine.channel_groups(graph):
        cut: dict[str, float] = {}  # module -> fraction of its cut dimension in the group
        for member in group.members:
            size = _dim_size(member.module, member.dim)
            if member.name in layer_macs and size:
                cut[member.name] = max(cut.get(member.name, 0.0), len(member.idxs) / size)
        slopes[group.root] = sum(f * layer_macs[n] for n, f in cut.items()) / total
    return slopes


def layer_costs(model: nn.Module, example: torch.Tensor,
                groups: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per conv/linear layer of ``model``: MACs, input/output activation and weight elements
    per input, and the fraction of its input and output channels each group in ``groups`` (the
    roots the search prunes) cuts."""
    graph = engine.build_graph(model, example)
    sizes = _layer_sizes(model, example)
    cuts: dict[str, dict[str, dict[str, float]]] = {name: {"in": {}, "out": {}} for name in sizes}
    for group in engine.channel_groups(graph):
        if group.root not in groups:
            continue
        for member in group.members:
            size = _dim_size(member.module, member.dim)
            if member.name in cuts and size and not member.param:
                cut = cuts[member.name][member.dim]
                cut[group.root] = max(cut.get(group.root, 0.0), len(member.idxs) / size)
    return [{"name": name, **sizes[name], "cut_in": cuts[name]["in"],
             "cut_out": cuts[name]["out"]} for name in sizes]


def _layer_sizes(model: nn.Module, example: torch.Tensor) -> dict[str, dict[str, Any]]:
    """Per conv/linear layer, per input: MACs (:func:`macs_per_input`), input/output activation
    elements, weights, and whether it is depthwise (:func:`edgeprune.pruning.engine.is_depthwise`).
    """
    found: dict[str, dict[str, Any]] = {}
    hooks = []

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            batch = output.shape[0]
            found[name] = {"in_elems": inputs[0].numel() / batch,
                           "out_elems": output.numel() / batch,
                           "weights": module.weight.numel(),
                           "depthwise": engine.is_depthwise(module)}

        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in hooks:
            handle.remove()
    macs = macs_per_input(model, example)  # a second pass: the one MAC counter's own hooks
    return {name: {"macs": macs.get(name, 0.0), **sizes} for name, sizes in found.items()}


def _dim_size(module: nn.Module, dim: str) -> int:
    if isinstance(module, nn.Conv2d):
        return module.out_channels if dim == "out" else module.in_channels
    if isinstance(module, nn.Linear):
        return module.out_features if dim == "out" else module.in_features
    return 0
