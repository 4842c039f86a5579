"""One-shot jobs behind the CLI's ``prune`` and ``materialize``: spec in, pruned directory out.

Each job resolves the model and (optionally) real data, runs one library transform, evaluates
before/after when data is given, saves a pruned-model directory and returns its facts as data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune._io import check_writable
from edgeprune.errors import UsageError
from edgeprune.pipeline.sources import (
    ModelSource,
    Progress,
    accuracy,
    example_batch,
    load_bundle,
    load_source,
    load_with_data,
)


def prune_job(source: ModelSource, config: Any, out: str | Path, *, data: str | None = None,
              calibration_batches: int = 8, batch_size: int = 64, evaluate: bool = True,
              force: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Prune ``source`` with a :class:`~edgeprune.pruning.prune.PruneConfig`; save it to ``out``."""
    from edgeprune.data import input_paths
    from edgeprune.models import pruned_dir
    from edgeprune.pruning.prune import prune

    check_writable(out, force=force, kind="dir",
                   inputs=(source.spec, source.weights, *input_paths(data)))
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
    example = example_batch(bundle, loaded.input_shape)
    before = accuracy(loaded.model, bundle, progress) if evaluate else None
    result = prune(loaded.model, example, config, calibration=calib, labeled=labeled,
                   progress=progress)
    after = accuracy(result.model, bundle, progress) if evaluate else None
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

    from edgeprune.data import input_paths
    from edgeprune.models import pruned_dir
    from edgeprune.pruning.schedules import run_schedule
    from edgeprune.training.recipes import get_recipe

    check_writable(out, force=force, kind="dir",
                   inputs=(source.spec, source.weights, *input_paths(data)))
    loaded, bundle = load_with_data(source, data, batch_size, config.seed, progress)
    overrides: dict[str, Any] = {}
    if lr is not None:
        overrides["lr"] = lr
    if max_batches is not None:
        overrides["max_batches_per_epoch"] = max_batches
    chosen = get_recipe(recipe, **overrides)
    ckpt = Path(f"{out}.ckpt")
    result = run_schedule(loaded.model, bundle, schedule, config, chosen, epochs=epochs,
                          example_inputs=example_batch(bundle, loaded.input_shape),
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
    from edgeprune.data import input_paths
    from edgeprune.models import pruned_dir
    from edgeprune.pruning.masks import apply_torch_prune_masks
    from edgeprune.pruning.materialize import materialize

    check_writable(out, force=force, kind="dir",
                   inputs=(source.spec, source.weights, *input_paths(data)))
    loaded = load_source(source)
    apply_torch_prune_masks(loaded.model)
    bundle = load_bundle(data, loaded.input_shape, batch_size, 0, progress)
    example = example_batch(bundle, loaded.input_shape)
    calibration = None
    if bundle is not None:
        from edgeprune.data import calibration_batches as calib_batches

        calibration = calib_batches(bundle, 4, batch_size, split="val")
    before = accuracy(loaded.model, bundle, progress) if evaluate else None
    result = materialize(loaded.model, example, constant_channels=constant_channels,
                         tolerance=tolerance, calibration=calibration)
    after = accuracy(result.model, bundle, progress) if evaluate else None
    record = {"job": "materialize", "source": source.spec, "data": data,
              "parity_inputs": "real data (val split)" if bundle is not None else
              "random example inputs (pass --data for real inputs)",
              **result.to_dict(), "accuracy_before": before, "accuracy_after": after}
    path = pruned_dir.save(result.model, out, spec=loaded.base_spec, input_shape=loaded.input_shape,
                       history=loaded.history + list(result.history),
                       extra={"materialize": record}, force=force)
    return {"out": str(path), **record}
