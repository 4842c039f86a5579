"""Masks in: turn masked weights into plain ones, so a model's zeros are real zeros.

Three kinds of mask reach edgeprune:

- ``torch.nn.utils.prune`` reparametrisations on a live model (``x_orig`` + ``x_mask`` and a
  forward pre-hook): :func:`apply_torch_prune_masks` bakes them into plain parameters;
- the same pairs in a saved state dict: :func:`load_masked_state_dict`;
- edgeprune's own masks, ``dict[str, torch.Tensor]``: module name → boolean *keep* mask over
  that module's output channels (conv/linear filters, or a BatchNorm's channels). ``False``
  switches the channel off: the filter and its bias (or the norm's scale and shift) become
  zero (:func:`apply_masks`).

:func:`masked_copy` does all of it to a copy, which is where
:mod:`edgeprune.pruning.dead_channels` and :mod:`edgeprune.pruning.materialize` start.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from edgeprune.errors import CheckpointError, UsageError

__all__ = [
    "apply_masks",
    "apply_torch_prune_masks",
    "load_masked_state_dict",
    "masked_copy",
]

_CONV = nn.modules.conv._ConvNd
_CHANNELWISE_NORM = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


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



def masked_copy(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """A copy of ``model`` in eval mode with its ``torch.nn.utils.prune`` masks baked in and
    ``masks`` (edgeprune keep-masks) applied; ``model`` is left as it is."""
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

