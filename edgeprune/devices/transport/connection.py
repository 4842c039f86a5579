"""SSH connection to a device — with the rest of :mod:`edgeprune.devices.transport`, the only
code that imports paramiko.

One :class:`Connection` per device: it connects lazily (:mod:`.connect`: host key checked against
the target's known-hosts file by :mod:`.hostkeys`, key file or agent only by :mod:`.identity`),
runs commands with every argument quoted under a small POSIX ``sh`` wrapper that reports the
remote PID and exit status (:mod:`.commands`), uploads over SFTP, and reconnects when the link
drops (:mod:`._retry`). Every paramiko or socket failure leaves here as one of the
:mod:`edgeprune.errors` classes with a one-line fix.
"""

from __future__ import annotations

import contextlib
import posixpath
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import paramiko

from edgeprune.devices.targets import SSHSettings
from edgeprune.devices.transport._retry import Dropped, Transient, link_guard
from edgeprune.devices.transport.commands import (
    CommandResult,
    await_pid,
    command_result,
    parse_pid,
    wrap_command,
)
from edgeprune.devices.transport.connect import connect_client
from edgeprune.errors import (
    DeviceDiskFullError,
    HostUnreachableError,
    TargetError,
)

__all__ = ["CommandResult", "Connection"]

Progress = Callable[[dict[str, Any]], None]

class Connection:
    """A lazily opened SSH connection (plus SFTP) to one device; use it as a context manager."""

    def __init__(self, settings: SSHSettings, *, progress: Progress | None = None) -> None:
        self.settings = settings
        self.progress = progress
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self.accepted_host_key: str | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Connection:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def label(self) -> str:
        s = self.settings
        return f"{s.login}@{s.host}:{s.port}"

    def open(self) -> None:
        """Connect, retrying timeouts and resets; refusals, auth and host keys fail at once."""
        if self.alive():
            return
        self.close()
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                self._client, self.accepted_host_key = connect_client(
                    self.settings, self.label, self.report)
                return
            except Transient as exc:
                if attempt == attempts:
                    raise HostUnreachableError(
                        f"cannot reach {self.label}: {exc.reason}",
                        hint="check the device is on, the host/port in the target, and the "
                        "network; raise connect_timeout_s for slow links",
                    ) from None
                self.report("reconnect", f"connecting to {self.label} failed ({exc.reason}); "
                            f"retrying ({attempt}/{attempts - 1})")
                time.sleep(min(2.0 * attempt, 5.0))

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._sftp = None
        self._client = None

    def alive(self) -> bool:
        """Whether the SSH transport is up (without a round trip)."""
        if self._client is None:
            return False
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def link_dropped(self, exc: BaseException) -> bool:
        """Whether ``exc`` (from an SFTP call) means the link is gone, rather than the device
        refusing the call on a live link: a dead link ends the SFTP channel (EOFError, "Socket
        is closed"), maybe before the transport notices."""
        sftp = self._sftp
        return (not isinstance(exc, OSError) or str(exc) == "Socket is closed"
                or not self.alive() or sftp is None or sftp.sock.closed)

    def report(self, stage: str, message: str) -> None:
        """A progress note (reconnects, host keys) for whoever is listening."""
        if self.progress:
            self.progress({"stage": stage, "message": message})

    # --- commands ---------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        retry: bool = True,
    ) -> CommandResult:
        """Run ``argv`` (each argument quoted) in ``cwd`` with ``env`` on the device.

        A dropped link is reconnected and the command re-run (``retry``); a timeout or Ctrl-C
        kills the remote process (its PID is reported on stderr first) before raising.
        """
        command = wrap_command(argv, cwd, env)
        attempts = (self.settings.retries + 1) if retry else 1
        orphan: str | None = None
        for attempt in range(1, attempts + 1):
            self.open()
            if orphan:
                # without a terminal the process outlives the dropped link: stop it before the
                # re-run, or the two would share the device (and skew a measurement)
                self._kill(orphan)
                orphan = None
            try:
                return self._exec(command, timeout_s or self.settings.command_timeout_s)
            except Dropped as exc:
                orphan = exc.pid
                self.close()
                if attempt == attempts:
                    raise TargetError(f"lost the connection to {self.label}: {exc.reason}",
                                      hint="check the device and network, then retry") from None
                self.report("reconnect", f"link to {self.label} dropped ({exc.reason}); "
                            f"reconnecting ({attempt}/{attempts - 1})")
        raise AssertionError("unreachable")

    def _exec(self, command: str, timeout_s: float) -> CommandResult:
        assert self._client is not None
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise Dropped("transport closed")
        try:
            chan = transport.open_session(timeout=self.settings.connect_timeout_s)
            chan.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise Dropped(str(exc) or type(exc).__name__) from None
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout_s
        pid: str | None = None
        try:
            while True:
                busy = False
                if chan.recv_ready():
                    out += chan.recv(65536)
                    busy = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    busy = True
                if pid is None and b"\n" in err:
                    pid = parse_pid(err)
                drained = not chan.recv_ready() and not chan.recv_stderr_ready()
                # a dead link closes every channel too (before the transport says it is dead),
                # and must not pass for a process that died without an exit status: a channel
                # the server closed has had its EOF first. (paramiko's exit_status_ready() is
                # true for any closed channel; exit_status stays -1 until the server sends one.)
                has_status = chan.exit_status != -1
                if not has_status and (not transport.is_active()
                                       or (chan.closed and not chan.eof_received)):
                    raise Dropped("connection closed during the command", pid)
                if has_status and drained:
                    break
                if chan.closed and not busy:
                    break
                if time.monotonic() > deadline:
                    self._kill(pid or await_pid(chan, err))
                    raise TargetError(
                        f"command on {self.label} did not finish within {timeout_s:g} s "
                        "(stopped it)",
                        hint="raise --timeout or command_timeout_s in the target, or lower "
                        "--runs / --max-seconds")
                if not busy:
                    time.sleep(0.005)
            status = chan.exit_status
        except KeyboardInterrupt:
            self._kill(pid or await_pid(chan, err))
            raise
        finally:
            with contextlib.suppress(Exception):
                chan.close()
        return command_result(command, status, out, err)

    def _kill(self, pids: str | None) -> None:
        """Best effort: stop a remote command we gave up on (timeout, Ctrl-C, a dropped link).

        ``pids`` is the wrapper's PID line: the command's PID, then its waiting wrapper's. The
        wrapper goes first (KILL: it has nothing left to report), then the command: TERM, up to
        2 s to exit, then KILL (quick: a second Ctrl-C may be coming).
        """
        ids = (pids or "").split()
        if not ids or not all(p.isdigit() for p in ids):
            return
        pid, wrapper = ids[0], ids[1:]
        with contextlib.suppress(Exception):
            assert self._client is not None
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                chan = transport.open_session(timeout=5)
                first = f"kill -KILL {' '.join(wrapper)} 2>/dev/null; " if wrapper else ""
                chan.exec_command(f"{first}kill -TERM {pid} 2>/dev/null; i=0; "
                                  f"while [ $i -lt 20 ] && kill -0 {pid} 2>/dev/null; do "
                                  f"sleep 0.1; i=$((i+1)); done; kill -KILL {pid} 2>/dev/null")
                chan.recv_exit_status()
                chan.close()

    # --- files ------------------------------------------------------------------------------

    def sftp(self) -> paramiko.SFTPClient:
        self.open()
        if self._sftp is None or self._sftp.sock.closed:
            assert self._client is not None
            try:
                self._sftp = self._client.open_sftp()
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise TargetError(f"{self.label} refused an SFTP session: {exc}",
                                  hint="enable the sftp subsystem in the device's sshd_config",
                                  ) from None
        return self._sftp

    @link_guard(retry=True)
    def home(self) -> str:
        if self._home is None:
            self._home = self.sftp().normalize(".")
        return self._home

    def resolve(self, path: str) -> str:
        """Absolute remote path; ``~`` and relative paths are taken from the login's home."""
        if path == "~":
            return self.home()
        if path.startswith("~/"):
            return posixpath.join(self.home(), path[2:])
        if not path.startswith("/"):
            return posixpath.join(self.home(), path)
        return path

    @link_guard(retry=True)
    def makedirs(self, path: str) -> None:
        sftp = self.sftp()
        parts = [p for p in path.split("/") if p]
        current = "/"
        for part in parts:
            current = posixpath.join(current, part)
            try:
                if not stat.S_ISDIR(sftp.stat(current).st_mode or 0):
                    raise TargetError(f"{current} on {self.label} is a file, not a directory",
                                      hint="point work_dir in the target somewhere else")
                continue
            except (FileNotFoundError, PermissionError):
                pass  # missing, or a parent we may not list: try to create it
            try:
                sftp.mkdir(current, mode=0o700)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    if stat.S_ISDIR(sftp.stat(current).st_mode or 0):
                        continue  # created concurrently (or it was there, unlisted)
                raise TargetError(f"cannot create {current} on {self.label}: "
                                  f"{exc.strerror or exc}",
                                  hint=f"check work_dir in the target is writable by "
                                  f"{self.settings.login}") from None

    @link_guard(retry=False)
    def mkdir_exclusive(self, path: str) -> bool:
        """Atomic create; False if it exists already (the device lock uses this)."""
        sftp = self.sftp()
        try:
            sftp.mkdir(path, mode=0o700)
            return True
        except OSError:
            try:
                sftp.stat(path)
            except FileNotFoundError:
                raise TargetError(f"cannot create {path} on {self.label}",
                                  hint="check work_dir in the target is writable") from None
            return False

    @link_guard(retry=True)
    def exists(self, path: str) -> bool:
        try:
            self.sftp().stat(path)
            return True
        except FileNotFoundError:
            return False

    @link_guard(retry=True)
    def mtime(self, path: str) -> float | None:
        try:
            return float(self.sftp().stat(path).st_mtime or 0)
        except FileNotFoundError:
            return None

    @link_guard(retry=True)
    def touch(self, path: str) -> None:
        now = time.time()
        with contextlib.suppress(OSError):
            self.sftp().utime(path, (now, now))

    @link_guard(retry=True)
    def write_text(self, path: str, text: str) -> None:
        with self.sftp().open(path, "w") as fh:
            fh.write(text.encode("utf-8"))

    @link_guard(retry=True)
    def read_text(self, path: str) -> str | None:
        try:
            with self.sftp().open(path, "r") as fh:
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None

    @link_guard(retry=True)
    def listdir(self, path: str) -> list[tuple[str, float, bool]]:
        """(name, mtime, is_dir) of each entry; empty if ``path`` does not exist."""
        try:
            entries = self.sftp().listdir_attr(path)
        except FileNotFoundError:
            return []
        return [(e.filename, float(e.st_mtime or 0), stat.S_ISDIR(e.st_mode or 0))
                for e in entries]

    @link_guard(retry=False)
    def rename(self, src: str, dst: str) -> None:
        self.sftp().posix_rename(src, dst)

    def remove_tree(self, path: str) -> None:
        """``rm -rf`` one path (quoted); refuses anything that is not below a real directory."""
        if path.rstrip("/") in ("", "/", self.home().rstrip("/")):
            raise AssertionError(f"refusing to remove {path!r}")
        result = self.run(["rm", "-rf", "--", path], timeout_s=120)
        if not result.ok:
            raise TargetError(f"cannot remove {path} on {self.label}: {result.stderr.strip()}",
                              hint="remove it by hand")

    def free_bytes(self, path: str) -> int | None:
        """Free space where ``path`` lives (``df -Pk``), or None when df is unavailable."""
        result = self.run(["df", "-Pk", path], timeout_s=30)
        lines = result.stdout.strip().splitlines()
        if not result.ok or len(lines) < 2:
            return None
        try:
            return int(lines[-1].split()[3]) * 1024
        except (IndexError, ValueError):
            return None

    def upload(self, local: Path, remote: str, *, progress: Progress | None = None) -> None:
        """SFTP ``local`` to ``remote``; disk-full and permission errors become clear errors."""
        size = local.stat().st_size
        free = self.free_bytes(posixpath.dirname(remote))
        if free is not None and free < size + 1024 * 1024:
            raise DeviceDiskFullError(
                f"not enough disk space on {self.label} for {local.name}: "
                f"{size / 1e6:.1f} MB needed (+1 MB headroom), {free / 1e6:.1f} MB free in "
                f"{posixpath.dirname(remote)}",
                hint="free space on the device or point work_dir at a larger disk")
        last = [0.0]

        def callback(done: int, total: int) -> None:
            now = time.monotonic()
            if progress and (now - last[0] > 0.5 or done == total):
                last[0] = now
                progress({"stage": "upload", "done_bytes": done, "total_bytes": total,
                          "message": f"uploading {local.name}: "
                          f"{_size(done)} of {_size(total)}"})

        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                self.sftp().put(str(local), remote, callback=callback, confirm=True)
                return
            except (OSError, EOFError, paramiko.SSHException) as exc:
                # a full disk is an SFTP failure on a live link
                if not self.link_dropped(exc):
                    self._upload_failed(local, remote, size, exc)
                self.close()
                if attempt == attempts:
                    raise TargetError(f"lost the connection to {self.label} while uploading "
                                      f"{local.name}: {exc or type(exc).__name__}",
                                      hint="check the device and network, then retry") from None
                self.report("reconnect", f"link to {self.label} dropped during the upload; "
                            f"reconnecting and uploading {local.name} again "
                            f"({attempt}/{attempts - 1})")

    def _upload_failed(self, local: Path, remote: str, size: int,
                       exc: BaseException) -> NoReturn:
        """Explain a failed upload on a live link: disk full, or something else."""
        with contextlib.suppress(Exception):
            self.sftp().remove(remote)  # do not leave a partial file behind
        free = self.free_bytes(posixpath.dirname(remote))
        if free is not None and free < size + 1024 * 1024:
            raise DeviceDiskFullError(
                f"disk full on {self.label} while uploading {local.name} "
                f"({free / 1e6:.1f} MB free)",
                hint="free space on the device or point work_dir at a larger disk") from None
        raise TargetError(f"upload of {local.name} to {self.label} failed: {exc}",
                          hint="check work_dir is writable on the device") from None


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
