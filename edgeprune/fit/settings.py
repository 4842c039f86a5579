"""What a fit run is asked to do: :class:`FitSettings`, the budgets it resolves to, ``[fit]``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgeprune.errors import ConfigError, UsageError

__all__ = ["FitSettings", "ResolvedBudgets", "auto_measure_batch", "load_fit_table"]

# How much work one timed run of the measured batch should be when the batch is chosen for us
# (about 20 ms on one core of a 2020s x86 or Cortex-A76): long enough that one run spans many
# scheduler time slices, so a machine-wide slowdown stretches every model alike and the ratio of
# two models measured side by side cancels it. Runs shorter than a time slice are either not
# preempted at all or preempted once for a whole slice, and their p90 measures the load.
AUTO_BATCH_MACS = 1e9
AUTO_BATCH_MAX = 256

# settings added after a run directory could have been written, with the value that behaves as
# before they existed (a resumed old run must reach the result it would have reached)
LEGACY_DEFAULTS: dict[str, Any] = {"tradeoff_points": 0}


@dataclass(frozen=True)
class FitSettings:
    """Everything that decides a fit's result; stored as ``settings.json`` in the run directory.

    The fields are the keys of a ``[fit]`` TOML table (see :func:`load_fit_table`).

    Budget overrides (``None`` = take the target profile's budget): ``latency_ms`` (absolute,
    per measured batch) or ``speedup`` (the unpruned model's latency, measured side by side with
    each candidate, ÷ speedup), ``max_accuracy_drop`` (percentage points), ``memory_mb`` (peak
    RSS while measuring) and ``size_mb`` (ONNX file size).

    Measuring: ``measure_batch`` is the batch of the ONNX that is timed; ``None`` picks it — 1
    for an absolute budget (the deployable shape a profile's ``max_latency_ms`` speaks of), and
    for a relative budget enough inputs that one run is about a GMAC (see ``AUTO_BATCH_MACS``).
    ``threads``: intra-op threads; ``None`` = the profile's, else 1 on the ``local`` target (a
    shared machine is far steadier single-threaded), else the runtime's default.
    ``max_measurements`` caps the runner invocations of the whole fit; ``noise_margin`` is the
    relative distance from the latency budget within which a result is measured again before it
    is believed; ``verify_pairs`` re-measurements of the final model decide the outcome.
    ``tradeoff_points``: candidates added after the search at other latencies (a safety point
    ``noise_margin`` below the choice — the first fallback if the final re-measure misses —
    then looser and tighter budgets) so the report shows the curve
    (:mod:`edgeprune.fit.tradeoff`); 0 = none.
    """

    model: str
    data: str
    target: str = "local"
    # how to reach the target (as `edgeprune measure`'s flags); None / empty = the target's own
    profile: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    python: str | None = None
    targets_file: tuple[str, ...] = ()
    profiles_file: tuple[str, ...] = ()
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None
    strategy: str = "auto"  # knapsack with a latency budget, else uniform
    latency_ms: float | None = None
    speedup: float | None = None
    max_accuracy_drop: float | None = None
    memory_mb: float | None = None
    size_mb: float | None = None
    criterion: str = "l2"
    round_to: int = 1
    max_ratio: float = 0.9  # no group loses more than this fraction of its channels
    batch_size: int = 64  # training / evaluation batch
    measure_batch: int | None = None
    threads: int | None = None
    step_epochs: int = 1
    step_batches: int = 20  # batches per short fine-tune epoch (0 = all)
    final_epochs: int = 2
    final_batches: int = 0
    lr: float = 0.01
    eval_batches: int = 0  # val batches per candidate accuracy (0 = the whole val split)
    max_steps: int = 12
    uniform_tolerance: float = 0.1
    netadapt_step: float = 0.1  # latency cut per step, as a fraction of the unpruned latency
    netadapt_proposals: int = 8  # groups fine-tuned per netadapt step (0 = every group)
    runs: int = 30
    warmup: int = 5
    max_repeats: int = 0  # repeats of a noisy attempt inside one measurement (the runner's own)
    max_measurements: int = 30
    tradeoff_points: int = 3  # candidates added after the search to draw the trade-off curve
    noise_margin: float = 0.15
    verify_pairs: int = 2
    exporter: str = "auto"
    tflite: bool = False  # also write model.tflite (the optional litert-torch extra)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.input_shape is not None and not isinstance(self.input_shape, tuple):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        for key in ("targets_file", "profiles_file"):
            if not isinstance(getattr(self, key), tuple):
                object.__setattr__(self, key, tuple(str(v) for v in getattr(self, key)))
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
        if not 0 <= self.noise_margin < 1:
            raise UsageError(f"noise_margin must be in [0, 1), got {self.noise_margin}",
                             hint="e.g. 0.15 (re-measure results within 15% of the budget)")
        for key in ("round_to", "batch_size", "step_epochs", "final_epochs", "max_steps",
                    "runs", "verify_pairs"):
            if getattr(self, key) < 1:
                raise UsageError(f"{key} must be at least 1", hint=f"set {key} to 1 or more")
        for key in ("measure_batch", "threads"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise UsageError(f"{key} must be at least 1", hint=f"set {key} to 1 or more, "
                                 "or leave it out to let fit choose")
        for key in ("step_batches", "final_batches", "eval_batches", "warmup", "max_repeats",
                    "netadapt_proposals", "tradeoff_points"):
            if getattr(self, key) < 0:
                raise UsageError(f"{key} must be 0 or more", hint=f"set {key} to 0 or more")
        least = 3 + 2 * self.verify_pairs
        if self.max_measurements < least:
            raise UsageError(f"max_measurements {self.max_measurements} leaves no room to "
                             f"search: the unpruned model, the smallest allowed model and the "
                             f"final check take {least}",
                             hint=f"set max_measurements to {least + 6} or more")

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if data["input_shape"] is not None:
            data["input_shape"] = list(data["input_shape"])
        data["targets_file"] = list(data["targets_file"])
        data["profiles_file"] = list(data["profiles_file"])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FitSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"settings hold unknown keys {unknown}",
                             hint="this run directory was written by another edgeprune version")
        # keys a run written by an older version lacks: the values that reproduce it
        return cls(**{**LEGACY_DEFAULTS, **dict(data)})

    def replace(self, **changes: Any) -> FitSettings:
        return dataclasses.replace(self, **changes)


def load_fit_table(path: str | Path) -> dict[str, Any]:
    """The ``[fit]`` table of a TOML file, keys checked against :class:`FitSettings`.

    Returns plain values (command-line flags are laid over them before the settings are built);
    an unknown key or a wrong type is a :class:`ConfigError` naming the file, the key and the fix.
    """
    from edgeprune import config

    doc = config.read_toml(path)
    table = doc.get("fit")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: no [fit] table",
                          hint="put the settings under a [fit] header, e.g. speedup = 2.0")
    others = sorted(k for k in doc if k != "fit")
    if others:
        raise ConfigError(f"{path}: unexpected top-level key {others[0]!r} (only [fit] is read)",
                          hint="move it into the [fit] table or remove it")
    filled = {"model": "?", "data": "?", **table}
    try:
        checked = config.from_dict(_Unchecked, filled, source=f"{path} [fit]")
    except ConfigError:
        raise
    values = {k: getattr(checked, k) for k in table}
    if "input_shape" in values and values["input_shape"] is not None:
        values["input_shape"] = tuple(values["input_shape"])
    for key in ("targets_file", "profiles_file"):
        if key in values:
            values[key] = tuple(values[key])
    return values


@dataclass(frozen=True)
class _Unchecked(FitSettings):
    """FitSettings whose value rules run later, once flags are merged (types are checked here)."""

    def _check(self) -> None:
        return None


def auto_measure_batch(macs_per_input: int, relative: bool) -> int:
    """The batch timed when the user does not choose one; see :class:`FitSettings`."""
    if not relative or macs_per_input <= 0:
        return 1
    wanted = AUTO_BATCH_MACS / macs_per_input
    if wanted <= 1:
        return 1
    return int(min(AUTO_BATCH_MAX, 2 ** round(math.log2(wanted))))


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
