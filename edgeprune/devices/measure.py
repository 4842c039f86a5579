"""Measure an artifact on a target: local subprocess or SSH, same runner, same result.

``measure(artifact, target, settings)`` is the API ``fit`` and ``gate`` call. Each attempt is a
fresh process running :mod:`edgeprune.runner`; an attempt whose coefficient of variation is above
``settings.cv_threshold`` is repeated (up to ``max_repeats``) and the steadiest attempt kept; if
even that one is noisy the result says so (``noisy=True``).

Device lock: remote targets take a lock *on the device* — an atomic SFTP ``mkdir`` of
``<work_dir>/lock`` with an owner file and a heartbeat — because the contended resource is the
device, and several machines (a laptop and CI runners) may share one bench device; a local file
lock would not see the other machines. The heartbeat is the client's clock (boards without a
real-time clock may be hours off). A lock whose heartbeat is older than the longer of our command
timeout and the attempt timeout its holder declared, plus two minutes, is treated as left behind
by a crashed client and broken; so is a lock whose owner was a process on this machine that has
exited. Per-run temp dirs (``<work_dir>/runs/<uuid>``) are only created under the lock, so the
holder removes any it finds (left by a client killed outright). Ctrl-C or SIGTERM (via the CLI)
stops the remote runner and removes its run dir and the lock. The local target uses an ``fcntl``
lock under the cache dir (released by the kernel if we die).

Caches: artifacts are cached on the device by content hash (``<work_dir>/artifacts/<hash>``,
the eight most recently used kept, all dropped once if the disk fills up); results are cached
here by artifact hash + settings + device (``$EDGEPRUNE_CACHE_DIR`` or
``~/.cache/edgeprune/results``). Noisy results are not cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune import config
from edgeprune._io import atomic_write_json
from edgeprune._signals import raise_if_interrupted
from edgeprune.devices.targets import Target
from edgeprune.errors import (
    DeviceDiskFullError,
    DeviceOutOfMemoryError,
    MeasurementError,
    NotFoundError,
    RuntimeMissingError,
    TargetError,
    UsageError,
)

__all__ = ["ARTIFACT_SUFFIXES", "MeasureResult", "MeasureSettings", "artifact_files",
           "cache_dir", "check_input_shapes", "measure", "parse_input_shape", "probe",
           "readiness_problem"]

Progress = Callable[[dict[str, Any]], None]
RunAttempt = Callable[["MeasureSettings"], dict[str, Any]]
ARTIFACT_SUFFIXES = (".onnx", ".tflite")
RUNNER_PATH = Path(__file__).resolve().parent / "runner.py"
MARKER = "EDGEPRUNE-RESULT "
KEEP_ARTIFACTS = 8


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


def _artifact_for(model_arg: str | os.PathLike[str], *, weights: str | None = None,
                  input_shape: Sequence[int] | None = None,
                  progress: Progress | None = None) -> Path:
    """Resolve the MODEL argument to an artifact file the runner can load.

    ``.onnx``/``.tflite`` files are used as they are. A model spec or a pruned model directory
    is exported to ONNX on the fly (checked against PyTorch) into the local cache, keyed by the
    spec, the weights' content and the input shape, so a second measure reuses the export.
    """
    path = Path(model_arg).expanduser()
    if path.suffix.lower() in ARTIFACT_SUFFIXES:
        if not path.is_file():
            raise NotFoundError(f"artifact {str(path)!r} does not exist", hint="check the path")
        return path
    return _export_on_the_fly(str(model_arg), weights, input_shape, progress)


def _export_on_the_fly(spec: str, weights: str | None, input_shape: Sequence[int] | None,
                       progress: Progress | None) -> Path:
    import hashlib

    from edgeprune.artifacts.onnx_export import export_onnx
    from edgeprune.models import pruned_dir
    from edgeprune.models.load import default_input_shape, load_model
    from edgeprune.models.spec import parse_model_spec

    try:
        parse_model_spec(spec)
    except UsageError:
        raise
    except Exception:
        raise UsageError(f"{spec!r} is not an .onnx or .tflite file, nor a model spec",
                         hint="pass an exported artifact, a pruned model directory or a spec "
                         "such as builtin:mnist-cnn") from None
    digest = hashlib.sha256(spec.encode())
    if pruned_dir.is_pruned_dir(spec):
        digest.update(pruned_dir.read_manifest(spec).weights_sha256.encode())
    if weights:
        digest.update(Path(weights).read_bytes())
    model = load_model(spec, weights=weights)
    shape = tuple(input_shape or default_input_shape(model)
                  or default_input_shape(spec) or ())
    if not shape:
        raise UsageError(f"cannot tell the input shape of {spec!r}",
                         hint="pass --input-shape N,C,H,W")
    digest.update(repr(shape).encode())
    out = cache_dir() / "exports" / f"{digest.hexdigest()[:20]}.onnx"
    if out.is_file():
        return out
    import torch

    if progress:
        progress({"stage": "export", "message": f"exporting {spec} to ONNX {shape}"})
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    export_onnx(model, example, out, force=True)
    return out


def artifact_files(path: Path) -> list[Path]:
    """The artifact plus the external-data files an ONNX model declares (same directory)."""
    files = [path]
    if path.suffix.lower() != ".onnx":
        return files
    names: list[str] = []
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        tensors = list(model.graph.initializer)
        tensors += [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
        for tensor in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                for entry in tensor.external_data:
                    if entry.key == "location" and entry.value not in names:
                        names.append(entry.value)
    except ImportError:
        sibling = path.with_name(path.name + ".data")
        names = [sibling.name] if sibling.is_file() else []
    except Exception as exc:
        raise MeasurementError(f"cannot read ONNX model {path.name}: {exc}".splitlines()[0],
                               hint="check the file is a complete .onnx export") from None
    for name in names:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise MeasurementError(f"{path.name} declares external data outside its folder: {name}",
                                   hint="re-export with weights beside the model")
        data = path.parent / name
        if not data.is_file():
            raise NotFoundError(f"{path.name} needs its external data file {name!r}, not found "
                                f"beside it", hint="copy the .data file next to the .onnx file")
        files.append(data)
    return files


def check_input_shapes(path: Path, input_shapes: Sequence[str], *,
                       label: str | None = None) -> None:
    """Refuse ``--input-shape`` values an ONNX model's declared inputs contradict, before any
    runner starts (onnxruntime's own error names neither the shape it wants nor the fix).

    ``input_shapes`` are the runner's ``[NAME=]1x3x224x224`` strings (no name = every input).
    A fixed dim must match; a dynamic one takes any size; the rank must match whenever the model
    declares one. Dynamic is what onnxruntime treats as dynamic: a symbolic dim, an unset one or
    a negative one; a ``dim_value`` of 0 is a fixed size of zero there (it runs only on empty
    tensors). A NAME the model has no input of is refused too (the runner would ignore it).
    TFLite files, and machines without the ``onnx`` package, are left to the runner. ``label``
    names the model in messages (default: the file name).
    """
    if not input_shapes or path.suffix.lower() != ".onnx":
        return
    label = label or path.name
    requested: dict[str, tuple[str, list[int]]] = {}  # input name or "*" -> (as given, dims)
    for item in input_shapes:
        name, sep, _ = item.rpartition("=")
        requested[name if sep else "*"] = (item, list(parse_input_shape(item)))
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # no onnx package here, or unreadable: the runner says so in its words
        return
    init_names = {t.name for t in proto.graph.initializer}
    declared: dict[str, list[int | str] | None] = {}
    for value in proto.graph.input:
        if value.name in init_names:
            continue
        tensor = value.type.tensor_type
        declared[value.name] = ([int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0
                                 else (d.dim_param or "?") for d in tensor.shape.dim]
                                if tensor.HasField("shape") else None)
    unknown = [n for n in requested if n != "*" and n not in declared]
    if unknown:
        raise UsageError(f"{label} has no input named {unknown[0]!r} (--input-shape "
                         f"{requested[unknown[0]][0]}); its inputs: {', '.join(declared)}",
                         hint="name one of those inputs, or drop NAME= to shape every input")
    for name, dims in declared.items():
        item, want = requested.get(name) or requested.get("*") or ("", [])
        if not item or dims is None or _fits(dims, want):
            continue
        same_rank = len(want) == len(dims)
        fix = "x".join(str(d) if isinstance(d, int) else str(want[i] if same_rank else 1)
                       for i, d in enumerate(dims))
        if "=" in item or len(declared) > 1:
            fix = f"{name}={fix}"
        shown = "×".join(str(d) for d in dims)
        free = [str(d) for d in dims if not isinstance(d, int)]
        if 0 in dims:
            raise UsageError(f"input {name!r} is {shown} in {label}: a dimension of size 0, which "
                             "onnxruntime runs only on empty tensors",
                             hint="re-export the model with that dimension dynamic (named)")
        if not free:
            raise UsageError(f"input {name!r} is fixed at {shown} in {label}; --input-shape "
                             f"{item} does not match", hint=f"drop --input-shape or give {fix}")
        raise UsageError(f"input {name!r} is {shown} in {label} (only {', '.join(free)} can "
                         f"vary); --input-shape {item} does not match", hint=f"give {fix}")


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


def _fits(declared: Sequence[int | str], dims: Sequence[int]) -> bool:
    return len(declared) == len(dims) and all(
        not isinstance(d, int) or d == w for d, w in zip(declared, dims, strict=True))


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


def _runner_sha() -> str:
    return hashlib.sha256(RUNNER_PATH.read_bytes()).hexdigest()


# --- the API -----------------------------------------------------------------------------------


def measure(
    artifact: str | os.PathLike[str],
    target: Target,
    settings: MeasureSettings | None = None,
    *,
    profile: Any = None,
    progress: Progress | None = None,
    model: str | None = None,
) -> MeasureResult:
    """Measure ``artifact`` (.onnx/.tflite) on ``target``; see the module docstring.

    ``model`` is the spec or pruned directory ``artifact`` was exported from: progress and the
    result name it instead of the export's cache file. A spec given as ``artifact`` is exported
    here (at its default input shape) and named the same way.
    """
    started = time.monotonic()
    settings = _with_profile_defaults(settings or MeasureSettings(), target, profile)
    path = _artifact_for(artifact, progress=progress)
    exported = model is not None or Path(artifact).expanduser() != path
    label = (model or str(artifact)) if exported else path.name
    files = artifact_files(path)
    check_input_shapes(path, settings.input_shapes, label=label)
    digest = _digest(files)
    size = sum(f.stat().st_size for f in files)
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

    device = (_LocalDevice(target, emit) if target.is_local
              else _RemoteDevice(target, emit, attempt_timeout_s=settings.timeout_s))
    attempts: list[dict[str, Any]] = []
    with device.session(files, digest) as run_attempt:
        for attempt in range(1, settings.max_repeats + 2):
            raise_if_interrupted()
            emit({"stage": "run", "attempt": attempt,
                  "message": f"measuring {label} on {target.where}: {settings.warmup} warm-up "
                  f"+ {settings.runs} runs" + (f" (attempt {attempt})" if attempt > 1 else "")})
            attempts.append(run_attempt(settings))
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
    """Device facts and runtimes present (with versions) — what ``targets check`` reports."""
    emit = progress or (lambda event: None)
    device = _LocalDevice(target, emit) if target.is_local else _RemoteDevice(target, emit)
    with device.session([], "") as _run:
        doc = device.probe()
    doc["where"] = target.where
    doc["python"] = device.python
    doc["timings_s"] = device.timings
    return doc


MIN_DEVICE_PYTHON = (3, 6)
TFLITE_MODULES = ("ai_edge_litert", "tflite_runtime")


def readiness_problem(doc: dict[str, Any], *,
                      runtimes: Sequence[str] = ()) -> RuntimeMissingError | None:
    """Why a probed device cannot measure anything (``targets check``), or None when it can.

    ``doc`` is :func:`probe`'s answer; ``runtimes`` the profile's runtimes (which package the fix
    names first). Checks the device's Python version, numpy (the runner needs it for every
    measurement) and at least one model runtime (onnxruntime, ai_edge_litert or tflite_runtime).
    """
    where = doc.get("where") or "the device"
    python = doc.get("python") or "python3"
    device = doc.get("device") or {}
    version = _version_tuple(device.get("python"))
    if version is not None and version < MIN_DEVICE_PYTHON:
        return RuntimeMissingError(
            f"Python {device.get('python')} ({device.get('python_executable') or python}) on "
            f"{where} is too old: the runner needs Python 3.6 or newer",
            hint="install python3 (3.6+) on the device and point the target at it "
            "(`python = ...` or --python)")
    found = doc.get("runtimes") or {}

    def present(name: str) -> bool:
        return bool((found.get(name) or {}).get("present"))

    packages: list[str] = []
    if not present("numpy"):
        packages.append("numpy")
    has_runtime = present("onnxruntime") or any(present(m) for m in TFLITE_MODULES)
    if not has_runtime:
        packages.append(_runtime_package(runtimes, version))
    if not packages:
        return None
    if has_runtime:
        what = f"numpy is missing for {python} on {where} (the runner needs it)"
    elif "numpy" in packages:
        what = (f"numpy and a model runtime (onnxruntime, ai_edge_litert or tflite_runtime) are "
                f"missing for {python} on {where}")
    else:
        what = (f"no model runtime for {python} on {where}: onnxruntime, ai_edge_litert and "
                "tflite_runtime are all missing")
    also = ""
    if not has_runtime and packages[-1] == "onnxruntime":
        also = " (or ai-edge-litert / tflite-runtime to measure .tflite models)"
    return RuntimeMissingError(
        what, hint=f"install with: {shlex.quote(python)} -m pip install {' '.join(packages)}{also}")


def _runtime_package(runtimes: Sequence[str], version: tuple[int, ...] | None) -> str:
    """The runtime package to suggest: onnxruntime unless the profile only runs TFLite."""
    if runtimes and "onnxruntime" not in runtimes and "tflite" in runtimes:
        # ai-edge-litert wheels start at Python 3.10; older images use tflite-runtime
        return "tflite-runtime" if version is not None and version < (3, 10) else "ai-edge-litert"
    return "onnxruntime"


def _version_tuple(text: Any) -> tuple[int, ...] | None:
    parts = []
    for piece in str(text or "").split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) if parts else None


# --- helpers -----------------------------------------------------------------------------------


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
    ident = {"artifact": digest, "settings": settings.cache_key(), "runner": _runner_sha(),
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


def parse_runner_output(stdout: str, stderr: str, status: int, *, where: str,
                        python: str, signal_name: str | None = None) -> dict[str, Any]:
    """The runner's JSON document, or the one-line error that explains why there is none.

    ``status`` is -1 (SSH) or negative (local) when the runner died from a signal;
    ``signal_name`` (``KILL``, ``SEGV``, ...) says which when known.
    """
    doc = None
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                doc = json.loads(line[len(MARKER):])
            except ValueError:
                doc = None
            break
    last_err = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    if doc is None:
        if status == 127 or ("No such file or directory" in last_err and status in (126, 127)):
            raise RuntimeMissingError(
                f"Python interpreter {python!r} not found on {where}",
                hint="install python3 on the device or set `python = ...` in the target "
                "(e.g. a venv's bin/python)")
        if status == 126:
            raise RuntimeMissingError(f"{python!r} on {where} is not executable ({last_err})",
                                      hint="fix `python = ...` in the target")
        sig = _signal_of(status, signal_name)
        if sig is not None:
            _raise_for_signal(sig, stderr, last_err, where)
        if status < 0 or status in (137, 134) or (status != 0 and not stdout.strip()
                                                  and not last_err):
            how = "was killed" if status in (-1, 137) or status < 0 else f"exited with {status}"
            raise DeviceOutOfMemoryError(
                f"the runner on {where} {how} with no output — probably out of memory",
                hint="measure a smaller model or input, free memory on the device, or check "
                "`dmesg` there for the OOM killer")
        if "SyntaxError" in stderr:
            raise RuntimeMissingError(f"{python!r} on {where} is too old for the runner "
                                      f"({last_err})", hint="install python3 (3.6+) on the device "
                                      "and point the target at it (`python = ...` or --python)")
        raise MeasurementError(f"the runner on {where} failed (exit status {status}): "
                               f"{last_err or 'no output'}",
                               hint="run with EDGEPRUNE_DEBUG=1 for details")
    error = doc.get("error")
    if not error:
        return doc
    kind, message, package = error.get("kind"), error.get("message", ""), error.get("package")
    if kind == "runtime_missing":
        raise RuntimeMissingError(f"{package or 'a runtime'} missing on {where}: {message}",
                                  hint=f"install it on the device: {python} -m pip install "
                                  f"{package or 'onnxruntime'}")
    if kind == "out_of_memory":
        raise DeviceOutOfMemoryError(f"out of memory on {where}: {message}",
                                     hint="measure a smaller model or input, or free memory")
    if kind == "load_failed":
        raise MeasurementError(f"the runtime on {where} cannot load the artifact: {message}",
                               hint="check the opset/operators are supported by the device's "
                               "runtime version, or re-export the model")
    if kind == "bad_args":
        raise UsageError(f"runner rejected the settings: {message}", hint="fix the flag named")
    if kind == "run_failed":
        raise MeasurementError(f"measuring on {where} failed: {message}",
                               hint="check --input-shape against the model's inputs (rank, "
                               "fixed sizes), and that the device's runtime supports its operators")
    failed = MeasurementError(f"measuring on {where} failed: {message}",
                              hint="run with EDGEPRUNE_DEBUG=1 to see the runner's traceback")
    trace = error.get("traceback")
    if trace and hasattr(failed, "add_note"):  # shown with the traceback EDGEPRUNE_DEBUG prints
        failed.add_note("the runner's traceback on the device:\n" + trace.rstrip())
    raise failed


def _signal_of(status: int, name: str | None) -> str | None:
    """``KILL``, ``SEGV``, ... from an SSH exit-signal name, a negative local return code, or a
    shell's 128+N; None when the runner was not killed by a signal we can name."""
    import signal as _signal

    if name:
        return name.upper().removeprefix("SIG")
    number = -status if status < -1 else (status - 128 if status in (132, 134, 135, 136, 139)
                                         else None)
    if number is None:
        return None
    try:
        return _signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return None


_MEMORY_WORDS = ("bad_alloc", "MemoryError", "Cannot allocate memory", "out of memory")


def _raise_for_signal(sig: str, stderr: str, last_err: str, where: str) -> None:
    """Raise the error a runner killed by ``SIG<sig>`` means; KILL falls through to the
    out-of-memory error (what the kernel's OOM killer sends)."""
    said = f": {last_err}" if last_err else ""
    if sig == "KILL":
        raise DeviceOutOfMemoryError(
            f"the runner on {where} was killed (SIGKILL) — probably out of memory",
            hint="measure a smaller model or input, free memory on the device, or check "
            "`dmesg` there for the OOM killer")
    if sig == "ABRT" and any(w in stderr for w in _MEMORY_WORDS):
        raise DeviceOutOfMemoryError(
            f"the runner on {where} aborted out of memory{said}",
            hint="measure a smaller model or input, or free memory on the device")
    if sig == "ILL":
        raise MeasurementError(
            f"the runner on {where} crashed with an illegal instruction (SIGILL): the runtime "
            "was built for a different CPU",
            hint="install a runtime wheel built for the device's CPU (the vendor's or the "
            "distribution's build, or an older release)")
    if sig in ("SEGV", "BUS", "FPE", "ABRT"):
        raise MeasurementError(
            f"the runner on {where} crashed (SIG{sig}){said}",
            hint="a runtime bug or a model it mishandles: try another runtime version or "
            "re-export the model; `--target local` shows whether it runs at all")
    raise MeasurementError(
        f"the runner on {where} was stopped by SIG{sig} before it finished",
        hint="something on the device ended it (a watchdog, another user, a reboot); "
        "measure again")


# --- devices -----------------------------------------------------------------------------------


class _LocalDevice:
    """The machine edgeprune runs on: the runner in a subprocess with the current Python."""

    def __init__(self, target: Target, emit: Progress) -> None:
        self.target = target
        self.emit = emit
        self.python = target.python or sys.executable
        self.timings: dict[str, float] = {}
        self.tmp: str | None = None

    @contextlib.contextmanager
    def session(self, files: Sequence[Path], digest: str) -> Iterator[RunAttempt]:
        with _local_lock(self.target, self.emit), tempfile.TemporaryDirectory(
                prefix="edgeprune-run-") as tmp:
            self.tmp = tmp
            model = str(files[0].resolve()) if files else ""
            yield lambda settings: self._run(["--model", model, *settings.runner_args()],
                                             settings.timeout_s or 600.0)

    def probe(self) -> dict[str, Any]:
        return self._run(["--probe"], 120.0)

    def _run(self, args: list[str], timeout_s: float) -> dict[str, Any]:
        env = dict(os.environ)
        env.update(self.target.env)
        env["TMPDIR"] = self.tmp or tempfile.gettempdir()
        t0 = time.monotonic()
        try:
            proc = subprocess.run([self.python, str(RUNNER_PATH), *args], cwd=self.tmp, env=env,
                                  capture_output=True, text=True, timeout=timeout_s)
        except FileNotFoundError:
            raise RuntimeMissingError(f"Python interpreter {self.python!r} not found",
                                      hint="fix `python = ...` in the target") from None
        except subprocess.TimeoutExpired:
            raise TargetError(f"the runner did not finish within {timeout_s:g} s (stopped it)",
                              hint="raise --timeout, or lower --runs / --max-seconds") from None
        self.timings["run"] = self.timings.get("run", 0.0) + time.monotonic() - t0
        return parse_runner_output(proc.stdout, proc.stderr, proc.returncode,
                                   where=self.target.where, python=self.python)


@contextlib.contextmanager
def _local_lock(target: Target, emit: Progress) -> Iterator[None]:
    import fcntl

    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(target.name.encode()).hexdigest()[:16]
    with open(lock_dir / f"{name}.lock", "w") as fh:
        deadline = time.monotonic() + target.lock_timeout_s
        told = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TargetError(f"{target.name} is busy with another measurement",
                                      hint="wait for it to finish and retry") from None
                if not told:
                    emit({"stage": "lock", "message": f"waiting for another measurement on "
                          f"{target.name} to finish"})
                    told = True
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _RemoteDevice:
    """A device over SSH: lock, upload (cached by hash), run in a per-run temp dir, clean up."""

    def __init__(self, target: Target, emit: Progress, *,
                 attempt_timeout_s: float | None = None) -> None:
        from edgeprune.devices.transport.connection import Connection

        assert target.ssh is not None
        # how long one runner call may go without a heartbeat on the lock (others read it)
        self.attempt_timeout_s = attempt_timeout_s or target.ssh.command_timeout_s
        self.target = target
        self.emit = emit
        self.conn = Connection(target.ssh, progress=emit)
        self.python = target.remote_python()
        self.timings: dict[str, float] = {}
        self.run_dir = ""
        self.work = ""

    @contextlib.contextmanager
    def session(self, files: Sequence[Path], digest: str) -> Iterator[RunAttempt]:
        t0 = time.monotonic()
        self.emit({"stage": "connect", "message": f"connecting to {self.target.where}"})
        try:
            self.conn.open()
            if self.conn.accepted_host_key:
                self.emit({"stage": "hostkey", "message": f"recorded new host key "
                           f"{self.conn.accepted_host_key} for {self.conn.label} in "
                           f"{self.target.ssh.known_hosts if self.target.ssh else ''}"})
            self.work = self.conn.resolve(self.target.work_dir)
            self.conn.makedirs(self.work + "/runs")
            self.timings["connect"] = time.monotonic() - t0
            with self._device_lock():
                self._sweep_leftovers()
                self.run_dir = f"{self.work}/runs/{uuid.uuid4().hex}"
                self.conn.makedirs(self.run_dir)
                try:
                    self.runner = self._ensure_runner()
                    model = self._ensure_artifact(files, digest) if files else ""
                    yield lambda settings: self._run(
                        ["--model", model, *settings.runner_args()], settings.timeout_s)
                finally:
                    self._cleanup()
        finally:
            self.conn.close()

    def probe(self) -> dict[str, Any]:
        return self._run(["--probe"], 120.0)

    def _run(self, args: list[str], timeout_s: float | None) -> dict[str, Any]:
        env = dict(self.target.env)
        env["TMPDIR"] = self.run_dir
        t0 = time.monotonic()
        result = self.conn.run([self.python, self.runner, *args], cwd=self.run_dir, env=env,
                               timeout_s=timeout_s)
        self.timings["run"] = self.timings.get("run", 0.0) + time.monotonic() - t0
        self._heartbeat()
        return parse_runner_output(result.stdout, result.stderr, result.exit_status,
                                   where=self.target.where, python=self.python,
                                   signal_name=result.signal)

    def _ensure_runner(self) -> str:
        remote = f"{self.work}/runner-{_runner_sha()[:12]}.py"
        if not self.conn.exists(remote):
            tmp = f"{self.run_dir}/runner.py"
            self.conn.upload(RUNNER_PATH, tmp)
            self.conn.rename(tmp, remote)
            # runners of other edgeprune versions: a client that needs one again (under the
            # lock, as we are now) uploads it again
            for name, _mtime, is_dir in self.conn.listdir(self.work):
                if (not is_dir and name.startswith("runner-") and name.endswith(".py")
                        and f"{self.work}/{name}" != remote):
                    with contextlib.suppress(TargetError):
                        self.conn.remove_tree(f"{self.work}/{name}")
        return remote

    def _ensure_artifact(self, files: Sequence[Path], digest: str) -> str:
        cache = f"{self.work}/artifacts"
        entry = f"{cache}/{digest[:24]}"
        model = f"{entry}/{files[0].name}"
        if self.conn.exists(f"{entry}/.complete"):
            self.emit({"stage": "upload", "message": f"{files[0].name} already on the device"})
            self.conn.touch(entry)
            return model
        t0 = time.monotonic()
        self.conn.makedirs(cache)
        staging = f"{self.run_dir}/artifact"
        self.conn.makedirs(staging)
        try:
            for f in files:
                self.conn.upload(f, f"{staging}/{f.name}", progress=self.emit)
        except DeviceDiskFullError:
            # our own cache of earlier artifacts may be what fills a small SD card: drop it
            # (we hold the device lock, so no other measurement is using it) and try once more
            cached = [name for name, _m, is_dir in self.conn.listdir(cache) if is_dir]
            if not cached:
                raise
            self.emit({"stage": "upload", "message": f"disk full on the device: removing "
                       f"{len(cached)} cached artifact(s) and retrying"})
            for name in cached:
                self.conn.remove_tree(f"{cache}/{name}")
            self.conn.remove_tree(staging)
            self.conn.makedirs(staging)
            for f in files:
                self.conn.upload(f, f"{staging}/{f.name}", progress=self.emit)
        self.conn.write_text(f"{staging}/.complete", digest + "\n")
        if self.conn.exists(entry):
            self.conn.remove_tree(entry)  # an incomplete upload from an interrupted run
        self.conn.rename(staging, entry)
        self.timings["upload"] = time.monotonic() - t0
        self._evict(cache, keep=KEEP_ARTIFACTS)
        return model

    def _evict(self, cache: str, keep: int) -> None:
        entries = sorted((e for e in self.conn.listdir(cache) if e[2]), key=lambda e: -e[1])
        for name, _mtime, _is_dir in entries[keep:]:
            with contextlib.suppress(TargetError):
                self.conn.remove_tree(f"{cache}/{name}")

    def _sweep_leftovers(self) -> None:
        """Remove run dirs a killed client left behind (SIGKILL, power loss, a second Ctrl-C).

        Run dirs are only ever created under the device lock, which we hold now: whatever is in
        ``runs/`` belongs to no live measurement.
        """
        runs = f"{self.work}/runs"
        for name, _mtime, _is_dir in self.conn.listdir(runs):
            self.emit({"stage": "cleanup", "message": f"removing {runs}/{name} left behind by an "
                       "interrupted measurement"})
            with contextlib.suppress(TargetError):
                self.conn.remove_tree(f"{runs}/{name}")

    def _cleanup(self) -> None:
        """Remove this run's temp dir; a few tries (``rm -rf`` can race a runner's last writes,
        a link can drop), then leave it to the next measurement's sweep and say so."""
        if not self.run_dir:
            return
        for attempt in range(3):
            try:
                if attempt:
                    time.sleep(0.3 * attempt)
                    with contextlib.suppress(Exception):
                        self.conn.close()
                        self.conn.open()
                self.conn.remove_tree(self.run_dir)
                return
            except Exception as exc:  # cleanup must not mask the result
                failure = exc
        self.emit({"stage": "cleanup", "message": f"could not remove {self.run_dir} on "
                   f"{self.target.where} ({failure}); the next measurement there removes it"})

    # the device lock --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _device_lock(self) -> Iterator[None]:
        lock = f"{self.work}/lock"
        assert self.target.ssh is not None
        deadline = time.monotonic() + self.target.lock_timeout_s
        told = False
        while not self.conn.mkdir_exclusive(lock):
            age = time.time() - (self.conn.mtime(lock) or time.time())
            text = self.conn.read_text(f"{lock}/owner") or "unknown"
            owner = text.strip().splitlines()[0] if text.strip() else "unknown"
            # stale = no heartbeat for longer than the holder said one attempt may take
            declared = re.search(r"^timeout_s=([0-9.]+)$", text, re.MULTILINE)
            holder_timeout = float(declared.group(1)) if declared else 0.0
            stale_after = max(self.target.ssh.command_timeout_s, holder_timeout) + 120
            if age > stale_after or _owner_gone(owner):
                why = (f"no heartbeat for {age:.0f} s" if age > stale_after
                       else "its process on this machine is gone")
                self.emit({"stage": "lock", "message": f"breaking a stale device lock ({owner}, "
                           f"{why})"})
                self.conn.remove_tree(lock)
                continue
            if time.monotonic() > deadline:
                raise TargetError(f"{self.target.where} is busy: locked by {owner}",
                                  hint=f"wait and retry; if nothing is running, remove {lock} "
                                  "on the device")
            if not told:
                self.emit({"stage": "lock", "message": f"waiting for the device lock held by "
                           f"{owner}"})
                told = True
            time.sleep(1.0)
        self.lock = lock
        try:
            import getpass
            import socket

            self.conn.write_text(f"{lock}/owner", f"{getpass.getuser()}@{socket.gethostname()} "
                                 f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n"
                                 f"timeout_s={self.attempt_timeout_s:g}\n")
            # the heartbeat is our clock, not the device's: a board without a real-time clock
            # may be hours behind, which would make a fresh lock look stale to the next client
            self._heartbeat()
            yield
        finally:
            with contextlib.suppress(Exception):
                self.conn.remove_tree(lock)

    def _heartbeat(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.touch(self.lock)


def _owner_gone(owner: str) -> bool:
    """True when the lock's owner line names a process on *this* machine that has exited
    (a client killed outright, or interrupted twice): no need to wait for it to go stale."""
    import socket

    match = re.match(r"^\S+@(?P<host>\S+) pid (?P<pid>\d+) ", owner)
    if not match or match["host"] != socket.gethostname():
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, not ours
        return False
    return False


def clear_cache() -> int:
    """Remove every cached result; returns how many were removed."""
    results = cache_dir() / "results"
    count = len(list(results.glob("*.json"))) if results.is_dir() else 0
    shutil.rmtree(results, ignore_errors=True)
    return count
