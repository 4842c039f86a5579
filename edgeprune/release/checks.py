"""Judging metrics: budgets (limit − value is the margin) and regressions against a baseline.

A budget that cannot be judged (nothing measured without a target, a metric not computed for
the artifact's kind, accuracy, which gate has no data for) is *skipped* with the reason, never
passed. A baseline's metrics may grow by at most the tolerance, even within budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from edgeprune.release.budgets import GateBudgets, Tolerance
from edgeprune.release.metrics import ArtifactMetrics
from edgeprune.release.result import Check, fmt_value

__all__ = ["NO_TARGET", "budget_checks", "match_baseline", "regression_checks"]

NO_TARGET = "skipped (no --target)"


def _check(m: ArtifactMetrics, budget: str, limit: float | None, value: float | None, unit: str,
           what: str, skip: str | None = None) -> Check:
    if skip is not None or value is None or limit is None:
        return Check(m.artifact, budget, limit, value, unit, None, "skipped",
                     skip or f"{what}: not available")
    margin = limit - value
    if value <= limit:
        return Check(m.artifact, budget, limit, value, unit, margin, "pass")
    reason = (f"{m.artifact}: {what} {fmt_value(value)} {unit} exceeds {budget} "
              f"{fmt_value(limit)} {unit} by {fmt_value(-margin)} {unit} ({-margin / limit:.1%})")
    return Check(m.artifact, budget, limit, value, unit, margin, "fail", reason)


def budget_checks(m: ArtifactMetrics, b: GateBudgets, measured: bool,
                  ref: ArtifactMetrics | None) -> list[Check]:
    """One check per budget set in ``b``; ``ref`` is the reference (unpruned) artifact's
    measured metrics, for ``max_latency_ratio``."""
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


def match_baseline(m: ArtifactMetrics, current: Sequence[ArtifactMetrics],
                   base: Mapping[str, ArtifactMetrics]) -> ArtifactMetrics | None:
    """The baseline entry for ``m``: same file name, or the only one when both have one."""
    if m.name in base:
        return base[m.name]
    if len(base) == 1 and len(current) == 1:
        return next(iter(base.values()))
    return None


def regression_checks(m: ArtifactMetrics, old: ArtifactMetrics | None,
                      tol: Tolerance) -> list[Check]:
    """Size, MACs and measured latency against ``old`` (the baseline's entry for ``m``)."""
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
        reason = (f"{m.artifact}: {metric} grew {growth:+.1%} over the baseline "
                  f"({fmt_value(prev)} -> {fmt_value(cur)} {unit}), more than the {pct:g}% "
                  "tolerance")
        checks.append(Check(m.artifact, budget, limit, cur, unit, margin, "fail", reason))
    return checks
