"""One-shot jobs behind the CLI's ``prune`` and ``materialize``: spec in, pruned directory out.

Each job resolves the model and (optionally) real data, runs one library transform, evaluates
before/after when data is given, saves a pruned-model directory and returns its facts as data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune._io import check_writable
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
    from edgeprune.models import build, pruned_dir

    if source.weights and pruned_dir.is_pruned_dir(source.spec):
        raise UsageError("--weights cannot be combined with a pruned model directory",
                         hint="the directory holds its own weights; drop --weights")
    model = build.load_model(source.spec, weights=source.weights)
    base_spec, history = source.spec, []
    if pruned_dir.is_pruned_dir(source.spec):
        manifest = pruned_dir.read_manifest(source.spec)
        base_spec, history = manifest.spec, list(manifest.history)
    shape = (source.input_shape or build.default_input_shape(model)
             or build.default_input_shape(source.spec))
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


def data_inputs(data: str | None) -> tuple[str, ...]:
    """The paths a data spec reads (kept from being overwritten by an output); lazy: the data
    package imports torch."""
    from edgeprune.data._spec import input_paths

    return input_paths(data)


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
    return loaded, _data(data, loaded.input_shape, batch_size, seed, progress)


def _data(data_spec: str | None, shape: Sequence[int], batch_size: int, seed: int,
          progress: Progress | None) -> Any:
    if data_spec is None:
        return None
    from edgeprune.data import load_data

    return load_data(data_spec, input_shape=tuple(shape[1:]), batch_size=batch_size, seed=seed,
                     progress=progress)


def _example(bundle: Any, shape: Sequence[int]) -> Any:
    import torch

    if bundle is not None:
        from edgeprune.data import example_input

        return example_input(bundle, batch_size=shape[0])
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _accuracy(model: Any, bundle: Any, progress: Progress | None) -> dict[str, Any] | None:
    if bundle is None:
        return None
    from edgeprune.training.evaluate import evaluate

    return evaluate(model, bundle.val, progress=progress).to_dict()


def prune_job(source: ModelSource, config: Any, out: str | Path, *, data: str | None = None,
              calibration_batches: int = 8, batch_size: int = 64, evaluate: bool = True,
              force: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Prune ``source`` with a :class:`~edgeprune.pruning.prune.PruneConfig`; save it to ``out``."""
    from edgeprune.models import pruned_dir
    from edgeprune.pruning.prune import prune

    check_writable(out, force=force, kind="dir",
                   inputs=(source.spec, source.weights, *data_inputs(data)))
    needs_data = config.criterion in ("activation", "taylor")
    if needs_data and data is None:
        raise UsageError(f"criterion {config.criterion!r} needs real data",
                         hint="pass --data SPEC (e.g. builtin:mnist5k) or use --criterion l2")
    loaded, bundle = load_with_data(source, data, batch_size, config.seed, progress)
    calib = labeled = None
    if bundle is not None:
        from edgeprune.data import calibration_batches as calib_batches

        calib = calib_batches(bundle, calibration_batches, batch_size, split="train",
                              seed=config.seed)
        labeled = _labeled(bundle, calibration_batches)
    example = _example(bundle, loaded.input_shape)
    before = _accuracy(loaded.model, bundle, progress) if evaluate else None
    result = prune(loaded.model, example, config, calibration=calib, labeled=labeled,
                   progress=progress)
    after = _accuracy(result.model, bundle, progress) if evaluate else None
    facts = result.to_dict()
    facts.pop("widths_before", None)
    record = {"job": "prune", "source": source.spec, "data": data, **facts,
              "accuracy_before": before, "accuracy_after": after}
    path = pruned_dir.save(result.model, out, spec=loaded.base_spec, input_shape=loaded.input_shape,
                       history=loaded.history + list(result.history), extra={"prune": record},
                       force=force)
    return {"out": str(path), **record}


def schedule_job(source: ModelSource, config: Any, out: str | Path, *, data: str,
                 schedule: str, recipe: str = "full", epochs: int = 2, lr: float | None = None,
                 max_batches: int | None = None, batch_size: int = 64, force: bool = False,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Prune with a pipeline (oneshot, iterative, during-training, soft, retrain) + training.

    Training phases checkpoint next to ``out`` (``<out>.ckpt``), so an interrupted run started
    again with the same arguments resumes; the checkpoints are removed once ``out`` is written.
    """
    import shutil

    from edgeprune.models import pruned_dir
    from edgeprune.pruning.schedules import run_schedule
    from edgeprune.training.finetune import get_recipe

    check_writable(out, force=force, kind="dir",
                   inputs=(source.spec, source.weights, *data_inputs(data)))
    loaded, bundle = load_with_data(source, data, batch_size, config.seed, progress)
    overrides: dict[str, Any] = {}
    if lr is not None:
        overrides["lr"] = lr
    if max_batches is not None:
        overrides["max_batches_per_epoch"] = max_batches
    chosen = get_recipe(recipe, **overrides)
    ckpt = Path(f"{out}.ckpt")
    result = run_schedule(loaded.model, bundle, schedule, config, chosen, epochs=epochs,
                          example_inputs=_example(bundle, loaded.input_shape),
                          progress=progress, checkpoint_dir=ckpt)
    record = {"job": "prune", "source": source.spec, "data": data, "recipe": chosen.name,
              "config": config.to_dict(), **result.to_dict()}
    path = pruned_dir.save(result.model, out, spec=loaded.base_spec, input_shape=loaded.input_shape,
                       history=loaded.history + list(result.history), extra={"prune": record},
                       force=force)
    shutil.rmtree(ckpt, ignore_errors=True)
    return {"out": str(path), **record}


def _labeled(bundle: Any, n_batches: int) -> list[Any]:
    batches = []
    for i, (x, y) in enumerate(bundle.train):
        if i >= n_batches:
            break
        batches.append((x, y))
    return batches


def materialize_job(source: ModelSource, out: str | Path, *, data: str | None = None,
                    constant_channels: str = "fold", tolerance: float = 1e-5,
                    batch_size: int = 64, evaluate: bool = True, force: bool = False,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Turn zeroed / masked filters of ``source`` into a physically smaller saved model."""
    from edgeprune.models import pruned_dir
    from edgeprune.pruning.materialize import apply_torch_prune_masks, materialize

    check_writable(out, force=force, kind="dir",
                   inputs=(source.spec, source.weights, *data_inputs(data)))
    loaded = load_source(source)
    apply_torch_prune_masks(loaded.model)
    bundle = _data(data, loaded.input_shape, batch_size, 0, progress)
    example = _example(bundle, loaded.input_shape)
    calibration = None
    if bundle is not None:
        from edgeprune.data import calibration_batches as calib_batches

        calibration = calib_batches(bundle, 4, batch_size, split="val")
    before = _accuracy(loaded.model, bundle, progress) if evaluate else None
    result = materialize(loaded.model, example, constant_channels=constant_channels,
                         tolerance=tolerance, calibration=calibration)
    after = _accuracy(result.model, bundle, progress) if evaluate else None
    record = {"job": "materialize", "source": source.spec, "data": data,
              "parity_inputs": "real data (val split)" if bundle is not None else
              "random example inputs (pass --data for real inputs)",
              **result.to_dict(), "accuracy_before": before, "accuracy_after": after}
    path = pruned_dir.save(result.model, out, spec=loaded.base_spec, input_shape=loaded.input_shape,
                       history=loaded.history + list(result.history),
                       extra={"materialize": record}, force=force)
    return {"out": str(path), **record}
