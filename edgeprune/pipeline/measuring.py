"""The one path from a model to the artifact a device measures, and measuring it.

``fit`` (every candidate), ``gate`` (a pruned directory) and ``measure`` (a spec or directory)
all measure an ONNX export checked against PyTorch; they get it here, so an exporter option or a
check added once applies to every measurement. :func:`measure` is ``edgeprune.measure``: it takes
an artifact, a model spec or a pruned directory, resolves it to files (the ONNX graph's
external data read by :mod:`edgeprune.artifacts.files`), refuses ``--input-shape`` values the
graph contradicts, and hands the files to :func:`edgeprune.devices.measure.measure_files` (a device
measures files, not models).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeprune.artifacts.files import artifact_files
from edgeprune.devices.measure import (
    ARTIFACT_SUFFIXES,
    MeasureResult,
    MeasureSettings,
    cache_dir,
    measure_files,
    parse_input_shape,
)
from edgeprune.devices.targets import Target
from edgeprune.errors import ArtifactError, MeasurementError, NotFoundError, UsageError
from edgeprune.pipeline.sources import Progress

__all__ = ["artifact_to_measure", "check_input_shapes", "export_for_measuring", "measure"]


def export_for_measuring(model: Any, example_inputs: Any, out: str | os.PathLike[str], *,
                         exporter: str = "auto", progress: Progress | None = None) -> Any:
    """Export ``model`` at ``example_inputs``' shape to ONNX at ``out`` (replacing a previous
    export there: these files are edgeprune's own), checked against PyTorch; returns the
    :class:`~edgeprune.artifacts.onnx_export.ExportResult`."""
    from edgeprune.artifacts.onnx_export import export_onnx

    return export_onnx(model, example_inputs, out, exporter=exporter, force=True,
                       progress=progress)


def artifact_to_measure(model_arg: str | os.PathLike[str], *, weights: str | None = None,
                        input_shape: Sequence[int] | None = None,
                        progress: Progress | None = None) -> Path:
    """Resolve the MODEL argument to an artifact file the runner can load.

    ``.onnx``/``.tflite`` files are used as they are. A model spec or a pruned model directory
    is exported to ONNX on the fly (checked against PyTorch) into the local cache, keyed by the
    spec, the weights' content and the input shape, so a second measure reuses the export.
    """
    path = Path(model_arg).expanduser()
    if path.suffix.lower() in ARTIFACT_SUFFIXES:
        if not path.is_file():
            raise NotFoundError(f"artifact {str(path)!r} does not exist", hint="check the path")
        return path
    return _export_on_the_fly(str(model_arg), weights, input_shape, progress)


def _export_on_the_fly(spec: str, weights: str | None, input_shape: Sequence[int] | None,
                       progress: Progress | None) -> Path:
    from edgeprune.models import pruned_dir
    from edgeprune.models.load import default_input_shape, load_model
    from edgeprune.models.spec import parse_model_spec

    try:
        parse_model_spec(spec)
    except UsageError:
        raise
    except Exception:
        raise UsageError(f"{spec!r} is not an .onnx or .tflite file, nor a model spec",
                         hint="pass an exported artifact, a pruned model directory or a spec "
                         "such as builtin:mnist-cnn") from None
    digest = hashlib.sha256(spec.encode())
    if pruned_dir.is_pruned_dir(spec):
        digest.update(pruned_dir.read_manifest(spec).weights_sha256.encode())
    if weights:
        digest.update(Path(weights).read_bytes())
    model = load_model(spec, weights=weights)
    shape = tuple(input_shape or default_input_shape(model) or default_input_shape(spec) or ())
    if not shape:
        raise UsageError(f"cannot tell the input shape of {spec!r}",
                         hint="pass --input-shape N,C,H,W")
    digest.update(repr(shape).encode())
    out = cache_dir() / "exports" / f"{digest.hexdigest()[:20]}.onnx"
    if out.is_file():
        return out
    import torch

    if progress:
        progress({"stage": "export", "message": f"exporting {spec} to ONNX {shape}"})
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    export_for_measuring(model, example, out)
    return out


def measure(
    model_arg: str | os.PathLike[str],
    target: Target,
    settings: MeasureSettings | None = None,
    *,
    weights: str | None = None,
    input_shape: Sequence[int] | None = None,
    profile: Any = None,
    progress: Progress | None = None,
    model: str | None = None,
) -> MeasureResult:
    """Measure ``model_arg`` on ``target``: an ``.onnx``/``.tflite`` file, or a model spec or
    pruned model directory exported first (:func:`artifact_to_measure`; ``weights`` and
    ``input_shape`` are for that export).

    ``model`` is the spec or directory an artifact was exported from (progress and the result
    name it instead of the export's cache file); a spec given as ``model_arg`` is named so too.
    ``--input-shape`` values (``settings.input_shapes``) the ONNX graph contradicts are refused
    before any runner starts.
    """
    settings = settings or MeasureSettings()
    path = artifact_to_measure(model_arg, weights=weights, input_shape=input_shape,
                               progress=progress)
    exported = model is not None or Path(model_arg).expanduser() != path
    label = (model or str(model_arg)) if exported else path.name
    try:
        files = artifact_files(path)
    except ArtifactError as exc:  # measuring an unreadable model: the measurement failed
        raise MeasurementError(exc.message, hint=exc.hint) from None
    check_input_shapes(path, settings.input_shapes, label=label)
    return measure_files(path if exported else model_arg, target, settings, profile=profile,
                         progress=progress, model=label if exported else None, files=files)


# --- input shapes against the graph ------------------------------------------------------------


def check_input_shapes(path: Path, input_shapes: Sequence[str], *,
                       label: str | None = None) -> None:
    """Refuse ``--input-shape`` values an ONNX model's declared inputs contradict, before any
    runner starts (onnxruntime's own error names neither the shape it wants nor the fix).

    ``input_shapes`` are the runner's ``[NAME=]1x3x224x224`` strings (no name = every input).
    A fixed dim must match; a dynamic one takes any size; the rank must match whenever the model
    declares one (a scalar input declares rank 0; an input with no shape takes any). Dynamic is
    what onnxruntime treats as dynamic: a symbolic dim, an unset one or a negative one; a
    ``dim_value`` of 0 is a fixed size of zero there (it runs only on empty tensors). A NAME the
    model has no input of is refused too (the runner would ignore it). TFLite files, and machines
    without the ``onnx`` package, are left to the runner. ``label`` names the model in messages
    (default: the file name).
    """
    if not input_shapes or path.suffix.lower() != ".onnx":
        return
    label = label or path.name
    requested: dict[str, tuple[str, list[int]]] = {}  # input name or "*" -> (as given, dims)
    for item in input_shapes:
        name, sep, _ = item.rpartition("=")
        requested[name if sep else "*"] = (item, list(parse_input_shape(item)))
    declared = _declared_inputs(path)
    if declared is None:  # no onnx package here, or unreadable: the runner says so in its words
        return
    unknown = [n for n in requested if n != "*" and n not in declared]
    if unknown:
        raise UsageError(f"{label} has no input named {unknown[0]!r} (--input-shape "
                         f"{requested[unknown[0]][0]}); its inputs: {', '.join(declared)}",
                         hint="name one of those inputs, or drop NAME= to shape every input")
    for name, dims in declared.items():
        item, want = requested.get(name) or requested.get("*") or ("", [])
        if not item or dims is None or _fits(dims, want):
            continue
        if not dims:  # a scalar: no --input-shape can fit it, so the shape was meant for others
            raise UsageError(f"input {name!r} is a scalar in {label}; --input-shape {item} does "
                             "not match", hint="give the shape as NAME=SHAPE for each input "
                             "it is for (a scalar input needs none)")
        same_rank = len(want) == len(dims)
        fix = "x".join(str(d) if isinstance(d, int) else str(want[i] if same_rank else 1)
                       for i, d in enumerate(dims))
        if "=" in item or len(declared) > 1:
            fix = f"{name}={fix}"
        shown = "×".join(str(d) for d in dims)
        free = [str(d) for d in dims if not isinstance(d, int)]
        if 0 in dims:
            raise UsageError(f"input {name!r} is {shown} in {label}: a dimension of size 0, which "
                             "onnxruntime runs only on empty tensors",
                             hint="re-export the model with that dimension dynamic (named)")
        if not free:
            raise UsageError(f"input {name!r} is fixed at {shown} in {label}; --input-shape "
                             f"{item} does not match", hint=f"drop --input-shape or give {fix}")
        raise UsageError(f"input {name!r} is {shown} in {label} (only {', '.join(free)} can "
                         f"vary); --input-shape {item} does not match", hint=f"give {fix}")


def _declared_inputs(path: Path) -> dict[str, list[int | str] | None] | None:
    """:func:`~edgeprune.artifacts.onnx_info.declared_inputs`, or None when the graph cannot be
    read here (no ``onnx`` package, or not a readable model)."""
    try:
        from edgeprune.artifacts.onnx_info import declared_inputs

        return declared_inputs(path)
    except Exception:
        return None


def _fits(declared: Sequence[int | str], dims: Sequence[int]) -> bool:
    return len(declared) == len(dims) and all(
        not isinstance(d, int) or d == w for d, w in zip(declared, dims, strict=True))
