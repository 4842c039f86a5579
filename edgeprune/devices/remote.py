"""A device over SSH: the device lock, the device-side artifact cache, a run dir, clean-up.

Device lock: remote targets take a lock *on the device* — an atomic SFTP ``mkdir`` of
``<work_dir>/lock`` with an owner file and a heartbeat — because the contended resource is the
device, and several machines (a laptop and CI runners) may share one bench device; a local file
lock would not see the other machines. The heartbeat is the client's clock (boards without a
real-time clock may be hours off). A lock whose heartbeat is older than the longer of our command
timeout and the attempt timeout its holder declared, plus two minutes, is treated as left behind
by a crashed client and broken; so is a lock whose owner was a process on this machine that has
exited. Per-run temp dirs (``<work_dir>/runs/<uuid>``) are only created under the lock, so the
holder removes any it finds (left by a client killed outright). Ctrl-C or SIGTERM (via the CLI)
stops the remote runner and removes its run dir and the lock.

Artifacts are cached on the device by content hash (``<work_dir>/artifacts/<hash>``, the eight
most recently used kept, all dropped once if the disk fills up); the runner script by its own
hash (``<work_dir>/runner-<hash>.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from edgeprune.devices.protocol import RUNNER_PATH, RunAttempt, parse_runner_output, runner_sha
from edgeprune.devices.targets import Target
from edgeprune.errors import DeviceDiskFullError, TargetError

__all__ = ["KEEP_ARTIFACTS", "RemoteDevice", "owner_gone"]

Progress = Callable[[dict[str, Any]], None]
KEEP_ARTIFACTS = 8


class RemoteDevice:
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
                    yield lambda args, timeout_s: self._run(["--model", model, *args],
                                                            timeout_s)
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
        remote = f"{self.work}/runner-{runner_sha()[:12]}.py"
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
            if age > stale_after or owner_gone(owner):
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


def owner_gone(owner: str) -> bool:
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
