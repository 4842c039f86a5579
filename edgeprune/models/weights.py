"""Weights: read a state dict safely and load it into a model.

Weights (``--weights``) are a state dict in a ``.safetensors`` file or a PyTorch file read with
``torch.load(weights_only=True)``: a checkpoint that would need arbitrary unpickling is refused,
never executed. A state dict saved from a model under ``torch.nn.utils.prune`` (``x_orig`` and
``x_mask`` pairs) is folded into plain tensors first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeprune.errors import CheckpointError, UnsafeCheckpointError


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a state dict without executing code; unwraps ``{"state_dict": ...}`` checkpoints."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist", hint="check the path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise CheckpointError(f"cannot read safetensors file {str(path)!r}: {exc}",
                                  hint="is the file complete?") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{str(path)!r} needs arbitrary unpickling to load ({_unpickling_reason(exc)}); "
            "refused without running it",
            hint="save a plain state dict (torch.save(model.state_dict(), f)) or safetensors",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights file {str(path)!r}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                              hint="is it a PyTorch state dict or safetensors file?") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{str(path)!r} does not hold a state dict of tensors",
                              hint="save model.state_dict(), not the model object")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _unpickling_reason(exc: BaseException) -> str:
    """Why torch refused a pickle, as plain text: the global it needs, else its first line."""
    text = _ANSI.sub("", str(exc))
    found = _GLOBAL.search(text)
    if found:
        return f"it references {found.group(1)}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return " ".join(first.split()) or type(exc).__name__


def fold_mask_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """Fold ``torch.nn.utils.prune`` masks (``x_orig`` × ``x_mask``) of a *state dict* into plain
    ``x`` tensors (not to be confused with ``pruning.materialize.apply_masks``, which zeroes a
    live model's channels)."""
    out = {k: v for k, v in state.items() if not k.endswith(("_orig", "_mask"))}
    for key, orig in state.items():
        if key.endswith("_orig"):
            base = key[: -len("_orig")]
            mask = state.get(base + "_mask")
            out[base] = orig * mask if mask is not None else orig
    return out


def load_weights(model: Any, path: str | Path) -> None:
    """Load a state dict file into ``model``; shapes and names must match (one-line error)."""
    state = fold_mask_state(read_state_dict(path))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {k}: file "
                         f"{tuple(state[k].shape)} vs model {tuple(own[k].shape)})")
        raise CheckpointError(
            f"weights {str(path)!r} do not fit the model: " + "; ".join(parts),
            hint="check that --model names the architecture (and num_classes) the weights were "
            "trained with; a pruned model is loaded from its directory instead",
        )
    model.load_state_dict(state, strict=True)
