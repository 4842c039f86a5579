"""What a fit run is asked to do: :class:`FitSettings`, and the budgets it resolves to."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from edgeprune.errors import UsageError

__all__ = ["FitSettings", "ResolvedBudgets"]


@dataclass(frozen=True)
class FitSettings:
    """Everything that decides a fit's result; stored as ``settings.json`` in the run directory.

    Budget overrides (``None`` = take the target profile's budget): ``latency_ms`` (absolute,
    per measured batch) or ``speedup`` (the unpruned model's measured latency ÷ speedup),
    ``max_accuracy_drop`` (percentage points), ``memory_mb`` (peak RSS while measuring) and
    ``size_mb`` (ONNX file size). ``measure_batch`` is the batch the ONNX is exported with for
    measuring: large enough that latency stands well above timing noise, so latency is *per
    batch of* ``measure_batch`` inputs.
    """

    model: str
    data: str
    target: str = "local"
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None
    strategy: str = "uniform"
    latency_ms: float | None = None
    speedup: float | None = None
    max_accuracy_drop: float | None = None
    memory_mb: float | None = None
    size_mb: float | None = None
    criterion: str = "l2"
    round_to: int = 1
    max_ratio: float = 0.9  # no group loses more than this fraction of its channels
    batch_size: int = 64  # training / evaluation batch
    measure_batch: int = 64
    step_epochs: int = 1
    step_batches: int = 20  # batches per short fine-tune epoch (0 = all)
    final_epochs: int = 2
    final_batches: int = 0
    lr: float = 0.01
    eval_batches: int = 0  # val batches per candidate accuracy (0 = the whole val split)
    max_steps: int = 12
    uniform_tolerance: float = 0.1
    netadapt_step: float = 0.1  # latency cut per step, as a fraction of the unpruned latency
    runs: int = 30
    warmup: int = 5
    max_repeats: int = 1
    exporter: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.input_shape is not None and not isinstance(self.input_shape, tuple):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        self._check()

    def _check(self) -> None:
        if self.latency_ms is not None and self.speedup is not None:
            raise UsageError("both --latency-ms and --speedup given",
                             hint="keep one: an absolute budget or a speed-up over the unpruned "
                             "model")
        for key in ("latency_ms", "memory_mb", "size_mb"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise UsageError(f"{key} must be positive, got {value}",
                                 hint="give a positive number")
        if self.speedup is not None and not self.speedup >= 1:
            raise UsageError(f"speedup must be at least 1, got {self.speedup}",
                             hint="e.g. --speedup 1.5 for 1.5× faster than the unpruned model")
        if self.max_accuracy_drop is not None and not 0 <= self.max_accuracy_drop <= 100:
            raise UsageError("max accuracy drop must be in [0, 100] points",
                             hint="e.g. --max-accuracy-drop 1.0")
        if not 0 < self.max_ratio < 1:
            raise UsageError(f"max_ratio must be in (0, 1), got {self.max_ratio}",
                             hint="e.g. 0.9")
        for key in ("round_to", "batch_size", "measure_batch", "step_epochs", "final_epochs",
                    "max_steps", "runs"):
            if getattr(self, key) < 1:
                raise UsageError(f"{key} must be at least 1", hint=f"set {key} to 1 or more")
        for key in ("step_batches", "final_batches", "eval_batches", "warmup", "max_repeats"):
            if getattr(self, key) < 0:
                raise UsageError(f"{key} must be 0 or more", hint=f"set {key} to 0 or more")

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if data["input_shape"] is not None:
            data["input_shape"] = list(data["input_shape"])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FitSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"settings hold unknown keys {unknown}",
                             hint="this run directory was written by another edgeprune version")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> FitSettings:
        return dataclasses.replace(self, **changes)


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
    overrides = {"max_peak_rss_mb": settings.memory_mb, "max_model_size_mb": settings.size_mb,
                 "max_accuracy_drop_points": settings.max_accuracy_drop}
    if settings.latency_ms is not None or settings.speedup is not None:
        overrides["max_latency_ms"] = settings.latency_ms
        overrides["max_latency_ratio"] = 1 / settings.speedup if settings.speedup else None
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
