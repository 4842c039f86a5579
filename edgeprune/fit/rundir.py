"""The run directory: every file a fit writes, written atomically, and its resumable state.

Layout::

    OUT/settings.json     exact settings, resolved budgets and versions (torch, onnxruntime, ...)
    OUT/state.json        progress after the last completed step (what --resume continues from)
    OUT/measurements.jsonl  one line per device measurement, appended as it finishes
    OUT/models/<id>/      pruned model of every measured candidate (parents and the chosen one)
    OUT/model/            the chosen pruned model (``edgeprune.load``-able)
    OUT/model.onnx        its ONNX at batch 1: the deployable artifact
    OUT/model-b<N>.onnx   the same at the measured batch N (when N > 1): what was timed
    OUT/report.json, OUT/candidates.csv, OUT/report.html   rendered by :mod:`edgeprune.fit.report`
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeprune._io import atomic_write_json
from edgeprune.errors import OutputExistsError, UsageError

STATE_VERSION = 2
SETTINGS = "settings.json"
STATE = "state.json"


def versions() -> dict[str, str | None]:
    from edgeprune import __version__

    found: dict[str, str | None] = {"edgeprune": __version__, "python": platform.python_version()}
    # installed distributions' versions: a module's __version__ can lag its release
    # (torch-pruning 1.6.1 says 1.6.0)
    from importlib import metadata

    for name in ("torch", "onnxruntime", "onnx", "numpy", "torch_pruning"):
        try:
            found[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # files -----------------------------------------------------------------------------------
    @property
    def settings_file(self) -> Path:
        return self.path / SETTINGS

    @property
    def state_file(self) -> Path:
        return self.path / STATE

    def model_dir(self, cid: str) -> Path:
        return self.path / "models" / cid

    def onnx_scratch(self, cid: str) -> Path:
        return self.path / "scratch" / f"{cid}.onnx"

    # settings ----------------------------------------------------------------------------------
    def read_settings(self) -> dict[str, Any]:
        if not self.settings_file.is_file():
            raise UsageError(f"{str(self.path)!r} is not a fit run directory (no {SETTINGS})",
                             hint="pass the --out directory of an earlier edgeprune fit")
        return json.loads(self.settings_file.read_text(encoding="utf-8"))

    def is_run(self) -> bool:
        """Whether the directory holds a fit run: a settings.json written by edgeprune (a user's
        own settings.json in some folder does not make it one)."""
        try:
            doc = json.loads(self.settings_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and isinstance(doc.get("settings"), dict) and \
            isinstance(doc.get("versions"), dict) and "edgeprune" in doc["versions"]

    def start(self, settings: dict[str, Any], *, force: bool,
              normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> bool:
        """Prepare the directory; True when an earlier run with the same settings resumes.

        ``force`` starts over, discarding an earlier run in the directory (never a directory
        that is not a fit run). ``normalize`` brings stored settings written by an older
        version to today's form (keys it lacked get the values that reproduce its behaviour).
        """
        if self.path.exists() and not self.path.is_dir():
            raise OutputExistsError(f"{str(self.path)!r} is a file; fit writes a run directory",
                                    hint="choose another --out")
        if self.path.exists() and not self.is_run() and not self._empty():
            # never cleared or written into, even with --force: it may hold anything of the user's
            raise OutputExistsError(f"{str(self.path)!r} exists and is not a fit run directory",
                                    hint="choose another --out (an empty or new directory)")
        if self.state_file.is_file() and not force:
            stored = self.read_settings().get("settings") or {}
            if normalize is not None:
                stored = normalize(stored)
            if stored == settings:
                return True
            raise OutputExistsError(
                f"{str(self.path)!r} holds a fit run with other settings "
                f"({_differences(stored or {}, settings)})",
                hint="choose another --out, resume it as it was with --resume DIR, or pass "
                "--force to start over")
        elif self.path.exists() and not self._unstarted() and not force:
            raise OutputExistsError(f"{str(self.path)!r} holds a fit run directory that cannot "
                                    "be resumed (no state.json)", hint="choose another --out or "
                                    "pass --force to start over")
        if force and self.path.exists():
            self._clear()
        atomic_write_json(self.settings_file, {"settings": settings, "versions": versions()})
        return False

    def _empty(self) -> bool:
        return not any(self.path.iterdir())

    def _unstarted(self) -> bool:
        """Empty, or left by a fit that stopped before its first step (a bad data spec, an
        unknown target): only its settings, nothing measured — safe to start again."""
        for entry in self.path.iterdir():
            if entry.name == SETTINGS and entry.is_file():
                continue
            if entry.name == "scratch" and entry.is_dir() and not any(entry.iterdir()):
                continue
            return False
        return True

    def _clear(self) -> None:
        import shutil

        for name in (STATE, SETTINGS, "report.json", "candidates.csv", "report.html",
                     "model.onnx", "model.onnx.data", "measurements.jsonl"):
            (self.path / name).unlink(missing_ok=True)
        for path in self.path.glob("model-b*.onnx*"):
            path.unlink(missing_ok=True)
        for name in ("models", "model", "scratch"):
            shutil.rmtree(self.path / name, ignore_errors=True)

    # state -------------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        if not self.state_file.is_file():
            return None
        state = json.loads(self.state_file.read_text(encoding="utf-8"))
        if state.get("version") != STATE_VERSION:
            raise UsageError(f"{self.state_file} has state version {state.get('version')}",
                             hint="start the run again with --force")
        return state

    def write_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.state_file, {**state, "version": STATE_VERSION})


def _differences(stored: dict[str, Any], wanted: dict[str, Any], most: int = 3) -> str:
    """``key: X there, Y now`` for the first few settings that differ (``section.key`` for
    settings in sections)."""
    stored, wanted = _dotted(stored), _dotted(wanted)
    keys = sorted(set(stored) | set(wanted))
    diff = [f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} now" for k in keys
            if stored.get(k) != wanted.get(k)]
    more = f", and {len(diff) - most} more" if len(diff) > most else ""
    return "; ".join(diff[:most]) + more


def _dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out
