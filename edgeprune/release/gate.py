"""Pre-release gate: does an artifact still fit its device's budgets, and did it regress?

:func:`gate` checks every budget on every artifact (an ``.onnx`` file with its external data, a
``.tflite`` file, or a pruned model directory) and returns a :class:`GateResult` — data, from
which the CLI renders the table, the JSON document and the JUnit XML, so the three always agree.

What is checked and where the number comes from:

- ``max_model_size_mb`` — bytes on disk (1 MB = 10⁶ bytes), external ONNX data files included;
- ``max_params`` — ONNX: elements of floating-point initializers; pruned dir: the module's
  parameters; TFLite: elements of the constant weight tensors read from the flatbuffer
  (:func:`edgeprune.models.cost.tflite_info`; no TFLite runtime needed);
- ``max_macs`` — ONNX: Conv/ConvTranspose/Gemm/MatMul multiply-accumulates from the graph with
  shapes from ``onnx.shape_inference`` (dynamic dims filled from the input shape); pruned dir:
  :func:`edgeprune.models.cost.count_macs` at the manifest's input shape; TFLite: not computed
  (skipped);
- ``max_latency_ms`` / ``max_peak_rss_mb`` — *measured* on ``target`` (the profile's percentile);
  without a target they are reported as skipped, never as passed;
- ``max_latency_ratio`` — measured latency over a ``reference`` (unpruned) artifact's latency,
  measured in the same run on the same target;
- ``max_accuracy_drop_points`` — gate has no data, so it is always reported as skipped.

A ``baseline`` (a previous result's JSON) adds regression checks: size, MACs and measured latency
may not grow by more than the tolerance even when within budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeprune import config
from edgeprune.config import FieldProblem
from edgeprune.errors import ArtifactError, ConfigError, NotFoundError, UsageError

__all__ = ["GATE_FILE", "ArtifactError", "ArtifactMetrics", "Check", "GateBudgets", "GateFile",
           "GateResult", "Tolerance", "gate", "load_baseline", "load_gate_file", "onnx_macs"]

Progress = Callable[[dict[str, Any]], None]
Status = Literal["pass", "fail", "skipped"]
Percentile = Literal[50, 90, 95, 99]
GATE_FILE = "edgeprune-gate.toml"
RESULT_FORMAT = "edgeprune.gate-result"
RESULT_VERSION = 1
NO_TARGET = "skipped (no --target)"



# --- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GateBudgets:
    """Limits to check; ``None`` = no budget. The keys of a profile's ``[budgets]`` plus
    ``max_params`` and ``max_macs``; a gate file's ``[budgets]`` table maps 1:1 onto this."""

    max_model_size_mb: float | None = None
    max_params: int | None = None
    max_macs: int | None = None
    max_latency_ms: float | None = None
    # measured latency over the reference (unpruned) model's, same target, same run
    max_latency_ratio: float | None = None
    latency_percentile: Percentile | None = None  # None = 90
    max_peak_rss_mb: float | None = None
    max_accuracy_drop_points: float | None = None  # reported as skipped: gate has no data

    def _check(self) -> None:
        for name in ("max_model_size_mb", "max_params", "max_macs", "max_latency_ms",
                     "max_peak_rss_mb"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise FieldProblem(name, f"must be positive, got {value}",
                                   "give a positive number or remove the key")
        if self.max_latency_ratio is not None and not 0 < self.max_latency_ratio <= 1:
            raise FieldProblem("max_latency_ratio", f"must be in (0, 1], got "
                               f"{self.max_latency_ratio}", "e.g. 0.5 for twice as fast")

    @property
    def percentile(self) -> int:
        return self.latency_percentile or 90

    @classmethod
    def from_profile(cls, profile: Any) -> GateBudgets:
        """The budgets of a :class:`~edgeprune.devices.profiles.Profile` (or its ``Budgets``)."""
        b = getattr(profile, "budgets", profile)
        return cls(max_model_size_mb=b.max_model_size_mb, max_latency_ms=b.max_latency_ms,
                   max_latency_ratio=b.max_latency_ratio,
                   latency_percentile=b.latency_percentile, max_peak_rss_mb=b.max_peak_rss_mb,
                   max_accuracy_drop_points=b.max_accuracy_drop_points)

    def merged(self, override: GateBudgets) -> GateBudgets:
        """``self`` with every budget ``override`` sets replacing ours."""
        changes = {f.name: getattr(override, f.name) for f in dataclasses.fields(override)
                   if getattr(override, f.name) is not None}
        return dataclasses.replace(self, **changes)

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self)
                   if f.name != "latency_percentile")

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)


@dataclass(frozen=True)
class Tolerance:
    """How much a metric may grow over the baseline, in percent (``None`` = ``default_pct``)."""

    default_pct: float = 5.0
    model_size_pct: float | None = None
    macs_pct: float | None = None
    latency_pct: float | None = None

    def _check(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and value < 0:
                raise FieldProblem(f.name, f"must be 0 or more, got {value}", "e.g. 5 for 5 %")

    def pct(self, metric: str) -> float:
        value = getattr(self, f"{metric.removesuffix('_mb').removesuffix('_ms')}_pct")
        return self.default_pct if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)


@dataclass(frozen=True)
class GateFile:
    """``edgeprune-gate.toml``: a repository's limits, kept under version control."""

    profile: str | None = None
    budgets: GateBudgets = field(default_factory=GateBudgets)
    tolerance: Tolerance = field(default_factory=Tolerance)
    baseline: str | None = None  # relative to the gate file's folder
    input_shape: tuple[int, ...] | None = None

    def _check(self) -> None:
        if self.input_shape is not None and (not self.input_shape
                                             or any(d < 1 for d in self.input_shape)):
            raise FieldProblem("input_shape", "dimensions must be positive",
                               "e.g. input_shape = [1, 3, 224, 224]")


def load_gate_file(path: str | os.PathLike[str]) -> GateFile:
    """Read and validate a gate file; a bad key is a one-line error naming file, key and fix."""
    path = Path(path)
    gate_file = config.from_dict(GateFile, config.read_toml(path), source=str(path))
    if gate_file.baseline and not Path(gate_file.baseline).is_absolute():
        gate_file = dataclasses.replace(gate_file, baseline=str(path.parent / gate_file.baseline))
    return gate_file


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One budget on one artifact. ``margin`` = limit − value (negative: over budget)."""

    artifact: str
    budget: str
    limit: float | None
    value: float | None
    unit: str
    margin: float | None
    status: Status
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


@dataclass(frozen=True)
class GateResult:
    checks: tuple[Check, ...]
    artifacts: tuple[ArtifactMetrics, ...]
    budgets: GateBudgets
    tolerance: Tolerance
    target: str | None = None
    reference: ArtifactMetrics | None = None
    baseline: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def exit_code(self) -> int:
        from edgeprune.errors import EXIT_GATE_FAILED, EXIT_OK

        return EXIT_OK if self.passed else EXIT_GATE_FAILED

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "skipped")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT, "version": RESULT_VERSION,
            "passed": self.passed, "exit_code": self.exit_code, "counts": self.counts(),
            "target": self.target, "baseline": self.baseline,
            "budgets": self.budgets.to_dict(), "tolerance": self.tolerance.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "artifacts": [a.to_dict() for a in self.artifacts],
            "reference": self.reference.to_dict() if self.reference else None,
            "notes": list(self.notes),
        }

    def to_junit(self) -> str:
        """JUnit XML: one ``<testsuite>`` per artifact, one ``<testcase>`` per budget."""
        import xml.etree.ElementTree as ET

        counts = self.counts()
        root = ET.Element("testsuites", name="edgeprune gate", tests=str(len(self.checks)),
                          failures=str(counts["fail"]), skipped=str(counts["skipped"]),
                          errors="0")
        for metrics in self.artifacts:
            checks = [c for c in self.checks if c.artifact == metrics.artifact]
            suite = ET.SubElement(
                root, "testsuite", name=metrics.artifact, tests=str(len(checks)),
                failures=str(sum(c.status == "fail" for c in checks)),
                skipped=str(sum(c.status == "skipped" for c in checks)), errors="0")
            for c in checks:
                case = ET.SubElement(suite, "testcase", name=c.budget,
                                     classname="edgeprune.gate." + metrics.name.replace(".", "_"))
                if c.status == "fail":
                    ET.SubElement(case, "failure", message=c.reason, type="BudgetExceeded")
                elif c.status == "skipped":
                    ET.SubElement(case, "skipped", message=c.reason)
                ET.SubElement(case, "system-out").text = (
                    f"value={_fmt(c.value)} {c.unit} limit={_fmt(c.limit)} {c.unit} "
                    f"margin={_fmt(c.margin)} {c.unit}")
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def load_baseline(path: str | os.PathLike[str]) -> dict[str, ArtifactMetrics]:
    """Artifact name -> metrics from a previous result's JSON (``--write-baseline``/``--format
    json`` output)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"baseline {str(path)!r} does not exist",
                            hint="record one with --write-baseline FILE") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"baseline {str(path)!r} is not readable JSON: {exc}".splitlines()[0],
                          hint="record it again with --write-baseline FILE") from None
    if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
        raise ConfigError(f"baseline {str(path)!r} is not an edgeprune gate result",
                          hint="record one with --write-baseline FILE")
    try:
        items = [ArtifactMetrics.from_dict(a) for a in data.get("artifacts", [])]
    except TypeError as exc:
        raise ConfigError(f"baseline {str(path)!r} is damaged: {exc}",
                          hint="record it again with --write-baseline FILE") from None
    return {a.name: a for a in items}


# --- the API -----------------------------------------------------------------------------------


def gate(
    artifacts: Sequence[str | os.PathLike[str]],
    budgets: GateBudgets | Any,
    *,
    target: Any = None,
    baseline: str | os.PathLike[str] | Mapping[str, ArtifactMetrics] | None = None,
    tolerance: Tolerance | float = 5.0,
    reference: str | os.PathLike[str] | None = None,
    settings: Any = None,
    profile: Any = None,
    input_shape: Sequence[int] | None = None,
    strict: bool = False,
    progress: Progress | None = None,
) -> GateResult:
    """Check ``budgets`` on every artifact; measure on ``target`` when one is given.

    ``budgets`` is a :class:`GateBudgets`, a profile or a profile's ``Budgets``. ``baseline`` is
    a previous result's JSON file (or :func:`load_baseline`'s mapping); ``tolerance`` a
    :class:`Tolerance` or a percentage for every metric. ``settings`` are the
    :class:`~edgeprune.devices.measure.MeasureSettings` (default: 50 runs after 10 warm-up);
    ``input_shape`` fills dynamic input dims (default: the profile's ``input_shape``).
    ``strict`` turns every skipped check into a failure (a CI that must check everything).

    Unreadable artifacts raise before anything is measured; exceeded budgets do not raise.
    """
    if not artifacts:
        raise UsageError("no artifacts to gate", hint="give one or more .onnx, .tflite files or "
                         "pruned model directories")
    if not isinstance(budgets, GateBudgets):
        budgets = GateBudgets.from_profile(budgets)
    tol = tolerance if isinstance(tolerance, Tolerance) else Tolerance(default_pct=tolerance)
    _validate(budgets, "budget")
    _validate(tol, "tolerance")
    emit = progress or (lambda event: None)
    shape = tuple(input_shape) if input_shape else (
        tuple(profile.input_shape) if profile is not None else None)
    base = load_baseline(baseline) if isinstance(baseline, (str, os.PathLike)) else baseline
    paths = [Path(a) for a in artifacts]
    want_ratio = budgets.max_latency_ratio is not None and target is not None
    ref_path = Path(reference) if reference is not None else None
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        loaded = [_static(p, shape, emit) for p in paths]
        ref = _static(ref_path, shape, emit) if ref_path is not None and want_ratio else None
        metrics = [m for m, _ in loaded]
        if target is not None:
            ms = _settings(settings, shape)
            metrics = [_measured(m, model, target, ms, budgets.percentile, profile, stack, emit)
                       for m, model in loaded]
            if ref is not None:
                ref = (_measured(ref[0], ref[1], target, ms, budgets.percentile, profile, stack,
                                 emit), None)
        elif reference is not None:
            notes.append("--reference ignored: nothing is measured without --target")
    reference_metrics = ref[0] if ref is not None else None
    checks: list[Check] = []
    for m in metrics:
        checks += _budget_checks(m, budgets, target is not None, reference_metrics)
        if base is not None:
            checks += _regression_checks(m, _match(m, metrics, base), tol)
    if strict:
        checks = [dataclasses.replace(c, status="fail", reason=f"{c.artifact}: {c.budget} not "
                                      f"checked, {c.reason} (--strict)")
                  if c.status == "skipped" else c for c in checks]
    if target is not None and profile is not None:
        from edgeprune.devices.profiles import arch_mismatch

        machines = {m.measurement.get("machine") for m in metrics if m.measurement}
        for machine in sorted(str(x) for x in machines if x):
            mismatch = arch_mismatch(profile, machine)
            if mismatch:
                notes.append(mismatch)
    for m in metrics:
        if m.measurement and m.measurement.get("noisy"):
            notes.append(f"{m.name}: noisy measurement (CV {m.measurement['cv']:.1%}); latency "
                         "figures are less reliable")
    return GateResult(checks=tuple(checks), artifacts=tuple(metrics), budgets=budgets,
                      tolerance=tol, target=getattr(target, "where", None),
                      reference=reference_metrics,
                      baseline=str(baseline) if isinstance(baseline, (str, os.PathLike)) else None,
                      notes=tuple(notes))


def _validate(obj: GateBudgets | Tolerance, what: str) -> None:
    try:
        obj._check()
    except FieldProblem as exc:
        raise UsageError(f"{what} {exc.key}: {exc.message}", hint=exc.hint) from None


# --- static metrics ----------------------------------------------------------------------------


def _static(path: Path, shape: tuple[int, ...] | None,
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
    from edgeprune.models.cost import onnx_info

    # a corrupt file is an ExportError naming the fix; MACs as info shows them
    info = onnx_info(path, input_shape=shape)
    files = artifact_files(path)  # a missing external data file is a NotFoundError
    return ArtifactMetrics(artifact=str(path), name=path.name, kind="onnx",
                           files=tuple(str(f) for f in files),
                           size_bytes=sum(f.stat().st_size for f in files), params=info.params,
                           macs=info.macs, macs_note=info.macs_note)


def _static_tflite(path: Path) -> ArtifactMetrics:
    from edgeprune.errors import ExportError
    from edgeprune.models.cost import tflite_info

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


def onnx_macs(proto: Any, shape: Sequence[int] | None = None) -> tuple[int | None, str]:
    """:func:`edgeprune.models.cost.onnx_macs` (where it lives, next to ``count_macs``), kept under
    this name for its callers; imported on call so ``import edgeprune.gate`` stays light."""
    from edgeprune.models.cost import onnx_macs as _onnx_macs

    return _onnx_macs(proto, shape)


# --- measurements ------------------------------------------------------------------------------


def _settings(settings: Any, shape: tuple[int, ...] | None) -> Any:
    from edgeprune.devices.measure import MeasureSettings

    settings = settings or MeasureSettings()
    if shape and settings.default_shape is None:
        settings = dataclasses.replace(settings, default_shape=shape)
    return settings


def _measured(m: ArtifactMetrics, model: Any, target: Any, settings: Any, percentile: int,
              profile: Any, stack: contextlib.ExitStack, emit: Progress) -> ArtifactMetrics:
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


# --- checks ------------------------------------------------------------------------------------


def _check(m: ArtifactMetrics, budget: str, limit: float | None, value: float | None, unit: str,
           what: str, skip: str | None = None) -> Check:
    if skip is not None or value is None or limit is None:
        return Check(m.artifact, budget, limit, value, unit, None, "skipped",
                     skip or f"{what}: not available")
    margin = limit - value
    if value <= limit:
        return Check(m.artifact, budget, limit, value, unit, margin, "pass")
    reason = (f"{m.artifact}: {what} {_fmt(value)} {unit} exceeds {budget} {_fmt(limit)} {unit} by "
              f"{_fmt(-margin)} {unit} ({-margin / limit:.1%})")
    return Check(m.artifact, budget, limit, value, unit, margin, "fail", reason)


def _budget_checks(m: ArtifactMetrics, b: GateBudgets, measured: bool,
                   ref: ArtifactMetrics | None) -> list[Check]:
    checks: list[Check] = []
    pct = f"p{b.percentile}"
    no_target = None if measured else NO_TARGET
    if b.max_model_size_mb is not None:
        checks.append(_check(m, "max_model_size_mb", b.max_model_size_mb, m.model_size_mb, "MB",
                             "size on disk"))
    if b.max_params is not None:
        checks.append(_check(m, "max_params", b.max_params, m.params, "params", "parameters",
                             None if m.params is not None else "skipped (not computed for "
                             f"{m.kind})"))
    if b.max_macs is not None:
        checks.append(_check(m, "max_macs", b.max_macs, m.macs, "MACs", "MACs",
                             None if m.macs is not None else f"skipped ({m.macs_note})"))
    if b.max_latency_ms is not None:
        checks.append(_check(m, "max_latency_ms", b.max_latency_ms, m.latency_ms, "ms",
                             f"{pct} latency", no_target))
    if b.max_latency_ratio is not None:
        skip = no_target or (None if ref is not None else
                             "skipped (needs --reference UNPRUNED_ARTIFACT measured in this run)")
        ratio = None
        if skip is None and ref is not None and ref.latency_ms and m.latency_ms is not None:
            ratio = m.latency_ms / ref.latency_ms
        checks.append(_check(m, "max_latency_ratio", b.max_latency_ratio, ratio, "x",
                             f"{pct} latency over the reference's", skip))
    if b.max_peak_rss_mb is not None:
        skip = no_target or (None if m.peak_rss_mb is not None else
                             "skipped (the device did not report peak RSS: install psutil there)")
        checks.append(_check(m, "max_peak_rss_mb", b.max_peak_rss_mb, m.peak_rss_mb, "MB",
                             "peak memory", skip))
    if b.max_accuracy_drop_points is not None:
        checks.append(_check(m, "max_accuracy_drop_points", b.max_accuracy_drop_points, None,
                             "points", "accuracy drop", "skipped (gate checks artifacts, not "
                             "accuracy: use edgeprune evaluate)"))
    return checks


def _match(m: ArtifactMetrics, current: Sequence[ArtifactMetrics],
           base: Mapping[str, ArtifactMetrics]) -> ArtifactMetrics | None:
    """The baseline entry for ``m``: same file name, or the only one when both have one."""
    if m.name in base:
        return base[m.name]
    if len(base) == 1 and len(current) == 1:
        return next(iter(base.values()))
    return None


def _regression_checks(m: ArtifactMetrics, old: ArtifactMetrics | None,
                       tol: Tolerance) -> list[Check]:
    if old is None:
        return [Check(m.artifact, "regression", None, None, "", None, "skipped",
                      f"skipped ({m.name} is not in the baseline)")]
    checks = []
    for metric, unit, cur, prev in (("model_size_mb", "MB", m.model_size_mb, old.model_size_mb),
                                    ("macs", "MACs", m.macs, old.macs),
                                    ("latency_ms", "ms", m.latency_ms, old.latency_ms)):
        budget = f"regression.{metric}"
        pct = tol.pct(metric)
        skip = None
        if metric == "latency_ms":
            if cur is None:
                skip = NO_TARGET
            elif prev is None:
                skip = "skipped (the baseline has no measured latency)"
            elif (old.target, old.latency_percentile) != (m.target, m.latency_percentile):
                skip = (f"skipped (baseline is p{old.latency_percentile} on {old.target}, this "
                        f"run p{m.latency_percentile} on {m.target})")
        elif cur is None or prev is None:
            skip = f"skipped ({metric} not known {'now' if cur is None else 'in the baseline'})"
        limit = None if prev is None else prev * (1 + pct / 100)
        if skip is not None or limit is None or cur is None:
            checks.append(Check(m.artifact, budget, limit, cur, unit, None, "skipped",
                                skip or "skipped"))
            continue
        margin = limit - cur
        if cur <= limit:
            checks.append(Check(m.artifact, budget, limit, cur, unit, margin, "pass"))
            continue
        growth = (cur - prev) / prev if prev else math.inf
        reason = (f"{m.artifact}: {metric} grew {growth:+.1%} over the baseline ({_fmt(prev)} -> "
                  f"{_fmt(cur)} {unit}), more than the {pct:g}% tolerance")
        checks.append(Check(m.artifact, budget, limit, cur, unit, margin, "fail", reason))
    return checks


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.4g}"
