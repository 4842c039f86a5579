"""What a fit run is asked to do: :class:`FitSettings` and its ``[fit]`` TOML table.

The settings are nested frozen sections, one per ``[fit.<section>]`` TOML table and one
argument group of ``edgeprune fit``::

    [fit.source]    model, weights, input_shape, data, seed
    [fit.device]    target, profile, identity_file, known_hosts, ... (as `edgeprune measure`)
    [fit.budget]    latency_ms | speedup, max_accuracy_drop, memory_mb, size_mb
    [fit.search]    strategy, criterion, round_to, max_ratio, max_steps, ...
    [fit.finetune]  batch_size, step_epochs, step_batches, final_epochs, final_batches, lr, ...
    [fit.measure]   measure_batch, threads, runs, warmup, ..., noise_margin, verify_pairs
    [fit.output]    exporter, tflite

Every setting is declared once, as a field of its section; its metadata (help, metavar, the flag
when it is not ``--<name>``) is what ``edgeprune fit`` generates its flags from. Setting names are
unique across sections, so the flat form still works where it is convenient:
``FitSettings(model=..., data=..., speedup=2)``, ``settings.replace(round_to=16)``, a flat
``[fit]`` table and the flat ``settings.json`` of runs written before the sections existed.
Unknown keys and wrong types are one :class:`~edgeprune.errors.ConfigError` naming the file, the
key and the fix (:mod:`edgeprune.config`); value rules (``speedup`` at least 1, ...) are a
:class:`~edgeprune.errors.UsageError` naming the flag.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from edgeprune import config
from edgeprune.errors import ConfigError, UsageError

__all__ = ["SECTIONS", "FitBudget", "FitDevice", "FitFinetune", "FitMeasure", "FitOutput",
           "FitSearch", "FitSettings", "FitSource", "auto_measure_batch", "flat_view",
           "load_fit_table", "section_of", "setting", "setting_fields"]

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


def setting(default: Any, help: str = "", *, metavar: str | None = None,
            flag: str | None = None, exclusive: str | None = None) -> Any:
    """A section field and what its command-line flag needs: ``--<flag or name>``, help text,
    metavar; flags sharing an ``exclusive`` name are mutually exclusive."""
    return field(default=default, metadata={"help": help, "metavar": metavar, "flag": flag,
                                            "exclusive": exclusive})


@dataclass(frozen=True)
class FitSource:
    """The model to fit and the real data it is fine-tuned and scored on."""

    TITLE: ClassVar[str | None] = None  # the flags' argument group (None: the command's own)

    model: str = setting("", "model spec (builtin:NAME, torchvision:NAME, file.py:factory, ...)",
                         metavar="SPEC")
    weights: str | None = setting(None, "state dict for the model", metavar="FILE")
    input_shape: tuple[int, ...] | None = setting(
        None, "model input shape, batch 1 if omitted (default: what the spec knows)",
        metavar="[N,]C,H,W")
    data: str = setting("", "real data: builtin:mnist5k, imagefolder:PATH, cifar10:PATH, "
                        "file.py:factory", metavar="SPEC")
    seed: int = setting(0, "seed of the data split, calibration, pruning and fine-tuning "
                        "(default 0)", metavar="N")

    def __post_init__(self) -> None:
        if self.input_shape is not None and not isinstance(self.input_shape, tuple):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))


@dataclass(frozen=True)
class FitDevice:
    """How to reach the target (as ``edgeprune measure``'s flags); None / empty = its own."""

    # the flags are cli.targets.add_target_options' (shared with measure and gate); the fit
    # parser checks they name exactly these fields
    TITLE: ClassVar[str | None] = "device"

    target: str = "local"
    profile: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    python: str | None = None
    targets_file: tuple[str, ...] = ()
    profiles_file: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("targets_file", "profiles_file"):
            if not isinstance(getattr(self, key), tuple):
                object.__setattr__(self, key, tuple(str(v) for v in getattr(self, key)))


@dataclass(frozen=True)
class FitBudget:
    """Budget overrides; ``None`` = the target profile's budget.

    ``latency_ms`` (absolute, per measured batch) or ``speedup`` (the unpruned model's latency,
    measured side by side with each candidate, ÷ speedup), ``max_accuracy_drop`` (percentage
    points), ``memory_mb`` (peak RSS while measuring) and ``size_mb`` (ONNX file size).
    """

    TITLE: ClassVar[str | None] = "budgets (override the profile's)"

    latency_ms: float | None = setting(
        None, "latency budget in ms per measured batch (batch 1 unless --measure-batch)",
        metavar="X", exclusive="latency")
    speedup: float | None = setting(
        None, "latency budget as a speed-up over the unpruned model measured in the same run, "
        "side by side", metavar="X", exclusive="latency")
    max_accuracy_drop: float | None = setting(None, "allowed top-1 loss in percentage points",
                                              metavar="P")
    memory_mb: float | None = setting(
        None, "peak RSS budget while measuring (judged at the measured batch)", metavar="M")
    size_mb: float | None = setting(None, "ONNX size budget", metavar="S")


@dataclass(frozen=True)
class FitSearch:
    """Which widths are tried: the strategy (:mod:`edgeprune.fit.search`) and its knobs.

    ``tradeoff_points``: candidates added after the search at other latencies (a safety point
    ``noise_margin`` below the choice — the first fallback if the final re-measure misses —
    then looser and tighter budgets) so the report shows the curve
    (:mod:`edgeprune.fit.tradeoff`); 0 = none.
    """

    TITLE: ClassVar[str | None] = "search"

    strategy: str = setting(
        "auto", "search strategy: auto (default: knapsack with a latency budget, else "
        "uniform), knapsack, netadapt or uniform (the baseline)", metavar="NAME")
    criterion: str = setting("l2", "importance (default l2)", metavar="NAME")
    round_to: int = setting(1, "keep channel counts multiples of N (SIMD width: 16 for AVX-512 "
                            "onnxruntime kernels)", metavar="N")
    max_ratio: float = setting(0.9, "no group loses more than this fraction (default 0.9)",
                               metavar="R")
    max_steps: int = setting(12, metavar="N")
    uniform_tolerance: float = setting(
        0.1, "uniform: stop when the ratio interval is this narrow (default 0.1)", metavar="T")
    netadapt_step: float = setting(
        0.1, "netadapt: latency cut per step, fraction of the unpruned (0.1)", metavar="F")
    tradeoff_points: int = setting(
        3, "candidates added after the search — a safety point --noise-margin below the choice "
        "(the fallback if its final re-measure misses), then looser and tighter latencies — to "
        "draw the trade-off curve in the report (default 3, 0 = none)", metavar="N")
    netadapt_proposals: int = setting(
        8, "netadapt: groups fine-tuned per step, those needing the fewest channels removed "
        "(default 8, 0 = all)", metavar="K")


@dataclass(frozen=True)
class FitFinetune:
    """The short fine-tunes between steps, the final one, and how candidates are scored."""

    TITLE: ClassVar[str | None] = "fine-tuning"

    batch_size: int = setting(64, "training/evaluation batch (default 64)", metavar="N")
    final_epochs: int = setting(2, "epochs of the final fine-tune (default 2)", metavar="N",
                                flag="epochs")
    final_batches: int = setting(0, "batches per final fine-tune epoch, 0 = all (default 0)",
                                 metavar="N")
    step_epochs: int = setting(1, "epochs of each short fine-tune between steps (default 1)",
                               metavar="N")
    step_batches: int = setting(20, "batches per short fine-tune epoch, 0 = all (default 20)",
                                metavar="N")
    lr: float = setting(0.01, "default 0.01", metavar="LR")
    eval_batches: int = setting(
        0, "val batches per candidate's accuracy, 0 = all (default 0)", metavar="N")


@dataclass(frozen=True)
class FitMeasure:
    """Measuring on the device.

    ``measure_batch`` is the batch of the ONNX that is timed; ``None`` picks it — 1 for an
    absolute budget (the deployable shape a profile's ``max_latency_ms`` speaks of), and for a
    relative budget enough inputs that one run is about a GMAC (see ``AUTO_BATCH_MACS``).
    ``threads``: intra-op threads; ``None`` = the profile's, else 1 on the ``local`` target (a
    shared machine is far steadier single-threaded), else the runtime's default.
    ``max_measurements`` caps the runner invocations of the whole fit; ``noise_margin`` is the
    relative distance from the latency budget within which a result is measured again before it
    is believed; ``verify_pairs`` re-measurements of the final model decide the outcome.
    """

    TITLE: ClassVar[str | None] = "measuring"

    measure_batch: int | None = setting(
        None, "batch of the timed ONNX (default: 1 for an absolute budget; for --speedup, "
        "enough inputs for about 1 GMAC a run)", metavar="N")
    threads: int | None = setting(
        None, "intra-op threads (default: the profile's; 1 on the local target)", metavar="N")
    runs: int = setting(30, "timed runs per measurement (default 30)", metavar="N")
    warmup: int = setting(5, "default 5", metavar="N")
    max_repeats: int = setting(
        0, "repeats of a noisy attempt inside one measurement (default 0)", metavar="N")
    max_measurements: int = setting(
        30, "cap on device measurements for the whole fit (default 30)", metavar="N")
    noise_margin: float = setting(
        0.15, "re-measure results within this fraction of the budget (0.15)", metavar="F")
    verify_pairs: int = setting(2, "re-measurements of the final model (default 2)",
                                metavar="N")


@dataclass(frozen=True)
class FitOutput:
    """The artifacts written besides ``model/`` and ``model.onnx``."""

    TITLE: ClassVar[str | None] = None

    exporter: str = setting("auto", "ONNX exporter (auto)", metavar="NAME")
    tflite: bool = setting(
        False, "also write model.tflite (needs the optional extra edgeprune[tflite])")


SECTIONS: Mapping[str, type] = {
    "source": FitSource, "device": FitDevice, "budget": FitBudget, "search": FitSearch,
    "finetune": FitFinetune, "measure": FitMeasure, "output": FitOutput}
# setting name -> its section (names are unique across sections)
_SECTION_OF: dict[str, str] = {f.name: name for name, cls in SECTIONS.items()
                               for f in fields(cls)}


def section_of(name: str) -> str:
    """The section a setting belongs to (``"speedup"`` -> ``"budget"``); KeyError if none."""
    return _SECTION_OF[name]


@dataclass(frozen=True, init=False)
class FitSettings:
    """Everything that decides a fit's result; stored as ``settings.json`` in the run directory.

    Built from sections (``FitSettings(budget=FitBudget(speedup=2), ...)``), from setting names
    (``FitSettings(model=..., data=..., speedup=2)``) or both (names override their section's
    value); read as ``settings.budget.speedup``. The fields are the sub-tables of a ``[fit]``
    TOML table (see :func:`load_fit_table`).
    """

    source: FitSource
    device: FitDevice
    budget: FitBudget
    search: FitSearch
    finetune: FitFinetune
    measure: FitMeasure
    output: FitOutput

    def __init__(self, **given: Any) -> None:
        by_section: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in given.items():
            if key in SECTIONS:
                continue
            if key not in _SECTION_OF:
                close = difflib.get_close_matches(key, [*_SECTION_OF, *SECTIONS], n=1)
                raise TypeError(f"FitSettings got an unknown setting {key!r}"
                                + (f"; did you mean {close[0]!r}?" if close else ""))
            by_section[_SECTION_OF[key]][key] = value
        for name, cls in SECTIONS.items():
            value = given.get(name)
            if value is None:
                value = cls(**by_section[name])
            elif not isinstance(value, cls):
                raise TypeError(f"FitSettings {name} must be a {cls.__name__}, "
                                f"got {type(value).__name__}")
            elif by_section[name]:
                value = dataclasses.replace(value, **by_section[name])
            object.__setattr__(self, name, value)
        self._check()

    def __getattr__(self, name: str) -> Any:  # only reached when the attribute is not found
        section = _SECTION_OF.get(name)
        if section is None:
            raise AttributeError(f"'FitSettings' object has no attribute {name!r}")
        raise AttributeError(f"'FitSettings' object has no attribute {name!r}: it is "
                             f"settings.{section}.{name}")

    def _check(self) -> None:
        budget, search, meas = self.budget, self.search, self.measure
        if not self.source.model or not self.source.data:
            raise UsageError("fit needs a model and data",
                             hint="e.g. model='builtin:mnist-cnn', data='builtin:mnist5k' "
                             "(--model, --data)")
        if budget.latency_ms is not None and budget.speedup is not None:
            raise UsageError("both --latency-ms and --speedup given",
                             hint="keep one: an absolute budget or a speed-up over the unpruned "
                             "model")
        for key in ("latency_ms", "memory_mb", "size_mb"):
            value = getattr(budget, key)
            if value is not None and not value > 0:
                raise UsageError(f"{key} must be positive, got {value}",
                                 hint="give a positive number")
        if budget.speedup is not None and not budget.speedup >= 1:
            raise UsageError(f"speedup must be at least 1, got {budget.speedup}",
                             hint="e.g. --speedup 1.5 for 1.5× faster than the unpruned model")
        if budget.max_accuracy_drop is not None and not 0 <= budget.max_accuracy_drop <= 100:
            raise UsageError("max accuracy drop must be in [0, 100] points",
                             hint="e.g. --max-accuracy-drop 1.0")
        if not 0 < search.max_ratio < 1:
            raise UsageError(f"max_ratio must be in (0, 1), got {search.max_ratio}",
                             hint="e.g. 0.9")
        if not 0 <= meas.noise_margin < 1:
            raise UsageError(f"noise_margin must be in [0, 1), got {meas.noise_margin}",
                             hint="e.g. 0.15 (re-measure results within 15% of the budget)")
        for section, key in (("search", "round_to"), ("finetune", "batch_size"),
                             ("finetune", "step_epochs"), ("finetune", "final_epochs"),
                             ("search", "max_steps"), ("measure", "runs"),
                             ("measure", "verify_pairs")):
            if getattr(getattr(self, section), key) < 1:
                raise UsageError(f"{key} must be at least 1", hint=f"set {key} to 1 or more")
        for key in ("measure_batch", "threads"):
            value = getattr(meas, key)
            if value is not None and value < 1:
                raise UsageError(f"{key} must be at least 1", hint=f"set {key} to 1 or more, "
                                 "or leave it out to let fit choose")
        for section, key in (("finetune", "step_batches"), ("finetune", "final_batches"),
                             ("finetune", "eval_batches"), ("measure", "warmup"),
                             ("measure", "max_repeats"), ("search", "netadapt_proposals"),
                             ("search", "tradeoff_points")):
            if getattr(getattr(self, section), key) < 0:
                raise UsageError(f"{key} must be 0 or more", hint=f"set {key} to 0 or more")
        least = 3 + 2 * meas.verify_pairs
        if meas.max_measurements < least:
            raise UsageError(f"max_measurements {meas.max_measurements} leaves no room to "
                             f"search: the unpruned model, the smallest allowed model and the "
                             f"final check take {least}",
                             hint=f"set max_measurements to {least + 6} or more")

    def to_dict(self) -> dict[str, Any]:
        """``{section: {setting: value}}`` with JSON/TOML types (what settings.json holds)."""
        data: dict[str, Any] = config.to_dict(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "settings") -> FitSettings:
        """Settings as :meth:`to_dict` wrote them, or flat as runs before the sections did.

        Keys a run written by an older version lacks get the values that reproduce it
        (``LEGACY_DEFAULTS``); an unknown key or a wrong type is a :class:`ConfigError` naming
        ``source``, the key and the fix.
        """
        given = _given(data, source)
        return cls(**{**LEGACY_DEFAULTS, **given})

    def replace(self, **changes: Any) -> FitSettings:
        """A copy with ``changes`` (sections or setting names, as the constructor takes)."""
        return FitSettings(**{**{f.name: getattr(self, f.name) for f in fields(self)},
                              **changes})


def _given(table: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The settings a ``[fit]`` table (or a stored settings dict) gives, by name, typed.

    Sub-tables (``[fit.budget]``) and flat keys (``speedup = 2``, the form before sections) are
    both read; each value is checked by :func:`edgeprune.config.from_dict` against its section,
    so an error names the key as it was written (``budget.speedup`` or ``speedup``).
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: expected a table of settings, got "
                          f"{type(table).__name__}", hint="write it as a [fit] table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in SECTIONS:
            typed = config.from_dict(SECTIONS[key], value, source=source, prefix=f"{key}.")
            names = list(value)
        elif key in _SECTION_OF:
            typed = config.from_dict(SECTIONS[_SECTION_OF[key]], {key: value}, source=source)
            names = [key]
        else:
            close = difflib.get_close_matches(key, [*_SECTION_OF, *SECTIONS], n=1, cutoff=0.6)
            where = (f" (in [fit.{_SECTION_OF[close[0]]}])" if close and close[0] in _SECTION_OF
                     else "")
            raise ConfigError(f"{source}: key '{key}': unknown key",
                              hint=f"did you mean {close[0]!r}{where}?" if close else
                              f"remove it; the sections are {', '.join(SECTIONS)}")
        for name in names:
            if name in out:
                raise ConfigError(f"{source}: key '{name}': given twice",
                                  hint=f"keep it once, in [fit.{_SECTION_OF[name]}]")
            out[name] = getattr(typed, name)
    return out


def flat_view(data: Mapping[str, Any]) -> dict[str, Any]:
    """Stored settings (sectioned, or flat as older runs wrote them) as ``{setting: value}``;
    unchecked, for reading a run's settings.json (the report)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, Mapping):
            out.update(value)
        else:
            out[key] = value
    return out


def setting_fields() -> Iterator[tuple[str, type, dataclasses.Field[Any]]]:
    """``(section, section class, field)`` of every setting, in declaration order."""
    for name, cls in SECTIONS.items():
        for f in fields(cls):
            yield name, cls, f


def load_fit_table(path: str | Path) -> dict[str, Any]:
    """The settings the ``[fit]`` table of a TOML file gives, by setting name, typed.

    Returns only the keys the file sets (command-line flags are laid over them before the
    settings are built); an unknown key or a wrong type is a :class:`ConfigError` naming the
    file, the key and the fix. Value rules run when the settings are built.
    """
    doc = config.read_toml(path)
    table = doc.get("fit")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: no [fit] table",
                          hint="put the settings under [fit.<section>] headers, e.g. "
                          "[fit.budget] speedup = 2.0")
    others = sorted(k for k in doc if k != "fit")
    if others:
        raise ConfigError(f"{path}: unexpected top-level key {others[0]!r} (only [fit] is read)",
                          hint="move it into the [fit] table or remove it")
    return _given(table, f"{path} [fit]")


def auto_measure_batch(macs_per_input: int, relative: bool) -> int:
    """The batch timed when the user does not choose one; see :class:`FitMeasure`."""
    if not relative or macs_per_input <= 0:
        return 1
    wanted = AUTO_BATCH_MACS / macs_per_input
    if wanted <= 1:
        return 1
    return int(min(AUTO_BATCH_MAX, 2 ** round(math.log2(wanted))))
