"""Targets: named devices — where a device is, how to reach it, which profile it belongs to.

A target is a TOML file under ``targets/`` (shipped in the wheel), the user's config directory or a
``--targets-file``; the file name is the target's name. A target with an ``[ssh]`` table is remote;
without one it is the machine edgeprune runs on. A one-off device needs no file:
``ssh://user@host[:port]`` builds a target on the fly.
"""

from __future__ import annotations

import dataclasses
import getpass
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeprune import config
from edgeprune.config import FieldProblem
from edgeprune.errors import NotFoundError, UsageError

__all__ = ["SSHSettings", "Target", "list_targets", "load_target", "load_target_file"]

HostKeyMode = Literal["strict", "accept-new"]


@dataclass(frozen=True)
class SSHSettings:
    """How to reach a remote device. Auth is by key file or agent only: no passwords stored."""

    host: str
    port: int = 22
    user: str | None = None  # None = the local user name, like OpenSSH
    identity_file: str | None = None  # None = the agent and ~/.ssh/id_* keys
    use_agent: bool = True
    known_hosts: str = "~/.ssh/known_hosts"
    # strict: an unknown host key is refused; accept-new: an unknown key is recorded (OpenSSH's
    # StrictHostKeyChecking=accept-new). A changed key is refused either way.
    host_key_policy: HostKeyMode = "strict"
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 600.0
    retries: int = 2  # reconnects after a dropped link

    def _check(self) -> None:
        if not self.host.strip():
            raise FieldProblem("host", "is empty", 'give the device\'s host name or address')
        if not 0 < self.port < 65536:
            raise FieldProblem("port", f"{self.port} is not a TCP port", "use 1-65535 (22 is SSH)")
        if self.connect_timeout_s <= 0 or self.command_timeout_s <= 0:
            raise FieldProblem("connect_timeout_s", "timeouts must be positive",
                               "give seconds, e.g. 10")
        if self.retries < 0:
            raise FieldProblem("retries", "must be 0 or more", "e.g. retries = 2")

    @property
    def login(self) -> str:
        return self.user or getpass.getuser()


@dataclass(frozen=True)
class Target:
    """A named device. ``ssh`` is ``None`` for the machine edgeprune runs on."""

    name: str
    profile: str | None = None
    description: str = ""
    # the device's Python; None = the current interpreter (local) or "python3" (remote)
    python: str | None = None
    # where the runner, cached artifacts and per-run temp dirs live on the device
    work_dir: str = "~/.cache/edgeprune-device"
    # extra environment for the runner (e.g. PYTHONPATH, LD_LIBRARY_PATH on Jetson)
    env: Mapping[str, str] = field(default_factory=dict)
    # how long to wait for another measurement on the same device to finish
    lock_timeout_s: float = 900.0
    ssh: SSHSettings | None = None

    def _check(self) -> None:
        for key in self.env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise FieldProblem(f"env.{key}", "not a valid environment variable name",
                                   "use letters, digits and _")
        if not self.work_dir.strip():
            raise FieldProblem("work_dir", "is empty",
                               'e.g. work_dir = "~/.cache/edgeprune-device"')

    @property
    def is_local(self) -> bool:
        return self.ssh is None

    @property
    def where(self) -> str:
        """``name`` plus ``user@host:port`` for remote targets — what results record."""
        if self.ssh is None:
            return f"{self.name} (local)"
        label = f"{self.ssh.login}@{self.ssh.host}:{self.ssh.port}"
        if self.name in (label, label.removesuffix(":22")):
            return label
        return f"{self.name} ({label})"

    def remote_python(self) -> str:
        return self.python or "python3"

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)


LOCAL = Target(name="local", profile="local", description="this machine")

_URL = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/@]+)(?::(?P<port>\d+))?/?$")


def list_targets(extra_files: Iterable[str | Path] = ()) -> dict[str, tuple[str, Path]]:
    """Every target name -> (origin, path); origin is builtin, user or file."""
    return config.discover("targets", extra_files)


def load_target(
    name_or_url: str,
    *,
    extra_files: Iterable[str | Path] = (),
    profile: str | None = None,
    identity_file: str | None = None,
    known_hosts: str | None = None,
    accept_new: bool = False,
    python: str | None = None,
) -> Target:
    """Load a target by name, path or ``ssh://user@host[:port]`` URL, with CLI overrides applied.

    ``accept_new`` switches host-key checking to OpenSSH's accept-new for this call only.
    """
    if name_or_url.startswith("ssh://"):
        target = _from_url(name_or_url)
    elif name_or_url.endswith(".toml") or "/" in name_or_url:
        target = load_target_file(name_or_url)
    else:
        found = list_targets(extra_files)
        if name_or_url not in found:
            if name_or_url == "local":
                target = LOCAL
            else:
                import difflib

                close = difflib.get_close_matches(name_or_url, list(found), n=1)
                hint = (f"did you mean {close[0]!r}?" if close else
                        f"known targets: {', '.join(sorted(found)) or 'none'}; add one under "
                        f"{config.user_config_dir() / 'targets'}, pass --targets-file, or use "
                        "--target ssh://user@host[:port]")
                raise NotFoundError(f"no target named {name_or_url!r}", hint=hint)
        else:
            target = load_target_file(found[name_or_url][1])
    return with_overrides(target, profile=profile, identity_file=identity_file,
                          known_hosts=known_hosts, accept_new=accept_new, python=python)


def load_target_file(path: str | Path) -> Target:
    path = Path(path)
    return config.load_file(Target, path, defaults={"name": path.stem})


def with_overrides(
    target: Target,
    *,
    profile: str | None = None,
    identity_file: str | None = None,
    known_hosts: str | None = None,
    accept_new: bool = False,
    python: str | None = None,
) -> Target:
    changes: dict[str, Any] = {}
    if profile:
        changes["profile"] = profile
    if python:
        changes["python"] = python
    ssh_changes: dict[str, Any] = {}
    if identity_file:
        ssh_changes["identity_file"] = identity_file
    if known_hosts:
        ssh_changes["known_hosts"] = known_hosts
    if accept_new:
        ssh_changes["host_key_policy"] = "accept-new"
    if ssh_changes:
        if target.ssh is None:
            raise UsageError(f"target {target.name!r} is local; SSH options do not apply",
                             hint="drop --identity-file/--known-hosts/--accept-new-host-key")
        changes["ssh"] = dataclasses.replace(target.ssh, **ssh_changes)
    return dataclasses.replace(target, **changes) if changes else target


def _from_url(url: str) -> Target:
    match = _URL.match(url)
    if not match:
        raise UsageError(f"cannot parse target URL {url!r}",
                         hint="write it as ssh://user@host or ssh://user@host:2222")
    host = match["host"].strip("[]")
    port = int(match["port"] or 22)
    ssh = config.from_dict(SSHSettings, {"host": host, "port": port,
                                         **({"user": match["user"]} if match["user"] else {})},
                           source=url)
    name = f"{ssh.login}@{host}" + (f":{port}" if port != 22 else "")
    return Target(name=name, ssh=ssh)
