"""The budgets a fit is held to: the target profile's, with the settings' overrides on top.

:func:`resolve_budgets` resolves them once at the start of a run; :class:`ResolvedBudgets` is
stored in ``state.json`` so a resumed run judges by the same budgets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeprune.errors import UsageError
from edgeprune.fit.settings import FitSettings

__all__ = ["ResolvedBudgets", "resolve_budgets"]


@dataclass(frozen=True)
class ResolvedBudgets:
    """The budgets in force, with where each came from ("profile NAME" or "command line")."""

    max_latency_ms: float | None
    max_latency_ratio: float | None
    latency_percentile: int
    max_peak_rss_mb: float | None
    max_model_size_mb: float | None
    max_accuracy_drop_points: float | None
    sources: Mapping[str, str]

    @property
    def relative(self) -> bool:
        """True when latency is judged against the unpruned model measured side by side."""
        return self.max_latency_ms is None and self.max_latency_ratio is not None

    def latency_limit_ms(self, baseline_ms: float | None) -> float | None:
        if self.max_latency_ms is not None:
            return self.max_latency_ms
        if self.max_latency_ratio is not None and baseline_ms is not None:
            return self.max_latency_ratio * baseline_ms
        return None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["sources"] = dict(self.sources)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResolvedBudgets:
        return cls(**dict(data))


def resolve_budgets(settings: FitSettings, profile: Any) -> ResolvedBudgets:
    """The profile's budgets with the command line's overrides on top."""
    base = profile.budgets if profile is not None else None
    where = f"profile {profile.name}" if profile is not None else "no profile"
    values: dict[str, Any] = {
        "max_latency_ms": getattr(base, "max_latency_ms", None),
        "max_latency_ratio": getattr(base, "max_latency_ratio", None),
        "max_peak_rss_mb": getattr(base, "max_peak_rss_mb", None),
        "max_model_size_mb": getattr(base, "max_model_size_mb", None),
        "max_accuracy_drop_points": getattr(base, "max_accuracy_drop_points", None),
    }
    sources = {k: where for k, v in values.items() if v is not None}
    budget = settings.budget
    overrides = {"max_peak_rss_mb": budget.memory_mb, "max_model_size_mb": budget.size_mb,
                 "max_accuracy_drop_points": budget.max_accuracy_drop}
    if budget.latency_ms is not None or budget.speedup is not None:
        overrides["max_latency_ms"] = budget.latency_ms
        overrides["max_latency_ratio"] = 1 / budget.speedup if budget.speedup else None
        values["max_latency_ms"] = values["max_latency_ratio"] = None
        sources.pop("max_latency_ms", None)
        sources.pop("max_latency_ratio", None)
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
            sources[key] = "command line"
    percentile = int(getattr(base, "latency_percentile", 90))
    if not any(values[k] is not None for k in ("max_latency_ms", "max_latency_ratio",
                                                "max_peak_rss_mb", "max_model_size_mb")):
        raise UsageError(f"no latency, memory or size budget ({where} sets none)",
                         hint="pass --latency-ms X or --speedup X (or --memory-mb / --size-mb)")
    return ResolvedBudgets(latency_percentile=percentile, sources=sources, **values)
