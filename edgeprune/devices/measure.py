"""Measure an artifact on a target: local subprocess or SSH, same runner, same result.

``measure_files(artifact, target, settings)`` measures files — an ``.onnx`` (with its external data)
or ``.tflite`` artifact — never models: :func:`edgeprune.pipeline.measuring.measure` is what
``fit``, ``gate`` and the CLI call, and it turns a spec or pruned directory into such a file first.
Each attempt is a fresh process running :mod:`edgeprune.devices.runner`; an attempt whose
coefficient of variation is above ``settings.cv_threshold`` is repeated (up to ``max_repeats``)
and the steadiest attempt kept; if even that one is noisy the result says so (``noisy=True``).

Where it runs: :class:`~edgeprune.devices.local.LocalDevice` (this machine, an ``fcntl`` lock
under the cache dir) or :class:`~edgeprune.devices.remote.RemoteDevice` (SSH: a lock on the
device, the device-side artifact cache, clean-up); what the runner's output means:
:mod:`edgeprune.devices.protocol`.

Results are cached here by artifact hash + settings + device (``$EDGEPRUNE_CACHE_DIR`` or
``~/.cache/edgeprune/results``). Noisy results are not cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune import config
from edgeprune._io import atomic_write_json
from edgeprune._signals import raise_if_interrupted
from edgeprune.devices.local import LocalDevice
from edgeprune.devices.protocol import runner_sha
from edgeprune.devices.remote import RemoteDevice
from edgeprune.devices.targets import Target
from edgeprune.errors import NotFoundError, UsageError

__all__ = ["ARTIFACT_SUFFIXES", "MeasureResult", "MeasureSettings", "cache_dir", "clear_cache",
           "default_files", "measure_files", "parse_input_shape", "probe"]

Progress = Callable[[dict[str, Any]], None]
ARTIFACT_SUFFIXES = (".onnx", ".tflite")


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure. ``None`` threads / default shape come from the target's profile."""

    runs: int = 50
    warmup: int = 10
    threads: int | None = None
    per_op: bool = False
    runtime: str = "auto"  # auto (by suffix), onnxruntime or tflite
    providers: tuple[str, ...] = ()  # onnxruntime providers; () = CPUExecutionProvider
    input_shapes: tuple[str, ...] = ()  # "NAME=1x3x224x224" or "1x3x224x224" for every input
    default_shape: tuple[int, ...] | None = None  # fills dynamic dims of same-rank inputs
    max_seconds: float = 60.0  # cap on the timed runs of one attempt (at least 10 runs kept)
    cv_threshold: float = 0.10
    max_repeats: int = 2
    seed: int = 0
    use_cache: bool = True
    timeout_s: float | None = None  # per attempt; None = the target's command timeout

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise UsageError(f"runs must be at least 1, got {self.runs}", hint="e.g. --runs 50")
        if self.warmup < 0:
            raise UsageError(f"warmup must be 0 or more, got {self.warmup}",
                             hint="e.g. --warmup 10")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"threads must be at least 1, got {self.threads}",
                             hint="omit --threads for the runtime's default")
        if self.max_repeats < 0:
            raise UsageError("max_repeats must be 0 or more", hint="e.g. 2")

    def runner_args(self) -> list[str]:
        args = ["--runs", str(self.runs), "--warmup", str(self.warmup),
                "--max-seconds", str(self.max_seconds), "--seed", str(self.seed),
                "--runtime", self.runtime]
        if self.threads:
            args += ["--threads", str(self.threads)]
        if self.providers:
            args += ["--providers", ",".join(self.providers)]
        for shape in self.input_shapes:
            args += ["--input-shape", shape]
        if self.default_shape:
            args += ["--default-shape", "x".join(str(d) for d in self.default_shape)]
        if self.per_op:
            args.append("--per-op")
        return args

    def cache_key(self) -> dict[str, Any]:
        data = config.to_dict(self)
        for volatile in ("use_cache", "timeout_s"):
            data.pop(volatile)
        return data


@dataclass(frozen=True)
class MeasureResult:
    """One measurement. Latencies in ms over the timed runs of the kept attempt."""

    artifact: str
    artifact_sha256: str
    artifact_size_bytes: int
    target: str
    where: str
    host: str | None
    runtime: str
    runtime_version: str | None
    providers: tuple[str, ...]
    threads: int | None
    inputs: dict[str, Any]
    warmup: int
    runs: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    cv: float  # std / mean over the timed runs (outliers count fully)
    noisy: bool  # robust_cv above cv_threshold after every allowed repeat
    cv_threshold: float
    attempts: int
    attempt_p50_ms: tuple[float, ...]
    peak_rss_mb: float | None
    session_create_ms: float
    first_run_ms: float
    device: dict[str, Any]
    per_op: dict[str, Any] | None = None
    cached: bool = False
    robust_cv: float | None = None  # (IQR / 1.349) / p50: what noise is judged on
    measured_at: str = ""
    wall_s: float = 0.0
    timings_s: dict[str, float] = field(default_factory=dict)
    runner: dict[str, Any] = field(default_factory=dict)
    # what was asked for, as the user named it: a model spec or pruned directory exported on the
    # fly (``artifact`` is then the cached export), else the artifact path itself
    model: str = ""

    def latency_ms(self, percentile: int = 90) -> float:
        """The latency budgets are judged on (p50, p90, p95 or p99)."""
        if percentile not in (50, 90, 95, 99):
            raise UsageError(f"no p{percentile} in measurements", hint="use 50, 90, 95 or 99")
        return float(getattr(self, f"p{percentile}_ms"))

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasureResult:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("providers", "attempt_p50_ms"):
            kwargs[key] = tuple(kwargs.get(key) or ())
        return cls(**kwargs)


# --- artifacts ---------------------------------------------------------------------------------


def default_files(path: Path) -> list[Path]:
    """The files of an artifact when the caller names none: the artifact, plus ``<name>.data``
    beside an ``.onnx`` file when there is one (edgeprune's own external-data name). Other
    external-data names are only known by reading the ONNX graph, which a device does not do:
    :func:`edgeprune.artifacts.files.artifact_files` lists them (``pipeline.measuring`` passes
    its list)."""
    files = [path]
    sibling = path.with_name(path.name + ".data")
    if path.suffix.lower() == ".onnx" and sibling.is_file():
        files.append(sibling)
    return files


def _artifact_path(artifact: str | os.PathLike[str]) -> Path:
    path = Path(artifact).expanduser()
    if path.suffix.lower() not in ARTIFACT_SUFFIXES:
        raise UsageError(f"{str(artifact)!r} is not an .onnx or .tflite file",
                         hint="pass an exported artifact (a model spec or pruned model directory "
                         "is measured through edgeprune.measure)")
    if not path.is_file():
        raise NotFoundError(f"artifact {str(path)!r} does not exist", hint="check the path")
    return path


def parse_input_shape(item: str) -> tuple[int, ...]:
    """The dims of one ``[NAME=]1x3x224x224`` value (commas work too), read as the runner's
    ``parse_shape`` reads them (the runner stays a standalone script); a UsageError otherwise."""
    text = item.rpartition("=")[2]
    try:
        dims = tuple(int(d) for d in text.lower().replace(",", "x").split("x") if d.strip())
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise UsageError(f"cannot read --input-shape {item!r}",
                         hint="write it as 1x3x224x224, or NAME=1x3x224x224 for one input")
    return dims


def _digest(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode("utf-8") + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def cache_dir() -> Path:
    env = os.environ.get("EDGEPRUNE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "edgeprune"



# --- the API -----------------------------------------------------------------------------------


def measure_files(
    artifact: str | os.PathLike[str],
    target: Target,
    settings: MeasureSettings | None = None,
    *,
    profile: Any = None,
    progress: Progress | None = None,
    model: str | None = None,
    files: Sequence[str | os.PathLike[str]] | None = None,
) -> MeasureResult:
    """Measure ``artifact`` (.onnx/.tflite) on ``target``; see the module docstring.

    ``files`` are what the device needs, the artifact first (default: :func:`default_files`).
    ``model`` is the spec or pruned directory ``artifact`` was exported from: progress and the
    result name it instead of the export's cache file.
    """
    started = time.monotonic()
    settings = _with_profile_defaults(settings or MeasureSettings(), target, profile)
    path = _artifact_path(artifact)
    label = model or path.name
    paths = [Path(f) for f in files] if files else default_files(path)
    digest = _digest(paths)
    size = sum(f.stat().st_size for f in paths)
    emit = progress or (lambda event: None)
    key = _cache_key(digest, settings, target)
    cache_file = cache_dir() / "results" / f"{key}.json"
    asked = model or str(artifact)
    if settings.use_cache and cache_file.is_file():
        with contextlib.suppress(OSError, ValueError, TypeError):
            cached = MeasureResult.from_dict(json.loads(cache_file.read_text()))
            emit({"stage": "cache", "message": f"cached result for {label} on {target.name}"})
            return dataclasses.replace(cached, cached=True, artifact=str(path), model=asked,
                                       wall_s=time.monotonic() - started)

    device = _device(target, emit, attempt_timeout_s=settings.timeout_s)
    attempts: list[dict[str, Any]] = []
    with device.session(paths, digest) as run_attempt:
        for attempt in range(1, settings.max_repeats + 2):
            raise_if_interrupted()
            emit({"stage": "run", "attempt": attempt,
                  "message": f"measuring {label} on {target.where}: {settings.warmup} warm-up "
                  f"+ {settings.runs} runs" + (f" (attempt {attempt})" if attempt > 1 else "")})
            attempts.append(run_attempt(settings.runner_args(), settings.timeout_s))
            cv = _noise(attempts[-1])
            if cv <= settings.cv_threshold:
                break
            if attempt <= settings.max_repeats:
                emit({"stage": "repeat", "message": f"noisy (CV {cv:.1%} > "
                      f"{settings.cv_threshold:.0%}); repeating in a fresh process"})
    best = min(attempts, key=_noise)
    result = dataclasses.replace(
        _result(best, attempts, path, digest, size, target, settings, device.timings,
                time.monotonic() - started), model=asked)
    if settings.use_cache and not result.noisy:
        with contextlib.suppress(OSError):
            atomic_write_json(cache_file, result.to_dict())
    return result


def probe(target: Target, *, progress: Progress | None = None) -> dict[str, Any]:
    """Device facts and runtimes present (with versions) — what ``targets check`` reports; see
    :func:`edgeprune.devices.protocol.readiness_problem` for what it means."""
    emit = progress or (lambda event: None)
    device = _device(target, emit)
    with device.session([], "") as _run:
        doc = device.probe()
    doc["where"] = target.where
    doc["python"] = device.python
    doc["timings_s"] = device.timings
    return doc


def clear_cache() -> int:
    """Remove every cached result; returns how many were removed."""
    results = cache_dir() / "results"
    count = len(list(results.glob("*.json"))) if results.is_dir() else 0
    shutil.rmtree(results, ignore_errors=True)
    return count


# --- helpers -----------------------------------------------------------------------------------


def _device(target: Target, emit: Progress, *,
            attempt_timeout_s: float | None = None) -> LocalDevice | RemoteDevice:
    if target.is_local:
        return LocalDevice(target, emit, lock_dir=cache_dir() / "locks")
    return RemoteDevice(target, emit, attempt_timeout_s=attempt_timeout_s)


def _with_profile_defaults(
    settings: MeasureSettings, target: Target, profile: Any
) -> MeasureSettings:
    if profile is None and target.profile:
        from edgeprune.devices.profiles import load_profile

        try:
            profile = load_profile(target.profile)
        except NotFoundError:
            profile = None
    if profile is None:
        return settings
    changes: dict[str, Any] = {}
    if settings.threads is None and profile.threads:
        changes["threads"] = profile.threads
    if settings.default_shape is None and profile.input_shape:
        changes["default_shape"] = tuple(profile.input_shape)
    return dataclasses.replace(settings, **changes) if changes else settings


def _cache_key(digest: str, settings: MeasureSettings, target: Target) -> str:
    ident = {"artifact": digest, "settings": settings.cache_key(), "runner": runner_sha(),
             "target": target.name, "python": target.python or "",
             "env": dict(target.env),
             "ssh": None if target.ssh is None else
             [target.ssh.host, target.ssh.port, target.ssh.login]}
    if target.is_local:
        ident["python"] = target.python or sys.executable
    blob = json.dumps(ident, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:32]


def _noise(attempt: dict[str, Any]) -> float:
    """The dispersion noise is judged on: the runner's robust CV (IQR-based), else plain CV."""
    value = attempt.get("robust_cv")
    return float(value if value is not None else attempt["cv"])


def _result(best: dict[str, Any], attempts: list[dict[str, Any]], path: Path, digest: str,
            size: int, target: Target, settings: MeasureSettings, timings: dict[str, float],
            wall_s: float) -> MeasureResult:
    stats = {k: float(best[k]) for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms",
                                         "std_ms", "min_ms", "max_ms", "cv")}
    extras = {k: best.get(k) for k in ("import_ms", "rss_start_mb", "rss_before_load_mb",
                                       "rss_end_mb", "peak_rss_source", "cpu_freq_end_mhz",
                                       "temperature_end_c", "capped", "runs_requested",
                                       "numpy_version", "runner_version")}
    return MeasureResult(
        artifact=str(path), artifact_sha256=digest, artifact_size_bytes=size,
        target=target.name, where=target.where,
        host=None if target.ssh is None else target.ssh.host,
        runtime=best["runtime"], runtime_version=best.get("runtime_version"),
        providers=tuple(best.get("providers") or ()), threads=best.get("threads"),
        inputs=best.get("inputs") or {}, warmup=int(best["warmup"]), runs=int(best["runs"]),
        **stats, robust_cv=_noise(best), noisy=_noise(best) > settings.cv_threshold,
        cv_threshold=settings.cv_threshold,
        attempts=len(attempts), attempt_p50_ms=tuple(float(a["p50_ms"]) for a in attempts),
        peak_rss_mb=best.get("peak_rss_mb"), session_create_ms=float(best["session_create_ms"]),
        first_run_ms=float(best["first_run_ms"]), device=best.get("device") or {},
        per_op=best.get("per_op"), cached=False,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        wall_s=wall_s, timings_s=dict(timings), runner=extras)
