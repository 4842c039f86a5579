"""Hardware profiles: what a device class is and which budgets must hold on it.

A profile is a TOML file under ``profiles/`` (shipped in the wheel), the user's config directory,
or a ``--profiles-file``; see :func:`edgeprune.config.search_dirs` for the order. Each file maps
1:1 onto :class:`Profile`; the file name (without ``.toml``) is the profile's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeprune import config
from edgeprune.config import FieldProblem
from edgeprune.errors import NotFoundError

__all__ = ["Budgets", "Percentile", "Profile", "arch_mismatch", "list_profiles", "load_profile",
           "load_profile_file"]

Percentile = Literal[50, 90, 95, 99]  # the latency percentiles a budget can be on
RUNTIMES = ("onnxruntime", "tflite", "tensorrt")


@dataclass(frozen=True)
class Budgets:
    """What must hold on the device. ``None`` means "no budget on this"."""

    max_latency_ms: float | None = None
    # a fraction of the unpruned model's measured latency on the same target (0.5 = twice as fast)
    max_latency_ratio: float | None = None
    latency_percentile: Percentile = 90
    max_peak_rss_mb: float | None = None
    max_model_size_mb: float | None = None
    # allowed top-1 accuracy loss in percentage points (1.0 = from 76.1 % down to 75.1 %)
    max_accuracy_drop_points: float | None = None

    def _check(self) -> None:
        if self.max_latency_ms is not None and self.max_latency_ratio is not None:
            raise FieldProblem("max_latency_ratio", "both max_latency_ms and max_latency_ratio set",
                               "keep one: an absolute budget or a ratio of the unpruned latency")
        for name in ("max_latency_ms", "max_peak_rss_mb", "max_model_size_mb"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise FieldProblem(name, f"must be positive, got {value}",
                                   "give a positive number or remove the key")
        if self.max_latency_ratio is not None and not 0 < self.max_latency_ratio <= 1:
            raise FieldProblem("max_latency_ratio",
                               f"must be in (0, 1], got {self.max_latency_ratio}",
                               "e.g. 0.5 for twice as fast as the unpruned model")
        drop = self.max_accuracy_drop_points
        if drop is not None and not 0 <= drop <= 100:
            raise FieldProblem("max_accuracy_drop_points", f"must be in [0, 100], got {drop}",
                               "give percentage points, e.g. 1.0")


@dataclass(frozen=True)
class Profile:
    """A device class: architecture, resources, runtimes, defaults and budgets."""

    name: str
    description: str = ""
    arch: Literal["aarch64", "armv7l", "x86_64", "any"] = "aarch64"
    cores: int = 4
    memory_mb: int = 4096
    runtimes: tuple[str, ...] = ("onnxruntime",)
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    # default input shape (NCHW) for models whose input dims are dynamic
    input_shape: tuple[int, ...] = (1, 3, 224, 224)
    # intra-op threads for measurements; None = the runtime's default (usually all cores)
    threads: int | None = None
    budgets: Budgets = field(default_factory=Budgets)

    def _check(self) -> None:
        for rt in self.runtimes:
            if rt not in RUNTIMES:
                raise FieldProblem("runtimes", f"unknown runtime {rt!r}",
                                   f"use some of {', '.join(RUNTIMES)}")
        if self.cores < 1:
            raise FieldProblem("cores", "must be at least 1", "give the number of CPU cores")
        if self.memory_mb < 1:
            raise FieldProblem("memory_mb", "must be positive", "give the RAM in MiB")
        if self.threads is not None and self.threads < 1:
            raise FieldProblem("threads", "must be at least 1", "remove it for the default")
        if not self.input_shape or any(d < 1 for d in self.input_shape):
            raise FieldProblem("input_shape", "dimensions must be positive",
                               "e.g. input_shape = [1, 3, 224, 224]")

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)


_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64", "armv8l": "aarch64",
                 "armv7": "armv7l", "armhf": "armv7l"}


def arch_mismatch(profile: Profile | None, machine: str | None) -> str | None:
    """A one-line note when a device of another architecture is judged on ``profile``'s
    budgets (e.g. rpi4's absolute latency measured on an x86 laptop), else None."""
    if profile is None or not machine or profile.arch == "any":
        return None
    seen = _ARCH_ALIASES.get(machine.lower(), machine.lower())
    if seen == profile.arch:
        return None
    return (f"profile {profile.name} is for {profile.arch} devices but this was measured on "
            f"{machine}: its absolute latency budget describes another machine (measure on a "
            f"{profile.name} device, or budget a ratio to the unpruned model: fit --speedup, "
            f"gate --latency-ratio with --reference)")


def list_profiles(extra_files: Iterable[str | Path] = ()) -> dict[str, tuple[str, Path]]:
    """Every profile name -> (origin, path); origin is builtin, user or file."""
    return config.discover("profiles", extra_files)


def load_profile(name: str, *, extra_files: Iterable[str | Path] = ()) -> Profile:
    """Load the profile ``name`` (or a path to a ``.toml`` file) and validate it."""
    if name.endswith(".toml") or "/" in name:
        return load_profile_file(name)
    found = list_profiles(extra_files)
    if name not in found:
        import difflib

        close = difflib.get_close_matches(name, list(found), n=1)
        hint = (f"did you mean {close[0]!r}?" if close else
                f"known profiles: {', '.join(sorted(found)) or 'none'}; add one under "
                f"{config.user_config_dir() / 'profiles'} or pass --profiles-file")
        raise NotFoundError(f"no profile named {name!r}", hint=hint)
    return load_profile_file(found[name][1])


def load_profile_file(path: str | Path) -> Profile:
    path = Path(path)
    return config.load_file(Profile, path, defaults={"name": path.stem})


def replace_budgets(profile: Profile, **changes: Any) -> Profile:
    """A copy of ``profile`` with some budgets overridden (e.g. from CLI flags)."""
    return dataclasses.replace(profile, budgets=dataclasses.replace(profile.budgets, **changes))
