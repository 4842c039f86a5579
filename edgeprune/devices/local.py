"""The local device: the machine edgeprune runs on, measuring in a subprocess.

The runner runs with the current Python (or the target's ``python``) in a fresh temp dir, one
attempt per process, exactly as it runs on a remote device. Two measurements on this machine take
turns through an ``fcntl`` lock (released by the kernel if we die) in ``lock_dir``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from edgeprune.devices.protocol import RUNNER_PATH, RunAttempt, parse_runner_output
from edgeprune.devices.targets import Target
from edgeprune.errors import RuntimeMissingError, TargetError

__all__ = ["LocalDevice", "local_lock"]

Progress = Callable[[dict[str, Any]], None]


class LocalDevice:
    """The machine edgeprune runs on: the runner in a subprocess with the current Python."""

    def __init__(self, target: Target, emit: Progress, *, lock_dir: Path) -> None:
        self.target = target
        self.lock_dir = lock_dir
        self.emit = emit
        self.python = target.python or sys.executable
        self.timings: dict[str, float] = {}
        self.tmp: str | None = None

    @contextlib.contextmanager
    def session(self, files: Sequence[Path], digest: str) -> Iterator[RunAttempt]:
        with local_lock(self.target, self.emit, self.lock_dir), tempfile.TemporaryDirectory(
                prefix="edgeprune-run-") as tmp:
            self.tmp = tmp
            model = str(files[0].resolve()) if files else ""
            yield lambda args, timeout_s: self._run(["--model", model, *args], timeout_s or 600.0)

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
def local_lock(target: Target, emit: Progress, lock_dir: Path) -> Iterator[None]:
    """Hold this machine's lock for ``target`` (one file per target name in ``lock_dir``)."""
    import fcntl

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
