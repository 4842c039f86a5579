"""Client keys: a private key file loaded here, with a one-line error for each way it fails."""

from __future__ import annotations

from pathlib import Path

import paramiko

from edgeprune.errors import AuthenticationError

__all__ = ["load_identity"]


def load_identity(path: str) -> paramiko.PKey:
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
