"""SSH transport to devices — the only module that imports paramiko.

One :class:`Connection` per device: it connects lazily, checks the host key against the target's
known-hosts file (unknown keys refused unless the target's policy is ``accept-new``; a changed key
is always refused, fingerprint shown), authenticates by key file or agent only, runs commands
with every argument quoted, uploads over SFTP, and reconnects when the link drops. Every paramiko
or socket failure leaves here as one of the :mod:`edgeprune.errors` classes with a one-line fix.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import os
import posixpath
import shlex
import socket
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import paramiko

from edgeprune.devices.targets import SSHSettings
from edgeprune.errors import (
    AuthenticationError,
    DeviceDiskFullError,
    EdgepruneError,
    HostKeyError,
    HostUnreachableError,
    NotFoundError,
    TargetError,
)

__all__ = ["CommandResult", "Connection", "fingerprint", "quote_command"]

Progress = Callable[[dict[str, Any]], None]
F = TypeVar("F", bound=Callable[..., Any])
PID_MARKER = "EDGEPRUNE-PID "

# paramiko's transport thread logs every failed handshake with a traceback; with no logging set
# up, Python's last-resort handler would print it on stderr next to our one-line error. A null
# handler keeps it quiet unless the application configures logging itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did. ``exit_status`` is -1 when the process died from a signal
    (OpenSSH then sends no exit status); ``signal`` names it (``KILL``, ``SEGV``, ``ILL``, ...)
    when the server said which — a ``KILL`` with no output is usually the OOM killer."""

    command: str
    exit_status: int
    stdout: str
    stderr: str
    signal: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def quote_command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown host key: refuse (strict) or record it in the known-hosts file (accept-new)."""

    def __init__(self, settings: SSHSettings, known_hosts: Path) -> None:
        self.settings = settings
        self.known_hosts = known_hosts
        self.accepted: str | None = None

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        fp = fingerprint(key)
        if self.settings.host_key_policy != "accept-new":
            port = self.settings.port
            port_flag = f"-p {port} " if port != 22 else ""
            scan = f"ssh-keyscan {port_flag}{self.settings.host}"
            raise HostKeyError(
                f"host key of {hostname} is unknown ({key.get_name()} {fp}); refusing to connect",
                hint=f"verify the fingerprint, then add it: {scan} >> {self.known_hosts} "
                "(or pass --accept-new-host-key to record it once)",
            )
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.accepted = fp


def _link_guard(*, retry: bool) -> Callable[[F], F]:
    """Turn a link dropped during an SFTP call into a reconnect (and, for calls that are safe to
    repeat, another try) or a one-line :class:`TargetError` — never a paramiko traceback."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: Connection, *args: Any, **kwargs: Any) -> Any:
            attempts = self.settings.retries + 1 if retry else 1
            for attempt in range(1, attempts + 1):
                try:
                    return fn(self, *args, **kwargs)
                except EdgepruneError:
                    raise
                except (EOFError, paramiko.SSHException, OSError) as exc:
                    sftp = self._sftp
                    dropped = (not isinstance(exc, OSError) or str(exc) == "Socket is closed"
                               or not self._alive() or sftp is None or sftp.sock.closed)
                    if not dropped:  # a live link: the device said no (permissions, ...)
                        what = f" {args[0]}" if args else ""
                        raise TargetError(
                            f"{fn.__name__.replace('_', ' ')}{what} on {self.label} failed: "
                            f"{getattr(exc, 'strerror', None) or exc}",
                            hint=f"check work_dir in the target is a directory "
                            f"{self.settings.login} can write") from None
                    self.close()
                    if attempt == attempts:
                        raise TargetError(f"lost the connection to {self.label}: "
                                          f"{exc or type(exc).__name__}",
                                          hint="check the device and network, then retry",
                                          ) from None
                    self._emit("reconnect", f"link to {self.label} dropped; reconnecting "
                               f"({attempt}/{attempts - 1})")
            raise AssertionError("unreachable")

        return wrapper  # type: ignore[return-value]

    return decorate


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
        if self._alive():
            return
        self.close()
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                self._client = self._connect()
                return
            except _Transient as exc:
                if attempt == attempts:
                    raise HostUnreachableError(
                        f"cannot reach {self.label}: {exc.reason}",
                        hint="check the device is on, the host/port in the target, and the "
                        "network; raise connect_timeout_s for slow links",
                    ) from None
                self._emit("reconnect", f"connecting to {self.label} failed ({exc.reason}); "
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

    def _alive(self) -> bool:
        if self._client is None:
            return False
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def _connect(self) -> paramiko.SSHClient:
        s = self.settings
        known_hosts = Path(s.known_hosts).expanduser()
        client = paramiko.SSHClient()
        if known_hosts.is_file():
            self._load_known_hosts(client, known_hosts)
        policy = _HostKeyPolicy(s, known_hosts)
        client.set_missing_host_key_policy(policy)
        key_file = None
        pkey = None
        if s.identity_file:
            key_file = str(Path(s.identity_file).expanduser())
            if not Path(key_file).is_file():
                raise NotFoundError(f"identity file {key_file!r} does not exist",
                                    hint="fix identity_file / --identity-file, or drop it to use "
                                    "the SSH agent")
            pkey = _load_identity(key_file)
        timeout = s.connect_timeout_s
        try:
            client.connect(
                s.host, port=s.port, username=s.login, pkey=pkey,
                allow_agent=s.use_agent, look_for_keys=key_file is None, password=None,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"host key of {self.label} has CHANGED: got {exc.key.get_name()} "
                f"{fingerprint(exc.key)}, expected {fingerprint(exc.expected_key)} — possibly a "
                "man-in-the-middle attack, or the device was reinstalled",
                hint=f"if the change is expected, remove the old key: ssh-keygen -R "
                f"{_kh_name(s)} -f {known_hosts}",
            ) from None
        except HostKeyError:
            client.close()
            raise
        except paramiko.PasswordRequiredException:
            client.close()
            raise AuthenticationError(
                f"identity file {key_file} is encrypted and edgeprune never asks for passphrases",
                hint=f"load it into ssh-agent (ssh-add {key_file}) and drop identity_file",
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            how = f"key {key_file}" if key_file else "the SSH agent and ~/.ssh/id_* keys"
            raise AuthenticationError(
                f"{self.label} refused authentication with {how}",
                hint=f"install your public key on the device (ssh-copy-id -p {s.port} "
                f"{s.login}@{s.host}) or set identity_file / --identity-file",
            ) from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            client.close()
            raise HostUnreachableError(
                f"cannot reach {self.label}: connection refused ({_first_error(exc)})",
                hint="is sshd running on the device and the port right?",
            ) from None
        except socket.gaierror as exc:
            client.close()
            raise HostUnreachableError(f"cannot resolve host {s.host!r}: {exc.strerror}",
                                       hint="check host in the target (`edgeprune targets list` "
                                       "shows its file) or the --target URL") from None
        except TimeoutError as exc:
            client.close()
            raise _Transient(f"timed out after {timeout:g} s ({exc or 'no answer'})") from None
        except paramiko.SSHException as exc:
            # the transport thread's own failure (e.g. no banner) explains a later
            # "No existing session" in the main thread better than that message does
            transport = client.get_transport()
            cause = transport.get_exception() if transport is not None else None
            client.close()
            text = str(cause or exc) or type(exc).__name__
            if "no authentication methods available" in text.lower():
                raise AuthenticationError(
                    f"no SSH key to offer {self.label}: no identity file, no key in the SSH "
                    "agent and no ~/.ssh/id_* key",
                    hint="pass --identity-file (identity_file in the target) or load a key "
                    "with ssh-add") from None
            if "banner" in text.lower() or text == "No existing session":
                # the handshake never completed: nothing (or no SSH) answered on that port
                text = (f"no SSH answer within {timeout:g} s ({text}; is the port an SSH "
                        "server?)")
            raise _Transient(text) from None
        except (EOFError, ConnectionError, OSError) as exc:
            client.close()
            raise _Transient(str(exc) or type(exc).__name__) from None
        self.accepted_host_key = policy.accepted
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
            _record_exit_signals(transport)
        return client

    def _load_known_hosts(self, client: paramiko.SSHClient, path: Path) -> None:
        """Load ``path`` like OpenSSH does: a line that cannot be parsed (bad base64, a key
        type paramiko does not know, ``@cert-authority``) is skipped, not fatal."""
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise HostKeyError(f"cannot read known-hosts file {path}: {exc.strerror}",
                               hint="fix its permissions or pass another --known-hosts") from None
        keys = client.get_host_keys()
        skipped = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
            except Exception:  # InvalidHostKey is not an SSHException
                entry = None
            if entry is None or entry.key is None:
                if not line.startswith("@"):
                    skipped.append(lineno)
                continue
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
        if skipped:
            self._emit("hostkey", f"ignored {len(skipped)} unreadable line(s) in {path} "
                       f"(line {', '.join(map(str, skipped[:5]))})")

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
        command = self._wrap(argv, cwd, env)
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
            except _Dropped as exc:
                orphan = exc.pid
                self.close()
                if attempt == attempts:
                    raise TargetError(f"lost the connection to {self.label}: {exc.reason}",
                                      hint="check the device and network, then retry") from None
                self._emit("reconnect", f"link to {self.label} dropped ({exc.reason}); "
                           f"reconnecting ({attempt}/{attempts - 1})")
        raise AssertionError("unreachable")

    def run_shell(self, script: str, *, timeout_s: float | None = None) -> CommandResult:
        """Run a fixed shell snippet (callers quote any values they put in it)."""
        self.open()
        try:
            return self._exec(script, timeout_s or self.settings.command_timeout_s)
        except _Dropped as exc:
            self.close()
            raise TargetError(f"lost the connection to {self.label}: {exc.reason}",
                              hint="check the device and network, then retry") from None

    @staticmethod
    def _wrap(argv: Sequence[str], cwd: str | None, env: Mapping[str, str] | None) -> str:
        parts = []
        if cwd:
            parts.append(f"cd {shlex.quote(cwd)} &&")
        parts.append(f"echo '{PID_MARKER}'$$ >&2 && exec")
        if env:
            parts.append("env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()))
        parts.append(quote_command(argv))
        return " ".join(parts)

    def _exec(self, command: str, timeout_s: float) -> CommandResult:
        assert self._client is not None
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise _Dropped("transport closed")
        try:
            chan = transport.open_session(timeout=self.settings.connect_timeout_s)
            chan.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise _Dropped(str(exc) or type(exc).__name__) from None
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
                    pid = _parse_pid(err)
                drained = not chan.recv_ready() and not chan.recv_stderr_ready()
                # a dead link closes every channel too (before the transport says it is dead),
                # and must not pass for a process that died without an exit status: a channel
                # the server closed has had its EOF first. (paramiko's exit_status_ready() is
                # true for any closed channel; exit_status stays -1 until the server sends one.)
                has_status = chan.exit_status != -1
                ended = has_status or getattr(chan, _SIGNAL_ATTR, None)
                if not ended and (not transport.is_active()
                                  or (chan.closed and not chan.eof_received)):
                    raise _Dropped("connection closed during the command", pid)
                if has_status and drained:
                    break
                if chan.closed and not busy:
                    break
                if time.monotonic() > deadline:
                    self._kill(pid or _await_pid(chan, err))
                    raise TargetError(
                        f"command on {self.label} did not finish within {timeout_s:g} s "
                        "(stopped it)",
                        hint="raise --timeout or command_timeout_s in the target, or lower "
                        "--runs / --max-seconds")
                if not busy:
                    time.sleep(0.005)
            status = chan.exit_status
        except KeyboardInterrupt:
            self._kill(pid or _await_pid(chan, err))
            raise
        finally:
            with contextlib.suppress(Exception):
                chan.close()
        stderr = err.decode("utf-8", "replace")
        lines = stderr.splitlines(keepends=True)
        if lines and lines[0].startswith(PID_MARKER):
            stderr = "".join(lines[1:])
        return CommandResult(command=command, exit_status=status,
                             stdout=out.decode("utf-8", "replace"), stderr=stderr,
                             signal=getattr(chan, _SIGNAL_ATTR, None) if status == -1 else None)

    def _kill(self, pid: str | None) -> None:
        """Best effort: stop a remote process we gave up on (timeout, Ctrl-C)."""
        if not pid or not pid.isdigit():
            return
        with contextlib.suppress(Exception):
            assert self._client is not None
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                chan = transport.open_session(timeout=5)
                # TERM, up to 2 s to exit, then KILL (quick: a second Ctrl-C may be coming)
                chan.exec_command(f"kill -TERM {pid} 2>/dev/null; i=0; while [ $i -lt 20 ] && "
                                  f"kill -0 {pid} 2>/dev/null; do sleep 0.1; i=$((i+1)); done; "
                                  f"kill -KILL {pid} 2>/dev/null")
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

    @_link_guard(retry=True)
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

    @_link_guard(retry=True)
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

    @_link_guard(retry=False)
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

    @_link_guard(retry=True)
    def exists(self, path: str) -> bool:
        try:
            self.sftp().stat(path)
            return True
        except FileNotFoundError:
            return False

    @_link_guard(retry=True)
    def mtime(self, path: str) -> float | None:
        try:
            return float(self.sftp().stat(path).st_mtime or 0)
        except FileNotFoundError:
            return None

    @_link_guard(retry=True)
    def touch(self, path: str) -> None:
        now = time.time()
        with contextlib.suppress(OSError):
            self.sftp().utime(path, (now, now))

    @_link_guard(retry=True)
    def write_text(self, path: str, text: str) -> None:
        with self.sftp().open(path, "w") as fh:
            fh.write(text.encode("utf-8"))

    @_link_guard(retry=True)
    def read_text(self, path: str) -> str | None:
        try:
            with self.sftp().open(path, "r") as fh:
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None

    @_link_guard(retry=True)
    def listdir(self, path: str) -> list[tuple[str, float, bool]]:
        """(name, mtime, is_dir) of each entry; empty if ``path`` does not exist."""
        try:
            entries = self.sftp().listdir_attr(path)
        except FileNotFoundError:
            return []
        return [(e.filename, float(e.st_mtime or 0), stat.S_ISDIR(e.st_mode or 0))
                for e in entries]

    @_link_guard(retry=False)
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
                # a dead link ends the SFTP channel (EOFError, "Socket is closed"), maybe
                # before the transport notices; a full disk is an SFTP failure on a live link
                sftp = self._sftp
                dropped = (isinstance(exc, (EOFError, paramiko.SSHException))
                           or str(exc) == "Socket is closed" or not self._alive()
                           or sftp is None or sftp.sock.closed)
                if not dropped:
                    self._upload_failed(local, remote, size, exc)
                self.close()
                if attempt == attempts:
                    raise TargetError(f"lost the connection to {self.label} while uploading "
                                      f"{local.name}: {exc or type(exc).__name__}",
                                      hint="check the device and network, then retry") from None
                self._emit("reconnect", f"link to {self.label} dropped during the upload; "
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

    def _emit(self, stage: str, message: str) -> None:
        if self.progress:
            self.progress({"stage": stage, "message": message})


class _Transient(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Dropped(_Transient):
    def __init__(self, reason: str, pid: str | None = None) -> None:
        super().__init__(reason)
        self.pid = pid  # the remote process left running, if it had started


_SIGNAL_ATTR = "_edgeprune_exit_signal"


def _record_exit_signals(transport: paramiko.Transport) -> None:
    """Keep the signal name of OpenSSH's ``exit-signal`` channel request on the channel.

    paramiko drops that request (``recv_exit_status`` just stays -1), yet it is what tells an
    OOM kill (``KILL``) from a crash (``SEGV``) or a runtime built for another CPU (``ILL``).
    This wraps the channel-request handler of this one transport; if paramiko's internals ever
    change, signals are simply not recorded.
    """
    from paramiko.common import MSG_CHANNEL_REQUEST

    table = getattr(transport, "_channel_handler_table", None)
    if not isinstance(table, dict) or MSG_CHANNEL_REQUEST not in table:
        return
    original = table[MSG_CHANNEL_REQUEST]

    def handle(chan: paramiko.Channel, m: paramiko.Message) -> Any:
        packet = getattr(m, "packet", None)
        if packet is not None:
            start = packet.tell()
            try:
                if m.get_text() == "exit-signal":
                    m.get_boolean()  # want-reply
                    setattr(chan, _SIGNAL_ATTR, m.get_text() or "?")
            except Exception:
                pass
            finally:
                packet.seek(start)
        return original(chan, m)

    transport._channel_handler_table = {**table, MSG_CHANNEL_REQUEST: handle}


def _load_identity(path: str) -> paramiko.PKey:
    """The private key in ``path`` (OpenSSH or PEM; RSA, ECDSA, Ed25519), or a one-line error.

    Loaded here rather than handed to paramiko by name: paramiko tries every key class in turn
    and reports the last class's parse error ("encountered RSA key, expected OPENSSH key") even
    when the real answer is that the server refused the key.
    """
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        encrypted = True
    except TypeError as exc:  # cryptography: "Key is password-protected, but ..."
        if "password" not in str(exc).lower():
            raise
        encrypted = True
    except (ValueError, OSError, paramiko.SSHException) as exc:
        try:
            head = Path(path).read_text(errors="replace")[:40]
        except OSError:
            head = ""
        public = path.endswith(".pub") or head.startswith(("ssh-", "ecdsa-", "sk-"))
        reason = str(exc).split(". ")[0].strip() or type(exc).__name__
        raise AuthenticationError(
            f"identity file {path} is not a private key edgeprune can read ({reason})",
            hint="pass the private key file (the one without .pub)" if public else
            "pass an OpenSSH or PEM private key (ssh-keygen -t ed25519 makes one)") from None
    if encrypted:
        raise AuthenticationError(
            f"identity file {path} is encrypted and edgeprune never asks for passphrases",
            hint=f"load it into ssh-agent (ssh-add {path}) and drop identity_file")
    raise AssertionError("unreachable")


def _await_pid(chan: paramiko.Channel, err: bytearray, wait_s: float = 2.0) -> str:
    """The remote PID when its marker line has not been read yet (an early Ctrl-C/timeout)."""
    deadline = time.monotonic() + wait_s
    with contextlib.suppress(Exception):
        while b"\n" not in err and time.monotonic() < deadline and not chan.closed:
            if chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            else:
                time.sleep(0.01)
    return _parse_pid(err)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _parse_pid(err: bytearray) -> str:
    first = bytes(err).split(b"\n", 1)[0].decode("utf-8", "replace")
    return first[len(PID_MARKER):].strip() if first.startswith(PID_MARKER) else ""


def _first_error(exc: paramiko.ssh_exception.NoValidConnectionsError) -> str:
    for err in exc.errors.values():
        return getattr(err, "strerror", None) or str(err)
    return str(exc)


def _kh_name(s: SSHSettings) -> str:
    return s.host if s.port == 22 else f"'[{s.host}]:{s.port}'"
