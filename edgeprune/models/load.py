"""Any model spec → a model with its weights: the one entry point (``edgeprune.load_model``).

A pruned directory goes to :mod:`edgeprune.models.pruned_dir`, every other spec is built by
:mod:`edgeprune.models.build`; ``weights`` are loaded safely by :mod:`edgeprune.models.weights`.
Imports run one way: ``load`` → ``pruned_dir`` → ``build`` → ``weights``/``spec``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.models import builtin, pruned_dir
from edgeprune.models.build import build_model
from edgeprune.models.spec import ModelSpec, parse_model_spec
from edgeprune.models.weights import load_weights

__all__ = ["default_input_shape", "load_model"]


def load_model(spec: str | ModelSpec, *, weights: str | Path | None = None) -> Any:
    """Build the model a spec names and load ``weights`` into it (safely). Returns ``nn.Module``."""
    parsed = parse_model_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind == "pruned":
        model = pruned_dir.load(parsed.target)
    else:
        model = build_model(parsed, shipped_weights=weights is None)
    if weights is not None:
        load_weights(model, weights)
    model.eval()
    model.edgeprune_spec = parsed.text  # names the model in later messages (e.g. a teacher's)
    return model


def default_input_shape(spec: str | ModelSpec | Any) -> tuple[int, ...] | None:
    """The input shape a model expects (batch 1), when the spec or model says so."""
    if isinstance(spec, (str, ModelSpec)):
        parsed = parse_model_spec(spec) if isinstance(spec, str) else spec
        if parsed.kind == "builtin":
            entry = builtin.get(parsed.target)
            return entry.input_shape if entry else None
        if parsed.kind == "torchvision":
            return (1, 3, 299, 299) if parsed.target == "inception_v3" else (1, 3, 224, 224)
        if parsed.kind == "pruned":
            return pruned_dir.read_manifest(parsed.target).input_shape
        return None
    shape = getattr(spec, "edgeprune_input_shape", None) or getattr(spec, "input_shape", None)
    if isinstance(shape, (tuple, list)) and all(isinstance(d, int) for d in shape):
        return tuple(shape)
    return None
