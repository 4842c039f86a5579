"""The runner's side of the conversation: its script, its output, and what a failure means.

:func:`parse_runner_output` turns what ``devices/runner.py`` printed (a marked JSON line, or
nothing and an exit status) into its result document or the one-line error that explains it: a
signal (``KILL`` is the OOM killer; ``ILL`` a runtime built for another CPU; ``SEGV`` a crash), a
missing interpreter or runtime, a model the device's runtime cannot load. :func:`readiness_problem`
reads a ``--probe`` answer (``targets check``). Used by the local and the SSH device alike, so both
report the same errors in the same words.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgeprune.errors import (
    DeviceOutOfMemoryError,
    MeasurementError,
    RuntimeMissingError,
    UsageError,
)

__all__ = ["MARKER", "MIN_DEVICE_PYTHON", "RUNNER_PATH", "TFLITE_MODULES", "RunAttempt",
           "parse_runner_output", "readiness_problem", "runner_sha", "signal_of"]

RUNNER_PATH = Path(__file__).resolve().parent / "runner.py"
MARKER = "EDGEPRUNE-RESULT "
# one measuring attempt in a device session: the runner's arguments after ``--model`` (a
# MeasureSettings' runner_args()) and a timeout (None: the device's default) -> its document
RunAttempt = Callable[[Sequence[str], float | None], dict[str, Any]]


def runner_sha() -> str:
    """The runner script's content hash: the name it gets on a device and part of cache keys."""
    return hashlib.sha256(RUNNER_PATH.read_bytes()).hexdigest()


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
        sig = signal_of(status, signal_name)
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


def signal_of(status: int, name: str | None) -> str | None:
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



MIN_DEVICE_PYTHON = (3, 6)
TFLITE_MODULES = ("ai_edge_litert", "tflite_runtime")


def readiness_problem(doc: dict[str, Any], *,
                      runtimes: Sequence[str] = ()) -> RuntimeMissingError | None:
    """Why a probed device cannot measure anything (``targets check``), or None when it can.

    ``doc`` is :func:`edgeprune.devices.measure.probe`'s answer; ``runtimes`` the profile's
    runtimes (which package the fix names first). Checks the device's Python version, numpy (the
    runner needs it for every measurement) and at least one model runtime (onnxruntime,
    ai_edge_litert or tflite_runtime).
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
