"""An ARM64 edge device for tests: a Debian arm64 root run through qemu-user-static, reached by a
dedicated sshd on 127.0.0.1 that chroots its one user into the root (docs/arm64-device.md).

``scripts/prepare_arm64_device.sh`` builds the root under ``/opt/edgeprune-arm64`` (a minute,
~400 MB, needs a Debian mirror and root) with the user ``edgeprune-arm``; these fixtures never build
it and skip, saying how, when it is missing. When it is there they run the script's fast path
(under a second), which re-does what a reboot undoes: binfmt_misc registration and /proc.

The server is :class:`tests._sshd.SSHServer` (keys, key-only auth, ``UsePAM no``, internal-sftp, a
random free port) with ``Match User edgeprune-arm`` -> ``ChrootDirectory``. It never touches the
loopback device's user ``edgeprune-dev``. The fixture is in tests/test_arm64_device.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests._sshd import REPO, SSHServer
from tests._sshd import skip_reason as sshd_skip_reason

ARM_ROOT = Path(os.environ.get("EDGEPRUNE_ARM64_DIR", "/opt/edgeprune-arm64"))
ARM_USER = "edgeprune-arm"
ARM_PYTHON = "/usr/bin/python3"  # inside the root
STAMP = ARM_ROOT / ".edgeprune-arm64-stamp"
PREPARE = REPO / "scripts" / "prepare_arm64_device.sh"

__all__ = ["ARM_PYTHON", "ARM_ROOT", "ARM_USER", "ARM64Server", "installed_version", "skip_reason"]


def skip_reason() -> str | None:
    """Why the arm64 device cannot be used here, or None."""
    reason = sshd_skip_reason()
    if reason:
        return reason
    if os.geteuid() != 0:
        return "the arm64 device needs root (sshd's ChrootDirectory and its /proc mount)"
    if not STAMP.is_file():
        return (f"{ARM_ROOT} is not prepared: run `sudo bash scripts/prepare_arm64_device.sh` "
                "(about a minute and ~400 MB; needs a Debian mirror)")
    return None


def installed_version(dist: str) -> str | None:
    """The version of ``dist`` installed in the root, read from its ``.dist-info`` name."""
    for info in ARM_ROOT.glob(f"usr/local/lib/python3*/dist-packages/{dist}-*.dist-info"):
        return info.name[len(dist) + 1:-len(".dist-info")]
    return None


class ARM64Server(SSHServer):
    """:class:`SSHServer` whose device user is chrooted into the arm64 root."""

    key_comment = "edgeprune-arm64"

    def prepare_device(self) -> None:
        prepared = subprocess.run(["bash", str(PREPARE)], capture_output=True, text=True)
        if prepared.returncode != 0:
            lines = prepared.stderr.strip().splitlines() or ["(no output)"]
            raise RuntimeError(f"{PREPARE.name} failed: {lines[-1]}")
        self.user = ARM_USER
        self.pydir = None  # the root's python3 finds its packages without PYTHONPATH

    def _config(self) -> str:
        # Match blocks last: everything after `Match` belongs to it.
        return super()._config() + f"Match User {ARM_USER}\n  ChrootDirectory {ARM_ROOT}\n"

    def device_path(self, path: str) -> Path:
        """A device path (``~/...`` or absolute inside the root) as seen from this machine."""
        if path.startswith("~/"):
            return ARM_ROOT / "home" / ARM_USER / path[2:]
        return ARM_ROOT / path.lstrip("/")

    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

