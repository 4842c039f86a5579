"""Pre-release gate: does an artifact still fit its device's budgets, and did it regress?

:func:`gate` checks every budget on every artifact (an ``.onnx`` file with its external data, a
``.tflite`` file, or a pruned model directory) and returns a :class:`GateResult` — data, from
which the CLI renders the table, the JSON document and the JUnit XML, so the three always agree.

What is checked and where the number comes from:

- ``max_model_size_mb`` — bytes on disk (1 MB = 10⁶ bytes), external ONNX data files included;
- ``max_params`` — ONNX: elements of floating-point initializers; pruned dir: the module's
  parameters; TFLite: elements of the constant weight tensors read from the flatbuffer
  (:func:`edgeprune.artifacts.tflite_info.tflite_info`; no TFLite runtime needed);
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

Where each part lives: budgets, tolerance and the gate file in :mod:`.budgets`; the metrics of
one artifact (static and measured) in :mod:`.metrics`; judging them in :mod:`.checks`; the
result, its JSON and JUnit forms and the baseline reader in :mod:`.result`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeprune.errors import ArtifactError, UsageError
from edgeprune.release.budgets import GATE_FILE as GATE_FILE
from edgeprune.release.budgets import GateBudgets as GateBudgets
from edgeprune.release.budgets import GateFile as GateFile
from edgeprune.release.budgets import Tolerance as Tolerance
from edgeprune.release.budgets import load_gate_file as load_gate_file
from edgeprune.release.budgets import validate
from edgeprune.release.checks import budget_checks, match_baseline, regression_checks
from edgeprune.release.metrics import ArtifactMetrics as ArtifactMetrics
from edgeprune.release.metrics import measure_settings, measured, static_metrics
from edgeprune.release.result import Check as Check
from edgeprune.release.result import GateResult as GateResult
from edgeprune.release.result import load_baseline as load_baseline

__all__ = ["GATE_FILE", "ArtifactError", "ArtifactMetrics", "Check", "GateBudgets", "GateFile",
           "GateResult", "Tolerance", "gate", "load_baseline", "load_gate_file"]

Progress = Callable[[dict[str, Any]], None]


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
    validate(budgets, "budget")
    validate(tol, "tolerance")
    emit = progress or (lambda event: None)
    shape = tuple(input_shape) if input_shape else (
        tuple(profile.input_shape) if profile is not None else None)
    base = load_baseline(baseline) if isinstance(baseline, (str, os.PathLike)) else baseline
    paths = [Path(a) for a in artifacts]
    want_ratio = budgets.max_latency_ratio is not None and target is not None
    ref_path = Path(reference) if reference is not None else None
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        loaded = [static_metrics(p, shape, emit) for p in paths]
        ref = (static_metrics(ref_path, shape, emit) if ref_path is not None and want_ratio
               else None)
        metrics = [m for m, _ in loaded]
        if target is not None:
            ms = measure_settings(settings, shape)
            metrics = [measured(m, model, target, ms, budgets.percentile, profile, stack, emit)
                       for m, model in loaded]
            if ref is not None:
                ref = (measured(ref[0], ref[1], target, ms, budgets.percentile, profile, stack,
                                 emit), None)
        elif reference is not None:
            notes.append("--reference ignored: nothing is measured without --target")
    reference_metrics = ref[0] if ref is not None else None
    checks: list[Check] = []
    for m in metrics:
        checks += budget_checks(m, budgets, target is not None, reference_metrics)
        if base is not None:
            checks += regression_checks(m, match_baseline(m, metrics, base), tol)
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
