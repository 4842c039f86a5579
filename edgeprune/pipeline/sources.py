"""Spec -> model + data: the one way every job turns a model spec and a data spec into objects.

A :class:`ModelSource` (spec, weights, input shape) is loaded once; its input shape comes from
the flag, else the model, else the data's own images; a pruned directory brings its base spec and
pruning history along.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeprune.errors import UsageError

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ModelSource:
    """A model spec (or pruned dir) plus weights, resolved once."""

    spec: str
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None


@dataclass
class Loaded:
    model: Any
    base_spec: str  # the unpruned architecture's spec (a pruned dir's manifest spec)
    input_shape: tuple[int, ...]
    history: list[Any] = field(default_factory=list)


def load_source(source: ModelSource,
                shape_from: Callable[[], Sequence[int]] | None = None) -> Loaded:
    """Load the model; its input shape comes from the spec's flag, else the model, else
    ``shape_from()`` (e.g. the data's own image shape), else it is an error naming the flag."""
    from edgeprune.models import pruned_dir
    from edgeprune.models.load import default_input_shape, load_model

    if source.weights and pruned_dir.is_pruned_dir(source.spec):
        raise UsageError("--weights cannot be combined with a pruned model directory",
                         hint="the directory holds its own weights; drop --weights")
    model = load_model(source.spec, weights=source.weights)
    base_spec, history = source.spec, []
    if pruned_dir.is_pruned_dir(source.spec):
        manifest = pruned_dir.read_manifest(source.spec)
        base_spec, history = manifest.spec, list(manifest.history)
    shape = (source.input_shape or default_input_shape(model)
             or default_input_shape(source.spec))
    if shape is None and shape_from is not None:
        shape = tuple(shape_from())
    if shape is None:
        raise UsageError(f"cannot tell the input shape of {source.spec!r}",
                         hint="pass --input-shape [N,]C,H,W (e.g. 3,224,224)")
    return Loaded(model, base_spec, with_batch(shape), history)


def with_batch(shape: Sequence[int]) -> tuple[int, ...]:
    """An input shape with its batch: ``C,H,W`` (one image) becomes ``1,C,H,W``."""
    shape = tuple(int(d) for d in shape)
    return (1, *shape) if len(shape) == 3 else shape


def load_with_data(source: ModelSource, data: str | None, batch_size: int, seed: int,
                    progress: Progress | None) -> tuple[Loaded, Any]:
    """The model and its data (None without ``data``); when neither --input-shape nor the model
    tells the input shape, the data's own image shape does (batch 1), as ``edgeprune evaluate``
    does, and that data is used as it was loaded."""
    from edgeprune.data import load_data

    native: list[Any] = []

    def from_data() -> tuple[int, ...]:
        native.append(load_data(data, batch_size=batch_size, seed=seed, progress=progress))
        return (1, *native[0].input_shape)

    loaded = load_source(source, from_data if data is not None else None)
    if native:
        return loaded, native[0]
    return loaded, load_bundle(data, loaded.input_shape, batch_size, seed, progress)


def load_bundle(data_spec: str | None, shape: Sequence[int], batch_size: int, seed: int,
          progress: Progress | None) -> Any:
    if data_spec is None:
        return None
    from edgeprune.data import load_data

    return load_data(data_spec, input_shape=tuple(shape[1:]), batch_size=batch_size, seed=seed,
                     progress=progress)


def example_batch(bundle: Any, shape: Sequence[int]) -> Any:
    import torch

    if bundle is not None:
        from edgeprune.data import example_input

        return example_input(bundle, batch_size=shape[0])
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def accuracy(model: Any, bundle: Any, progress: Progress | None) -> dict[str, Any] | None:
    if bundle is None:
        return None
    from edgeprune.training.evaluate import evaluate

    return evaluate(model, bundle.val, progress=progress).to_dict()
