"""Host keys: the known-hosts file read like OpenSSH, and the policy for a key not in it.

An unknown key is refused (``strict``, the default: the message shows its fingerprint and the
``ssh-keyscan`` line that records it) or recorded once (``accept-new``); a *changed* key is always
refused, by paramiko itself, and :mod:`~edgeprune.devices.transport.connect` names both keys.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import paramiko

from edgeprune.devices.targets import SSHSettings
from edgeprune.errors import HostKeyError

__all__ = ["HostKeyPolicy", "fingerprint", "known_hosts_name", "load_known_hosts"]


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
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


def load_known_hosts(client: paramiko.SSHClient, path: Path,
                     report: Callable[[str, str], None]) -> None:
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
        report("hostkey", f"ignored {len(skipped)} unreadable line(s) in {path} "
               f"(line {', '.join(map(str, skipped[:5]))})")


def known_hosts_name(s: SSHSettings) -> str:
    """The host as a known-hosts line names it (``'[host]:port'`` off port 22)."""
    return s.host if s.port == 22 else f"'[{s.host}]:{s.port}'"
