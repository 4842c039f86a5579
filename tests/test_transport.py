"""The SSH transport against a real OpenSSH server on loopback."""

from __future__ import annotations

import dataclasses
import os
import posixpath
import socket
import subprocess
import time
from pathlib import Path

import pytest

from edgeprune.devices.transport.connection import Connection
from edgeprune.errors import (
    AuthenticationError,
    DeviceDiskFullError,
    HostKeyError,
    HostUnreachableError,
)
from tests._sshd import SSHServer, free_port

pytestmark = pytest.mark.ssh

HOSTILE = ["a b", "it's", 'say "hi"', "x; touch pwned", "$(touch pwned2)", "`id`", "*", "-n"]


def _ssh(target, **changes):
    return dataclasses.replace(target.ssh, **changes)


def test_arguments_arrive_verbatim(ssh_target) -> None:
    with Connection(ssh_target.ssh) as conn:
        result = conn.run(["python3", "-c", "import sys; print('\\n'.join(sys.argv[1:]))",
                           *HOSTILE])
        assert result.ok, result.stderr
        assert result.stdout.splitlines() == HOSTILE
        home = conn.home()
        assert not conn.exists(f"{home}/pwned") and not conn.exists(f"{home}/pwned2")


def test_unknown_host_key_is_refused_with_fingerprint(sshd: SSHServer, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    target = sshd.target(kh)
    with pytest.raises(HostKeyError) as err:
        Connection(target.ssh).open()
    assert "unknown" in str(err.value) and "SHA256:" in str(err.value)
    assert "--accept-new-host-key" in str(err.value)
    assert not kh.exists()


def test_accept_new_records_the_key_then_strict_works(sshd: SSHServer, tmp_path: Path) -> None:
    kh = tmp_path / "sub" / "known_hosts"
    target = sshd.target(kh, host_key_policy="accept-new")
    with Connection(target.ssh) as conn:
        assert conn.accepted_host_key and conn.accepted_host_key.startswith("SHA256:")
    recorded = kh.read_text()
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 " in recorded
    with Connection(_ssh(target, host_key_policy="strict")) as conn:
        assert conn.run(["true"]).ok
        assert conn.accepted_host_key is None


def test_changed_host_key_is_refused_even_with_accept_new(sshd: SSHServer, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, b64 = other.with_suffix(".pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {kind} {b64}\n")
    target = sshd.target(kh, host_key_policy="accept-new")
    with pytest.raises(HostKeyError) as err:
        Connection(target.ssh).open()
    text = str(err.value)
    assert "CHANGED" in text and text.count("SHA256:") == 2 and "ssh-keygen -R" in text


def test_wrong_client_key_is_an_auth_error(sshd: SSHServer, known_hosts: Path,
                                           tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    target = sshd.target(known_hosts, identity_file=str(wrong))
    with pytest.raises(AuthenticationError, match="refused authentication.*ssh-copy-id"):
        Connection(target.ssh).open()


def test_closed_port_is_unreachable(sshd: SSHServer, known_hosts: Path) -> None:
    target = sshd.target(known_hosts, port=free_port(), retries=0)
    with pytest.raises(HostUnreachableError, match="connection refused"):
        Connection(target.ssh).open()


def test_silent_server_times_out_as_unreachable(sshd: SSHServer, known_hosts: Path) -> None:
    # accepts TCP (kernel backlog) but never sends an SSH banner
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        target = sshd.target(known_hosts, port=port, retries=1, connect_timeout_s=0.5)
        with pytest.raises(HostUnreachableError, match="cannot reach"):
            Connection(target.ssh).open()


def test_reconnects_after_a_dropped_link(ssh_target) -> None:
    events: list[dict] = []
    with Connection(ssh_target.ssh, progress=events.append) as conn:
        assert conn.run(["true"]).ok
        conn._client.get_transport().sock.close()  # the link drops under us
        result = conn.run(["echo", "back"])
        assert result.ok and result.stdout.strip() == "back"


def test_dropped_link_mid_command_stops_the_orphan_then_reruns(ssh_target) -> None:
    """Without a terminal, a remote process outlives a dropped link; the re-run must not
    share the device with it."""
    import threading

    sleep = f"sleep {900 + os.getpid() % 997}"
    events: list[dict] = []
    with Connection(ssh_target.ssh, progress=events.append) as conn:
        flag = conn.resolve(ssh_target.work_dir) + "/first-run"
        conn.makedirs(posixpath.dirname(flag))
        script = f"if [ -e {flag} ]; then echo second; else touch {flag}; exec {sleep}; fi"
        started = threading.Event()

        def drop_when_started() -> None:
            deadline = time.monotonic() + 60
            while not _processes_matching(sleep) and time.monotonic() < deadline:
                time.sleep(0.02)
            started.set()
            conn._client.get_transport().sock.close()  # the link drops mid-command

        dropper = threading.Thread(target=drop_when_started)
        dropper.start()
        result = conn.run(["sh", "-c", script])
        dropper.join()
        assert started.is_set() and result.ok and result.stdout.strip() == "second"
    assert any(e["stage"] == "reconnect" for e in events)
    assert _processes_matching(sleep) == []


def test_killed_process_reports_minus_one_and_the_signal(ssh_target) -> None:
    with Connection(ssh_target.ssh) as conn:
        result = conn.run(["sh", "-c", "kill -9 $$"])
        assert result.exit_status == -1 and result.stdout == "" and result.signal == "KILL"
        crashed = conn.run(["sh", "-c", "kill -SEGV $$"])
        assert crashed.exit_status == -1 and crashed.signal == "SEGV"
        normal = conn.run(["sh", "-c", "exit 3"])
        assert normal.exit_status == 3 and normal.signal is None


def test_stderr_arrives_as_the_command_wrote_it(ssh_target) -> None:
    """The wrapper's PID and status lines, and the shell's own job notices ("Terminated"), are
    not part of what the command wrote."""
    with Connection(ssh_target.ssh) as conn:
        partial = conn.run(["sh", "-c", "echo out; printf 'no newline' >&2; exit 5"])
        assert (partial.exit_status, partial.stdout, partial.stderr) == (5, "out\n", "no newline")
        stopped = conn.run(["sh", "-c", "echo last words >&2; kill -TERM $$"], cwd="/tmp",
                           env={"X": "it's"})
        assert (stopped.exit_status, stopped.signal, stopped.stderr) == (-1, "TERM",
                                                                         "last words\n")
        quiet = conn.run(["true"])
        assert quiet.ok and quiet.stderr == "" and quiet.stdout == ""


def test_upload_hostile_names_and_remove(ssh_target, tmp_path: Path) -> None:
    local = tmp_path / "we'ird; $(x) name.bin"
    local.write_bytes(os.urandom(4096))
    with Connection(ssh_target.ssh) as conn:
        base = conn.resolve(ssh_target.work_dir) + "/up load"
        conn.makedirs(base)
        remote = f"{base}/{local.name}"
        conn.upload(local, remote)
        result = conn.run(["sha256sum", remote])
        assert result.ok, result.stderr
        import hashlib

        assert result.stdout.split()[0] == hashlib.sha256(local.read_bytes()).hexdigest()
        conn.remove_tree(base)
        assert not conn.exists(base)


def test_disk_full_is_a_named_error(sshd: SSHServer, ssh_target, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    mount = sshd.device_path("~/ep-full-disk")
    mount.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        os.chown(mount, *(_ids(sshd.user)))
        big = tmp_path / "big.onnx"
        big.write_bytes(os.urandom(3 * 1024 * 1024))
        with Connection(ssh_target.ssh) as conn, pytest.raises(DeviceDiskFullError,
                                                                match="disk space"):
            conn.upload(big, f"{mount}/big.onnx")
    finally:
        subprocess.run(["umount", str(mount)])
        mount.rmdir()


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def test_no_key_at_all_is_an_auth_error_not_unreachable(sshd: SSHServer, known_hosts: Path,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # a user with no identity file, no agent and an empty ~/.ssh: paramiko has nothing to offer
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    target = sshd.target(known_hosts, identity_file=None, use_agent=True)
    with pytest.raises(AuthenticationError, match="no SSH key to offer.*--identity-file"):
        Connection(target.ssh).open()


def test_disk_full_during_the_upload_itself(sshd: SSHServer, ssh_target, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The write fails with a real ENOSPC from sftp-server; the free-space pre-check (which
    normally refuses first) is the only part replaced, as if df were missing on the device."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    mount = sshd.device_path("~/ep-full-disk-2")
    mount.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        os.chown(mount, *(_ids(sshd.user)))
        big = tmp_path / "big.onnx"
        big.write_bytes(os.urandom(3 * 1024 * 1024))
        real_free = Connection.free_bytes
        calls: list[str] = []

        def free_bytes(self: Connection, path: str) -> int | None:
            calls.append(path)
            return None if len(calls) == 1 else real_free(self, path)

        monkeypatch.setattr(Connection, "free_bytes", free_bytes)
        with Connection(ssh_target.ssh) as conn:
            with pytest.raises(DeviceDiskFullError, match="disk full .* while uploading big.onnx"):
                conn.upload(big, f"{mount}/big.onnx")
            assert len(calls) == 2  # the pre-check skipped, the diagnosis after the failure real
            assert not conn.exists(f"{mount}/big.onnx")  # no partial file left behind
    finally:
        subprocess.run(["umount", str(mount)])
        mount.rmdir()


def test_ctrl_c_kills_the_remote_process(sshd: SSHServer, ssh_target) -> None:
    """A KeyboardInterrupt raised in the main thread while a command runs (what Ctrl-C does)
    kills the remote process before propagating."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    sleep = f"sleep {300 + os.getpid() % 997}"  # a command line no other test runs
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with Connection(ssh_target.ssh) as conn:
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            with pytest.raises(KeyboardInterrupt):
                conn.run(["sh", "-c", f"exec {sleep}"])
            signal.setitimer(signal.ITIMER_REAL, 0)
            assert conn.run(["true"]).ok  # the connection is still usable
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert _processes_matching(sleep) == []


def _processes_matching(text: str) -> list[int]:
    """PIDs of live (not zombie) processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_command_timeout_stops_the_remote_process(ssh_target) -> None:
    from edgeprune.errors import TargetError

    sleep = f"sleep {600 + os.getpid() % 997}"
    with Connection(ssh_target.ssh) as conn:
        with pytest.raises(TargetError, match="did not finish within 1 s.*--timeout"):
            conn.run(["sh", "-c", f"exec {sleep}"], timeout_s=1)
        assert conn.run(["true"]).ok
    assert _processes_matching(sleep) == []


def test_known_hosts_read_like_openssh(sshd: SSHServer, tmp_path: Path) -> None:
    """Hashed names (Debian's HashKnownHosts default), @cert-authority and unreadable lines:
    the bad lines are skipped with a note, not fatal; a changed key is still caught."""
    kh = tmp_path / "known_hosts"
    kh.write_text("# comment\n"
                  "@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGh0Z0Yd0e6"
                  "wDtgC2+1L7Z2+Z5Kp9nS8HsJw2tQJ6sQb\n"
                  "broken.example.com ssh-ed25519 AAAA!!not-base64\n"
                  + sshd.host_key_line())
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert "127.0.0.1" not in kh.read_text()  # hashed
    events: list[dict] = []
    target = sshd.target(kh)
    with Connection(target.ssh, progress=events.append) as conn:
        assert conn.run(["true"]).ok
    assert any("ignored 1 unreadable line" in e["message"] for e in events)

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, b64 = other.with_suffix(".pub").read_text().split()[:2]
    kh.write_text(f"[127.0.0.1]:{sshd.port} {kind} {b64}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    with pytest.raises(HostKeyError, match="CHANGED"):
        Connection(target.ssh).open()


def test_upload_survives_a_link_dropped_mid_transfer(ssh_target, tmp_path: Path) -> None:
    import hashlib

    local = tmp_path / "model.onnx"
    local.write_bytes(os.urandom(2 * 1024 * 1024))
    events: list[dict] = []
    with Connection(ssh_target.ssh, progress=events.append) as conn:
        base = conn.resolve(ssh_target.work_dir)
        conn.makedirs(base)
        dropped: list[bool] = []

        def progress(event: dict) -> None:
            if not dropped:  # the first progress report: the transfer has begun
                dropped.append(True)
                conn._client.get_transport().sock.close()

        conn.upload(local, f"{base}/model.onnx", progress=progress)
        result = conn.run(["sha256sum", f"{base}/model.onnx"])
    assert dropped and result.ok
    assert result.stdout.split()[0] == hashlib.sha256(local.read_bytes()).hexdigest()
    assert any("dropped during the upload" in e["message"] for e in events)


def test_sftp_calls_survive_a_dropped_link(ssh_target) -> None:
    events: list[dict] = []
    with Connection(ssh_target.ssh, progress=events.append) as conn:
        base = conn.resolve(ssh_target.work_dir)
        conn.makedirs(base + "/d")
        calls = [lambda: conn.write_text(base + "/f", "x"), lambda: conn.listdir(base),
                 lambda: conn.exists(base + "/d"), lambda: conn.read_text(base + "/f")]
        answers = []
        for call in calls:
            conn._client.get_transport().sock.close()  # dropped just before the call
            answers.append(call())
    assert answers[0] is None and {"d", "f"} <= {name for name, _m, _d in answers[1]}
    assert answers[2] is True and answers[3] == "x"
    assert any(e["stage"] == "reconnect" for e in events)


def test_identity_files_of_every_kind(sshd: SSHServer, known_hosts: Path, tmp_path: Path) -> None:
    """A PEM RSA key the server accepts works; a public key, garbage or an unauthorised key
    each get their own one-line error (not paramiko's last parse error, not "unreachable")."""
    rsa = tmp_path / "id_rsa_pem"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "",
                    "-f", str(rsa)], check=True)
    stranger = tmp_path / "id_ecdsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(stranger)], check=True)
    with open(sshd.root / "authorized_keys", "a") as fh:  # the shared server: one more key
        fh.write(rsa.with_suffix(".pub").read_text())
    with Connection(sshd.target(known_hosts, identity_file=str(rsa)).ssh) as conn:
        assert conn.run(["true"]).ok
    with pytest.raises(AuthenticationError, match="refused authentication with key"):
        Connection(sshd.target(known_hosts, identity_file=str(stranger)).ssh).open()
    with pytest.raises(AuthenticationError, match="not a private key.*without .pub"):
        Connection(sshd.target(known_hosts, identity_file=str(rsa) + ".pub").ssh).open()
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    with pytest.raises(AuthenticationError, match="not a private key.*ssh-keygen"):
        Connection(sshd.target(known_hosts, identity_file=str(garbage)).ssh).open()
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pw", "-f", str(locked)],
                   check=True)
    with pytest.raises(AuthenticationError, match="encrypted.*ssh-add"):
        Connection(sshd.target(known_hosts, identity_file=str(locked)).ssh).open()


def test_device_without_sftp_is_named(sshd: SSHServer, tmp_path: Path) -> None:
    """Minimal images (dropbear, a hand-written sshd_config) may lack the sftp subsystem."""
    from edgeprune.errors import TargetError

    class NoSftp(SSHServer):
        def _config(self) -> str:
            return super()._config().replace("Subsystem sftp internal-sftp\n", "")

    with NoSftp() as server:  # its own temp dir: the device user must read authorized_keys
        kh = server.write_known_hosts(tmp_path / "kh")
        with Connection(server.target(kh).ssh) as conn:
            assert conn.run(["true"]).ok  # commands work, file transfer does not
            with pytest.raises(TargetError, match="refused an SFTP session.*sftp subsystem"):
                conn.home()


def test_paramiko_logging_is_quieted_on_first_connect_not_at_import(tmp_path: Path) -> None:
    """Importing the transport leaves the process's logging alone; the first connect (even a
    failed one) gives paramiko's logger one null handler, and later connects add no more."""
    import sys

    code = (
        "import logging\n"
        "from edgeprune.devices.targets import SSHSettings\n"
        "from edgeprune.devices.transport.connection import Connection\n"
        "from edgeprune.errors import HostUnreachableError\n"
        "log = logging.getLogger('paramiko')\n"
        "print(len(log.handlers))\n"
        f"s = SSHSettings(host='127.0.0.1', port={free_port()}, retries=0, "
        f"known_hosts={str(tmp_path / 'kh')!r})\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        Connection(s).open()\n"
        "    except HostUnreachableError:\n"
        "        pass\n"
        "    print([type(h).__name__ for h in log.handlers])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["0", "['NullHandler']", "['NullHandler']"]
