"""Unstructured (weight-level) magnitude pruning and sparsity reports.

Individual weights of Conv and Linear layers are set to zero, either those below a magnitude
``threshold`` or the ``ratio`` of smallest-magnitude weights, ranked per layer (``scope="layer"``)
or across all selected layers at once (``scope="global"``). The tensors keep their shapes: this
gives *sparsity*, not speed. Dense runtimes (onnxruntime, TFLite, TensorRT without sparse kernels)
multiply the zeros like any other number, and the model file only shrinks once compressed.
Every :class:`SparsityReport` says so in its ``note``; structured pruning
(:mod:`edgeprune.pruning.prune`) is what makes an edge device faster.

Zeroing is done in place on the parameters by default. With ``leave_masks=True`` the pruning goes
through ``torch.nn.utils.prune`` instead (``weight_orig`` + ``weight_mask``), so training can
continue with the mask applied; layers that already carry such a mask always take this path and
the new mask is combined with the old one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from edgeprune.errors import ConfigError

__all__ = ["SPARSITY_NOTE", "LayerSparsity", "SparsityReport", "sparsity_report",
           "unstructured_prune"]

SPARSITY_NOTE = (
    "Unstructured sparsity: the zeroed weights keep their place in dense tensors, so dense "
    "runtimes (onnxruntime, TFLite, TensorRT without sparse kernels) run no faster and the model "
    "file does not shrink unless it is compressed (e.g. zipped) or stored in a sparse format. "
    "Use structured pruning to make an edge device faster."
)

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d, nn.Linear)


@dataclass(frozen=True)
class LayerSparsity:
    """Weight sparsity of one layer (its ``weight`` tensor only; biases are never zeroed)."""

    name: str
    params: int
    nonzero_params: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sparsity": self.sparsity}


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer and total sparsity after (or without) unstructured pruning.

    ``params``/``nonzero_params`` cover the selected layers' weights; ``model_params`` and
    ``model_nonzero_params`` cover every parameter of the model (biases, BN, unselected layers).
    """

    layers: tuple[LayerSparsity, ...]
    params: int
    nonzero_params: int
    model_params: int
    model_nonzero_params: int
    scope: str | None = None
    ratio: float | None = None
    threshold: float | None = None
    masks: bool = False
    note: str = SPARSITY_NOTE

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0

    @property
    def model_sparsity(self) -> float:
        return 1.0 - self.model_nonzero_params / self.model_params if self.model_params else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "ratio": self.ratio,
            "threshold": self.threshold,
            "masks": self.masks,
            "params": self.params,
            "nonzero_params": self.nonzero_params,
            "sparsity": self.sparsity,
            "model_params": self.model_params,
            "model_nonzero_params": self.model_nonzero_params,
            "model_sparsity": self.model_sparsity,
            "layers": [layer.to_dict() for layer in self.layers],
            "note": self.note,
        }


def unstructured_prune(
    model: nn.Module,
    *,
    ratio: float | None = None,
    threshold: float | None = None,
    scope: str = "layer",
    layers: Sequence[str] | None = None,
    leave_masks: bool = False,
) -> SparsityReport:
    """Zero the smallest-magnitude weights of ``model``'s Conv/Linear layers in place.

    Give exactly one of ``ratio`` (the fraction of weights zeroed: ``floor(ratio * n)`` per layer,
    or of all selected weights with ``scope="global"``; exactly that many, ties broken by position)
    or ``threshold`` (every weight with ``|w| < threshold``; ``scope`` makes no difference then).
    ``layers`` restricts pruning to those module names (default: every Conv and Linear layer).
    Weights that are zero already count towards the ratio: they are the smallest.
    """
    _check_args(ratio, threshold, scope)
    selected = _select_layers(model, layers)
    weights = {name: _effective_weight(module).detach() for name, module in selected}
    if threshold is not None:
        masks = {name: w.abs() >= threshold for name, w in weights.items()}
    elif scope == "layer":
        masks = {name: _keep_mask(w.abs().flatten(), ratio or 0.0).view_as(w)
                 for name, w in weights.items()}
    else:
        masks = _global_masks(weights, ratio or 0.0)
    with torch.no_grad():
        for name, module in selected:
            _apply_mask(module, masks[name], leave_masks=leave_masks)
    report = sparsity_report(model, layers=[name for name, _ in selected])
    return SparsityReport(
        layers=report.layers, params=report.params, nonzero_params=report.nonzero_params,
        model_params=report.model_params, model_nonzero_params=report.model_nonzero_params,
        scope=scope, ratio=ratio, threshold=threshold, masks=leave_masks)


def sparsity_report(model: nn.Module, *, layers: Iterable[str] | None = None) -> SparsityReport:
    """Measure sparsity without changing anything (masked layers count their masked weights)."""
    selected = _select_layers(model, list(layers) if layers is not None else None)
    rows = []
    for name, module in selected:
        w = _effective_weight(module)
        rows.append(LayerSparsity(name, w.numel(), int(torch.count_nonzero(w))))
    model_params = 0
    model_nonzero = 0
    for _, tensor in _model_tensors(model):
        model_params += tensor.numel()
        model_nonzero += int(torch.count_nonzero(tensor))
    return SparsityReport(
        layers=tuple(rows), params=sum(r.params for r in rows),
        nonzero_params=sum(r.nonzero_params for r in rows),
        model_params=model_params, model_nonzero_params=model_nonzero)


# --- helpers -----------------------------------------------------------------------------------


def _check_args(ratio: float | None, threshold: float | None, scope: str) -> None:
    if (ratio is None) == (threshold is None):
        raise ConfigError("give exactly one of ratio or threshold for unstructured pruning",
                          hint="e.g. ratio=0.5 (half the weights) or threshold=1e-3")
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise ConfigError(f"unstructured ratio {ratio} is outside [0, 1)",
                          hint="give the fraction of weights to zero, e.g. 0.5")
    if threshold is not None and threshold < 0:
        raise ConfigError(f"threshold {threshold} is negative",
                          hint="give a magnitude >= 0; weights with |w| below it are zeroed")
    if scope not in ("layer", "global"):
        close = difflib.get_close_matches(scope, ["layer", "global"], n=1)
        fix = f"did you mean {close[0]!r}?" if close else "use 'layer' or 'global'"
        raise ConfigError(f"unknown unstructured scope {scope!r}", hint=fix)


def _select_layers(model: nn.Module, layers: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    prunable = [(n, m) for n, m in model.named_modules() if isinstance(m, _PRUNABLE)]
    if layers is None:
        return prunable
    by_name = dict(prunable)
    all_names = dict(model.named_modules())
    chosen = []
    for name in layers:
        if name in by_name:
            chosen.append((name, by_name[name]))
            continue
        if name in all_names:
            raise ConfigError(f"layer {name!r} is a {type(all_names[name]).__name__}, "
                              "not a Conv or Linear layer",
                              hint="unstructured pruning zeroes Conv and Linear weights only")
        close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else "list names with model.named_modules()"
        raise ConfigError(f"no layer named {name!r} in the model", hint=hint)
    return chosen


def _effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight as the forward pass sees it (mask applied when torch's prune is attached)."""
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def _keep_mask(magnitudes: torch.Tensor, ratio: float) -> torch.Tensor:
    """True for weights kept: all but the ``floor(ratio * n)`` smallest (stable order for ties)."""
    k = int(ratio * magnitudes.numel())
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    if k > 0:
        order = torch.argsort(magnitudes, stable=True)
        keep[order[:k]] = False
    return keep


def _global_masks(weights: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    names = list(weights)
    flat = torch.cat([weights[n].abs().flatten().float() for n in names])
    keep = _keep_mask(flat, ratio)
    masks = {}
    start = 0
    for name in names:
        n = weights[name].numel()
        masks[name] = keep[start:start + n].view_as(weights[name])
        start += n
    return masks


def _apply_mask(module: nn.Module, keep: torch.Tensor, *, leave_masks: bool) -> None:
    already_masked = hasattr(module, "weight_mask")
    if leave_masks or already_masked:
        # custom_from_mask combines with an existing mask through a PruningContainer
        torch_prune.custom_from_mask(module, "weight", keep.to(module.weight.dtype))
    else:
        module.weight.mul_(keep.to(module.weight.dtype))


def _model_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter as the forward pass sees it: masked weights count through their masks."""
    out = []
    for mod_name, module in model.named_modules():
        for p_name, param in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if p_name.endswith("_orig") and hasattr(module, p_name[:-5] + "_mask"):
                mask = getattr(module, p_name[:-5] + "_mask")
                out.append((full[:-5], (param * mask).detach()))
            else:
                out.append((full, param.detach()))
    return out
