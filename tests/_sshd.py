"""A real OpenSSH server on 127.0.0.1 acting as an edge device, for tests and benchmarks.

As root: a dedicated unprivileged user (``edgeprune-dev``, created with ``useradd -m`` then
``usermod -p '*'`` so the locked account accepts keys) whose ``~/.bashrc`` gives the *system*
``/usr/bin/python3`` ``PYTHONPATH=`` the device package directory built by
``scripts/prepare_test_device.sh`` — like a real device whose Python is not ours. Not root but
``/usr/sbin/sshd`` present: the server logs in as the current user and the target passes
``PYTHONPATH`` through its ``env`` table instead. Neither: the fixtures skip, saying why.

The server: generated ed25519 host and client keys in a temp dir, key-only auth, ``UsePAM no``,
``Subsystem sftp internal-sftp``, an absolute ``AuthorizedKeysFile``, a random free port, started
as ``/usr/sbin/sshd -D -e -f CONFIG``. ``StrictModes no`` because the temp dir lives under the
world-writable /tmp. ``scripts/bench_measure.py`` imports :class:`SSHServer` too.

Use in tests: ``pytest -p tests._sshd`` (or ``pytest_plugins = ["tests._sshd"]`` in conftest).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
DEVICE_USER = "edgeprune-dev"
DEVICE_PYTHON = "/usr/bin/python3"
DEVICE_PYDIR = os.environ.get("EDGEPRUNE_DEVICE_PYDIR", "/opt/edgeprune-device/python")
REPO = Path(__file__).resolve().parent.parent
OOM_CGROUP = "/sys/fs/cgroup/memory/edgeprune-test-oom"
BASHRC_MARK = "# edgeprune test device"

__all__ = ["SSHServer", "device_python_dir", "skip_reason", "ssh_target", "sshd"]


def skip_reason() -> str | None:
    """Why the SSH tests cannot run here, or None."""
    if not os.path.exists(SSHD):
        return (f"{SSHD} not found: install openssh-server (scripts/prepare_test_device.sh does "
                "it as root)")
    if not shutil.which("ssh-keygen") and not os.path.exists(SSH_KEYGEN):
        return "ssh-keygen not found: install openssh-client"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def device_python_dir() -> str | None:
    """The device package dir, built by prepare_test_device.sh on first use (as root)."""
    check = subprocess.run([DEVICE_PYTHON, "-c", "import numpy, onnxruntime"],
                           env={"PYTHONPATH": DEVICE_PYDIR, "PATH": "/usr/bin:/bin"},
                           capture_output=True)
    if check.returncode == 0:
        return DEVICE_PYDIR
    if os.geteuid() == 0:
        subprocess.run(["bash", str(REPO / "scripts" / "prepare_test_device.sh")], check=True)
        return DEVICE_PYDIR
    return None


def _keygen(path: Path, comment: str) -> None:
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True)


def ensure_device_user(pydir: str | None) -> str:
    """Create the unprivileged device user (root only) and give its shell the device PYTHONPATH."""
    if os.geteuid() != 0:
        return getpass.getuser()
    if subprocess.run(["id", "-u", DEVICE_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", DEVICE_USER], check=True)
        subprocess.run(["usermod", "-p", "*", DEVICE_USER], check=True)
    home = Path(f"~{DEVICE_USER}").expanduser()
    bashrc = home / ".bashrc"
    text = bashrc.read_text() if bashrc.exists() else ""
    line = f"{BASHRC_MARK}\nexport PYTHONPATH={pydir}\n" if pydir else ""
    if pydir and f"export PYTHONPATH={pydir}\n" not in text:
        # first lines: Debian's .bashrc returns early for non-interactive shells (ssh commands)
        kept = "".join(ln for ln in text.splitlines(keepends=True)
                       if not ln.startswith(("export PYTHONPATH=", BASHRC_MARK)))
        bashrc.write_text(line + kept)
        shutil.chown(bashrc, DEVICE_USER, DEVICE_USER)
    return DEVICE_USER


class SSHServer:
    """One sshd on 127.0.0.1:<random port>; ``start()``/``stop()`` or use as a context manager."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="edgeprune-sshd-"))
        self.root.chmod(0o755)
        self.host = "127.0.0.1"
        self.port = 0
        self.user = getpass.getuser()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pydir: str | None = None

    # keys and files -----------------------------------------------------------------------------
    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def client_key(self) -> Path:
        return self.root / "client_ed25519"

    @property
    def log_file(self) -> Path:
        return self.root / "sshd.log"

    def host_key_line(self) -> str:
        """The known_hosts line for this server."""
        kind, b64 = (self.host_key.with_suffix(".pub").read_text().split()[:2])
        return f"[{self.host}]:{self.port} {kind} {b64}\n"

    def write_known_hosts(self, path: Path) -> Path:
        path.write_text(self.host_key_line())
        return path

    key_comment = "edgeprune-test"

    def prepare_device(self) -> None:
        """Set ``pydir`` (the device Python's package dir, or None) and ``user``."""
        self.pydir = device_python_dir()
        self.user = ensure_device_user(self.pydir)

    def start(self) -> SSHServer:
        self.prepare_device()
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        _keygen(self.host_key, f"{self.key_comment}-host")
        _keygen(self.client_key, f"{self.key_comment}-client")
        auth = self.root / "authorized_keys"
        auth.write_text(self.client_key.with_suffix(".pub").read_text())
        auth.chmod(0o644)
        for attempt in range(5):
            self.port = free_port()
            config = self.root / "sshd_config"
            config.write_text(self._config())
            log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the process
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
            if self._wait_listening():
                return self
            self.stop()
            if attempt == 4:
                raise RuntimeError(f"sshd did not start: {self.log_file.read_text()[-2000:]}")
        return self

    def _config(self) -> str:
        return "\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin no",
            "StrictModes no",
            f"AllowUsers {self.user}",
            "Subsystem sftp internal-sftp",
            "MaxSessions 64",
            "MaxStartups 64",
            "LogLevel ERROR",
            "",
        ])

    def _wait_listening(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), \
                    socket.create_connection((self.host, self.port), 0.2):
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SSHServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # targets ------------------------------------------------------------------------------------
    def target(self, known_hosts: Path | None, *, name: str = "loopback",
               work_dir: str | None = None, python: str = DEVICE_PYTHON, **ssh_changes: object):
        """A :class:`edgeprune.devices.targets.Target` pointing at this server."""
        from edgeprune.config import from_dict
        from edgeprune.devices.targets import Target

        ssh = {"host": self.host, "port": self.port, "user": self.user,
               "identity_file": str(self.client_key), "use_agent": False,
               "known_hosts": str(known_hosts or (self.root / "no_known_hosts")),
               "connect_timeout_s": 5.0, "command_timeout_s": 120.0, "retries": 1}
        ssh.update(ssh_changes)
        data: dict[str, object] = {
            "name": name, "python": python, "ssh": ssh,
            "work_dir": work_dir or f"~/ep-test/{uuid.uuid4().hex[:10]}",
        }
        if os.geteuid() != 0 and self.pydir:
            data["env"] = {"PYTHONPATH": self.pydir}
        return from_dict(Target, data, source="tests/_sshd.py")

    def device_path(self, path: str) -> Path:
        """A device path (``~/...``) as seen from this machine (same host)."""
        if path.startswith("~/"):
            return Path(f"~{self.user}").expanduser() / path[2:]
        return Path(path)

    def oom_python(self, limit_mb: int = 160) -> tuple[str, str]:
        """A wrapper that runs the device python under a memory limit: (path, how).

        Prefers a cgroup-v1 memory limit (the kernel's OOM killer, exit without status — what a
        real device shows); falls back to ``ulimit -v`` (allocations fail inside the runner).
        """
        wrapper = self.root / f"python-mem{limit_mb}.sh"
        how = "ulimit"
        if os.geteuid() == 0 and Path("/sys/fs/cgroup/memory").is_dir():
            try:
                cg = Path(OOM_CGROUP)
                cg.mkdir(exist_ok=True)
                (cg / "memory.limit_in_bytes").write_text(str(limit_mb * 1024 * 1024))
                with contextlib.suppress(OSError):
                    (cg / "memory.swappiness").write_text("0")
                for name in ("cgroup.procs", "tasks"):
                    shutil.chown(cg / name, self.user)
                how = "cgroup"
            except OSError:
                how = "ulimit"
        if how == "cgroup":
            body = f'echo $$ > {OOM_CGROUP}/cgroup.procs || exit 99\nexec {DEVICE_PYTHON} "$@"\n'
        else:
            body = f'ulimit -v {limit_mb * 1024 * 4}\nexec {DEVICE_PYTHON} "$@"\n'
        wrapper.write_text("#!/bin/sh\n" + body)
        wrapper.chmod(0o755)
        return str(wrapper), how

    def bare_python(self) -> str:
        """A wrapper running the device python with an empty PYTHONPATH (runtime missing)."""
        wrapper = self.root / "python-bare.sh"
        wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH=\nexec {DEVICE_PYTHON} "$@"\n')
        wrapper.chmod(0o755)
        return str(wrapper)

    def numpy_only_python(self) -> str:
        """A wrapper running the device python with numpy but no onnxruntime (runtime missing)."""
        numpy_only = self.root / "numpy-only"
        numpy_only.mkdir(exist_ok=True)
        for entry in Path(self.pydir or DEVICE_PYDIR).iterdir():
            if entry.name.startswith("numpy") and not (numpy_only / entry.name).exists():
                (numpy_only / entry.name).symlink_to(entry)
        wrapper = self.root / "python-numpy-only.sh"
        wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH={numpy_only}\n'
                           f'exec {DEVICE_PYTHON} "$@"\n')
        wrapper.chmod(0o755)
        return str(wrapper)

    def old_python(self, version: str = "3.5.2") -> str:
        """Test double for a device whose Python is too old (no such interpreter here): the
        device python with numpy and onnxruntime, made to *report* ``version`` by a
        sitecustomize that rewrites ``sys.version`` before the runner starts."""
        site = self.root / f"old-python-{version}"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(
            "import sys\n"
            f"sys.version = {version!r} + ' ' + sys.version.split(' ', 1)[1]\n")
        path = f"{site}:{self.pydir or DEVICE_PYDIR}"
        wrapper = self.root / f"python-{version}.sh"
        wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH={path}\nexec {DEVICE_PYTHON} "$@"\n')
        wrapper.chmod(0o755)
        return str(wrapper)


_Server = TypeVar("_Server", bound=SSHServer)


# --- pytest fixtures -----------------------------------------------------------------------------


def serve(server: _Server, reason: str | None) -> Iterator[_Server]:
    """Start ``server`` for a fixture and stop it afterwards; skip (saying why) when ``reason``
    is set or the server cannot start."""
    if reason:
        pytest.skip(reason)
    try:
        server.start()
    except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
        server.cleanup()
        pytest.skip(f"could not start {type(server).__name__}'s sshd: {exc}")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    yield from serve(SSHServer(), skip_reason())


@pytest.fixture()
def known_hosts(sshd: SSHServer, tmp_path: Path) -> Path:
    """A known-hosts file that already trusts the test server."""
    return sshd.write_known_hosts(tmp_path / "known_hosts")


@pytest.fixture()
def ssh_target(sshd: SSHServer, known_hosts: Path):
    """A target for the test server with its host key trusted and a fresh remote work dir
    (removed afterwards)."""
    target = sshd.target(known_hosts)
    yield target
    shutil.rmtree(sshd.device_path(target.work_dir), ignore_errors=True)


# --- small real ONNX models (onnx.helper: no torch import, loads in onnxruntime) ----------------


def make_conv_model(path: Path, *, channels: int = 8, external_data: str | None = None,
                    dynamic: bool = True) -> Path:
    """Conv -> Relu -> GlobalAveragePool; ``external_data`` stores the weights in that file
    beside the model (what torch's dynamo exporter does for large models)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    w = numpy_helper.from_array(rng.randn(channels, 3, 3, 3).astype(np.float32) * 0.1, "w")
    b = numpy_helper.from_array(np.zeros(channels, np.float32), "b")
    dims = ["N", 3, "H", "W"] if dynamic else [1, 3, 32, 32]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [x], [y], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external_data:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=external_data, size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def make_memory_hog_model(path: Path, *, mb: int = 512) -> Path:
    """A tiny file whose run allocates ``mb`` MiB (ConstantOfShape + Add)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = mb * 1024 * 1024 // 4
    shape = numpy_helper.from_array(np.array([n], dtype=np.int64), "shape")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("Add", ["big", "x"], ["y"])]
    graph = helper.make_graph(nodes, "hog", [x], [y], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def make_unknown_op_model(path: Path) -> Path:
    """A well-formed model with an operator no runtime has: loads in onnx, not in a runtime."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path
