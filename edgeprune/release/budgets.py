"""The gate's limits: budgets, regression tolerance, and the gate file that holds both.

``edgeprune-gate.toml`` (:class:`GateFile`) is a repository's limits under version control; its
``[budgets]`` and ``[tolerance]`` tables map 1:1 onto :class:`GateBudgets` and :class:`Tolerance`,
and a bad key is a one-line error naming the file, the key and the fix.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune import config
from edgeprune.config import FieldProblem
from edgeprune.devices.profiles import Percentile
from edgeprune.errors import UsageError

__all__ = ["GATE_FILE", "GateBudgets", "GateFile", "Tolerance", "load_gate_file", "validate"]

GATE_FILE = "edgeprune-gate.toml"


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


def validate(obj: GateBudgets | Tolerance, what: str) -> None:
    """Check budgets or a tolerance given in code (the gate file's are checked on load)."""
    try:
        obj._check()
    except FieldProblem as exc:
        raise UsageError(f"{what} {exc.key}: {exc.message}", hint=exc.hint) from None
