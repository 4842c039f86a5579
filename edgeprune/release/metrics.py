"""What gate finds out about one artifact: static facts, and measurements on a target.

- size — bytes on disk (1 MB = 10⁶ bytes), external ONNX data files included;
- params — ONNX: elements of floating-point initializers; pruned dir: the module's parameters;
  TFLite: elements of the constant weight tensors read from the flatbuffer
  (:func:`edgeprune.artifacts.tflite_info.tflite_info`; no TFLite runtime needed);
- MACs — ONNX: Conv/ConvTranspose/Gemm/MatMul multiply-accumulates from the graph with shapes
  from ``onnx.shape_inference`` (dynamic dims filled from the input shape); pruned dir:
  :func:`edgeprune.models.cost.count_macs` at the manifest's input shape; TFLite: not computed;
- latency and peak memory — measured on the target through
  :func:`edgeprune.pipeline.measuring.measure` (a pruned directory is exported for it first).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune import config
from edgeprune.errors import ArtifactError, NotFoundError

__all__ = ["ArtifactMetrics", "measure_settings", "measured", "static_metrics"]

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ArtifactMetrics:
    """What gate found out about one artifact (static facts, and measurements with a target)."""

    artifact: str
    name: str
    kind: str  # onnx | tflite | pruned
    files: tuple[str, ...]
    size_bytes: int
    params: int | None = None
    macs: int | None = None
    macs_note: str = ""
    target: str | None = None
    latency_percentile: int | None = None
    latency_ms: float | None = None
    peak_rss_mb: float | None = None
    measurement: Mapping[str, Any] | None = None

    @property
    def model_size_mb(self) -> float:
        return self.size_bytes / 1e6

    def to_dict(self) -> dict[str, Any]:
        data = config.to_dict(self)
        data["model_size_mb"] = self.model_size_mb
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArtifactMetrics:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["files"] = tuple(kwargs.get("files") or ())
        return cls(**kwargs)


def static_metrics(path: Path, shape: tuple[int, ...] | None,
                   emit: Progress) -> tuple[ArtifactMetrics, Any]:
    """Size, params and MACs of one artifact; a pruned dir also returns its loaded model."""
    if not path.exists():
        raise NotFoundError(f"artifact {str(path)!r} does not exist", hint="check the path")
    emit({"stage": "inspect", "message": f"reading {path}"})
    suffix = path.suffix.lower()
    if path.is_dir():
        return _static_pruned(path)
    if suffix == ".onnx":
        return _static_onnx(path, shape), None
    if suffix == ".tflite":
        return _static_tflite(path), None
    raise ArtifactError(f"{str(path)!r} is not an artifact gate can check",
                        hint="give an .onnx or .tflite file or a pruned model directory")


def _static_onnx(path: Path, shape: tuple[int, ...] | None) -> ArtifactMetrics:
    from edgeprune.artifacts.files import artifact_files
    from edgeprune.artifacts.onnx_info import onnx_info

    # a corrupt file is an ExportError naming the fix; MACs as info shows them
    info = onnx_info(path, input_shape=shape)
    files = artifact_files(path)  # a missing external data file is a NotFoundError
    return ArtifactMetrics(artifact=str(path), name=path.name, kind="onnx",
                           files=tuple(str(f) for f in files),
                           size_bytes=sum(f.stat().st_size for f in files), params=info.params,
                           macs=info.macs, macs_note=info.macs_note)


def _static_tflite(path: Path) -> ArtifactMetrics:
    from edgeprune.artifacts.tflite_info import tflite_info
    from edgeprune.errors import ExportError

    try:
        info = tflite_info(path)  # the flatbuffer itself: no TFLite runtime needed here
    except ExportError as exc:
        raise ArtifactError(exc.message, hint="re-export it with edgeprune export --format "
                            "tflite") from None
    return ArtifactMetrics(artifact=str(path), name=path.name, kind="tflite",
                           files=(str(path),), size_bytes=info.size_bytes, params=info.params,
                           macs_note="not computed for TFLite")


def _static_pruned(path: Path) -> tuple[ArtifactMetrics, Any]:
    import torch

    from edgeprune.models import cost, pruned_dir

    if not pruned_dir.is_pruned_dir(path):
        raise ArtifactError(f"{str(path)!r} is a directory but not a pruned model (no "
                            f"{pruned_dir.MANIFEST})", hint="give a directory written by edgeprune "
                            "prune/fit, or an .onnx/.tflite file")
    model = pruned_dir.load(path)
    shape = pruned_dir.read_manifest(path).input_shape
    macs, note = None, "the manifest records no input_shape"
    if shape:
        macs, note = cost.count_macs(model, torch.zeros(*shape)), ""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return ArtifactMetrics(artifact=str(path), name=path.name, kind="pruned",
                           files=tuple(str(f) for f in files),
                           size_bytes=sum(f.stat().st_size for f in files),
                           params=cost.count_params(model), macs=macs, macs_note=note), model


def measure_settings(settings: Any, shape: tuple[int, ...] | None) -> Any:
    """The MeasureSettings to gate with (default: 50 runs after 10 warm-up), dynamic input
    dims filled from ``shape``."""
    from edgeprune.devices.measure import MeasureSettings

    settings = settings or MeasureSettings()
    if shape and settings.default_shape is None:
        settings = dataclasses.replace(settings, default_shape=shape)
    return settings


def measured(m: ArtifactMetrics, model: Any, target: Any, settings: Any, percentile: int,
             profile: Any, stack: contextlib.ExitStack, emit: Progress) -> ArtifactMetrics:
    """``m`` with its latency (at ``percentile``) and peak memory measured on ``target``;
    ``model`` is a pruned directory's loaded model (exported for the measurement, the export
    living as long as ``stack``)."""
    from edgeprune.pipeline.measuring import measure

    path = Path(m.artifact)
    if m.kind == "pruned":
        path = stack.enter_context(_exported(model, path, emit))
    result = measure(path, target, settings, profile=profile, progress=emit)
    keep = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "cv", "noisy", "runs", "warmup",
            "runtime", "runtime_version", "threads", "cached", "artifact_sha256")
    return dataclasses.replace(
        m, target=result.where, latency_percentile=percentile,
        latency_ms=result.latency_ms(percentile), peak_rss_mb=result.peak_rss_mb,
        measurement={**{k: getattr(result, k) for k in keep},
                     "machine": result.device.get("machine")})


@contextlib.contextmanager
def _exported(model: Any, directory: Path, emit: Progress) -> Iterator[Path]:
    """A pruned model exported to a temporary ONNX file, for measuring."""
    import torch

    from edgeprune.models.pruned_dir import read_manifest
    from edgeprune.pipeline.measuring import export_for_measuring

    shape = read_manifest(directory).input_shape
    if not shape:
        raise ArtifactError(f"{str(directory)!r} records no input shape, so it cannot be exported "
                            "for measuring", hint="export it yourself (edgeprune export) and gate "
                            "the .onnx file")
    with tempfile.TemporaryDirectory(prefix="edgeprune-gate-") as tmp:
        emit({"stage": "export", "message": f"exporting {directory.name} to ONNX for measuring"})
        out = Path(tmp) / f"{directory.name}.onnx"
        export_for_measuring(model, torch.zeros(*shape), out, progress=emit)
        yield out
