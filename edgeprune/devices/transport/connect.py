"""Opening an SSH client: host key checked, key file or agent only, every failure named.

Authentication is by key file or agent only (never a password or a passphrase prompt). A
refused or unanswered connection, a bad key and a changed host key each leave as their own
:mod:`edgeprune.errors` class with a one-line fix; a timeout or a reset as :class:`Transient`,
which :meth:`Connection.open` retries.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import paramiko

from edgeprune.devices.targets import SSHSettings
from edgeprune.devices.transport._retry import Transient
from edgeprune.devices.transport.hostkeys import (
    HostKeyPolicy,
    fingerprint,
    known_hosts_name,
    load_known_hosts,
)
from edgeprune.devices.transport.identity import load_identity
from edgeprune.errors import (
    AuthenticationError,
    HostKeyError,
    HostUnreachableError,
    NotFoundError,
)

__all__ = ["connect_client"]

_paramiko_logs_quiet = False
_paramiko_logs_lock = threading.Lock()


def _quiet_paramiko_logs() -> None:
    """Give the ``paramiko`` logger a null handler, once per process, on the first connect.

    paramiko's transport thread logs every failed handshake with a traceback; with no logging
    set up, Python's last-resort handler would print it on stderr next to our one-line error. A
    null handler keeps it quiet unless the application configures logging itself. Done here
    rather than at import, so importing edgeprune leaves the process's logging as it was.
    """
    global _paramiko_logs_quiet
    with _paramiko_logs_lock:
        if not _paramiko_logs_quiet:
            logging.getLogger("paramiko").addHandler(logging.NullHandler())
            _paramiko_logs_quiet = True


def connect_client(settings: SSHSettings, label: str, report: Callable[[str, str], None]
                   ) -> tuple[paramiko.SSHClient, str | None]:
    """A connected client, and the fingerprint of a host key recorded on the way (accept-new)
    or None. ``label`` names the device in messages; ``report(stage, message)`` takes notes."""
    _quiet_paramiko_logs()
    s = settings
    known_hosts = Path(s.known_hosts).expanduser()
    client = paramiko.SSHClient()
    if known_hosts.is_file():
        load_known_hosts(client, known_hosts, report)
    policy = HostKeyPolicy(s, known_hosts)
    client.set_missing_host_key_policy(policy)
    key_file = None
    pkey = None
    if s.identity_file:
        key_file = str(Path(s.identity_file).expanduser())
        if not Path(key_file).is_file():
            raise NotFoundError(f"identity file {key_file!r} does not exist",
                                hint="fix identity_file / --identity-file, or drop it to use "
                                "the SSH agent")
        pkey = load_identity(key_file)
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
            f"host key of {label} has CHANGED: got {exc.key.get_name()} "
            f"{fingerprint(exc.key)}, expected {fingerprint(exc.expected_key)} — possibly a "
            "man-in-the-middle attack, or the device was reinstalled",
            hint=f"if the change is expected, remove the old key: ssh-keygen -R "
            f"{known_hosts_name(s)} -f {known_hosts}",
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
            f"{label} refused authentication with {how}",
            hint=f"install your public key on the device (ssh-copy-id -p {s.port} "
            f"{s.login}@{s.host}) or set identity_file / --identity-file",
        ) from None
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        client.close()
        raise HostUnreachableError(
            f"cannot reach {label}: connection refused ({_first_error(exc)})",
            hint="is sshd running on the device and the port right?",
        ) from None
    except socket.gaierror as exc:
        client.close()
        raise HostUnreachableError(f"cannot resolve host {s.host!r}: {exc.strerror}",
                                   hint="check host in the target (`edgeprune targets list` "
                                   "shows its file) or the --target URL") from None
    except TimeoutError as exc:
        client.close()
        raise Transient(f"timed out after {timeout:g} s ({exc or 'no answer'})") from None
    except paramiko.SSHException as exc:
        # the transport thread's own failure (e.g. no banner) explains a later
        # "No existing session" in the main thread better than that message does
        transport = client.get_transport()
        cause = transport.get_exception() if transport is not None else None
        client.close()
        text = str(cause or exc) or type(exc).__name__
        if "no authentication methods available" in text.lower():
            raise AuthenticationError(
                f"no SSH key to offer {label}: no identity file, no key in the SSH "
                "agent and no ~/.ssh/id_* key",
                hint="pass --identity-file (identity_file in the target) or load a key "
                "with ssh-add") from None
        if "banner" in text.lower() or text == "No existing session":
            # the handshake never completed: nothing (or no SSH) answered on that port
            text = (f"no SSH answer within {timeout:g} s ({text}; is the port an SSH "
                    "server?)")
        raise Transient(text) from None
    except (EOFError, ConnectionError, OSError) as exc:
        client.close()
        raise Transient(str(exc) or type(exc).__name__) from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    return client, policy.accepted


def _first_error(exc: paramiko.ssh_exception.NoValidConnectionsError) -> str:
    for err in exc.errors.values():
        return getattr(err, "strerror", None) or str(err)
    return str(exc)
