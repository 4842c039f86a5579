"""What a user sees when measuring on a device goes wrong, end to end through the CLI and a real
loopback sshd: every error is one line on stderr that names the fix, with exit status 1; Ctrl-C
kills the remote runner and removes its temp dir; two measurements never share the device; and
the local and SSH targets report the same kind of numbers for the same model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeprune.cli.main import main
from tests._sshd import (
    REPO,
    SSHServer,
    free_port,
    make_conv_model,
    make_memory_hog_model,
    make_unknown_op_model,
)

pytestmark = pytest.mark.ssh

FAST = ["--runs", "5", "--warmup", "1", "--repeats", "0", "--no-cache"]
SHAPE = ["--input-shape", "1x3x16x16"]


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEPRUNE_CONFIG_DIR", str(tmp_path / "cfg"))


def _target_file(path: Path, target, **changes: object) -> Path:
    """A targets TOML file for ``target`` (the fixture's, with its private work dir)."""
    ssh = target.ssh
    values: dict[str, object] = {
        "host": ssh.host, "port": ssh.port, "user": ssh.user,
        "identity_file": ssh.identity_file, "use_agent": ssh.use_agent,
        "known_hosts": ssh.known_hosts, "connect_timeout_s": 5.0, "retries": 0}
    top: dict[str, object] = {"python": target.python, "work_dir": target.work_dir}
    for key, value in changes.items():
        (top if key in ("python", "work_dir") else values)[key] = value
    lines = [f"{k} = {json.dumps(v)}" for k, v in top.items() if v is not None]
    if target.env:
        lines.append("[env]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in target.env.items()]
    lines.append("[ssh]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def _error_lines(err: str) -> list[str]:
    """stderr without progress lines (those start with two spaces)."""
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("  ")]


def _assert_device_clean(sshd: SSHServer, work_dir: str) -> None:
    work = sshd.device_path(work_dir)
    if (work / "runs").exists():
        assert list((work / "runs").iterdir()) == []
    assert not (work / "lock").exists()


# --- every error: one line, names the fix, exit 1 -------------------------------------------------

Case = Callable[[SSHServer, object, Path, pytest.MonkeyPatch], tuple[list[str], list[str]]]


def _closed_port(sshd, target, tmp, mp):
    return ["--target", str(_target_file(tmp / "t.toml", target, port=free_port()))], [
        "cannot reach", "connection refused", "is sshd running"]


def _wrong_key(sshd, target, tmp, mp):
    wrong = tmp / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    return ["--target", str(_target_file(tmp / "t.toml", target)), "--identity-file",
            str(wrong)], ["refused authentication", "ssh-copy-id"]


def _no_key(sshd, target, tmp, mp):
    mp.setenv("HOME", str(tmp / "empty-home"))
    mp.delenv("SSH_AUTH_SOCK", raising=False)
    return ["--target", str(_target_file(tmp / "t.toml", target, identity_file=None,
                                         use_agent=True))], [
        "no SSH key to offer", "--identity-file"]


def _encrypted_key(sshd, target, tmp, mp):
    key = tmp / "locked_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(key)],
                   check=True)
    return ["--target", str(_target_file(tmp / "t.toml", target)), "--identity-file",
            str(key)], ["encrypted", "ssh-add"]


def _unknown_host_key(sshd, target, tmp, mp):
    return ["--target", str(_target_file(tmp / "t.toml", target)), "--known-hosts",
            str(tmp / "empty_known_hosts")], ["unknown", "SHA256:", "--accept-new-host-key"]


def _changed_host_key(sshd, target, tmp, mp):
    other = tmp / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, b64 = other.with_suffix(".pub").read_text().split()[:2]
    kh = tmp / "known_hosts_old"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {kind} {b64}\n")
    return ["--target", str(_target_file(tmp / "t.toml", target)), "--known-hosts", str(kh),
            "--accept-new-host-key"], ["CHANGED", "SHA256:", "ssh-keygen -R"]


def _python_missing(sshd, target, tmp, mp):
    return ["--target", str(_target_file(tmp / "t.toml", target)), "--python",
            "/opt/no/such/python3"], ["not found", "python = ..."]


def _runtime_missing(sshd, target, tmp, mp):
    python = sshd.numpy_only_python()
    return ["--target", str(_target_file(tmp / "t.toml", target)), "--python", python], [
        "onnxruntime missing", f"{python} -m pip install onnxruntime"]


def _out_of_memory(sshd, target, tmp, mp):
    python, _how = sshd.oom_python(limit_mb=160)
    hog = make_memory_hog_model(tmp / "hog.onnx", mb=512)
    return ["--target", str(_target_file(tmp / "t.toml", target)), "--python", python,
            "MODEL=" + str(hog)], ["out of memory", "smaller model"]


def _cannot_load(sshd, target, tmp, mp):
    bad = make_unknown_op_model(tmp / "new op.onnx")
    return ["--target", str(_target_file(tmp / "t.toml", target)), "MODEL=" + str(bad)], [
        "cannot load the artifact", "NoSuchOp", "re-export"]


def _timeout(sshd, target, tmp, mp):
    return ["--target", str(_target_file(tmp / "t.toml", target)), "--runs", "10000000",
            "--timeout", "2", "--max-seconds", "600"], [
        "did not finish within 2 s", "raise --timeout"]


def _work_dir_not_writable(sshd, target, tmp, mp):
    return ["--target", str(_target_file(tmp / "t.toml", target, work_dir="/proc/ep-work"))], [
        "cannot create /proc/ep-work", "work_dir", "writable"]


def _work_dir_under_a_file(sshd, target, tmp, mp):
    return ["--target", str(_target_file(tmp / "t.toml", target, work_dir="/etc/passwd/ep"))], [
        "/etc/passwd", "is a file, not a directory", "work_dir"]


CASES: dict[str, Case] = {
    "timeout": _timeout, "work-dir-not-writable": _work_dir_not_writable,
    "work-dir-under-a-file": _work_dir_under_a_file,
    "closed-port": _closed_port, "wrong-key": _wrong_key, "no-key": _no_key,
    "encrypted-key": _encrypted_key, "unknown-host-key": _unknown_host_key,
    "changed-host-key": _changed_host_key, "python-missing": _python_missing,
    "runtime-missing": _runtime_missing, "out-of-memory": _out_of_memory,
    "cannot-load": _cannot_load,
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_error_is_one_line_naming_the_fix(case: str, sshd: SSHServer, ssh_target,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    extra, expected = CASES[case](sshd, ssh_target, tmp_path, monkeypatch)
    model = [a[len("MODEL="):] for a in extra if a.startswith("MODEL=")]
    extra = [a for a in extra if not a.startswith("MODEL=")]
    args = ["measure", *(model or [str(make_conv_model(tmp_path / "conv.onnx"))]), *FAST,
            *([] if model else SHAPE), *extra]
    assert main(args) == 1
    captured = capsys.readouterr()
    errors = _error_lines(captured.err)
    assert len(errors) == 1, captured.err
    assert errors[0].startswith("edgeprune: error: ") and " — " in errors[0]  # problem — fix
    for text in expected:
        assert text in errors[0], (text, errors[0])
    assert captured.out == ""
    _assert_device_clean(sshd, ssh_target.work_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_cli_disk_full_is_one_line(sshd: SSHServer, ssh_target, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    mount = sshd.device_path(f"{ssh_target.work_dir}-cli-tiny")
    mount.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        import shutil

        shutil.chown(mount, sshd.user, sshd.user)
        work = f"{ssh_target.work_dir}-cli-tiny/work"
        big = make_conv_model(tmp_path / "big.onnx", channels=24000)
        target = _target_file(tmp_path / "t.toml", ssh_target, work_dir=work)
        assert main(["measure", str(big), *FAST, *SHAPE, "--target", str(target)]) == 1
        errors = _error_lines(capsys.readouterr().err)
        assert len(errors) == 1 and "not enough disk space" in errors[0]
        assert "free space on the device or point work_dir at a larger disk" in errors[0]
        _assert_device_clean(sshd, work)
    finally:
        subprocess.run(["umount", str(mount)])
        mount.rmdir()


def _cli(args: list[str], *, env: dict[str, str] | None = None,
         **popen: object) -> subprocess.Popen[str]:
    """``edgeprune ARGS`` in a fresh process with default SIGINT handling (a shell started in
    the background may have left SIGINT ignored, and Python keeps that)."""
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from edgeprune.cli.main import main; sys.exit(main(sys.argv[1:]))")
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def test_silent_port_is_one_line_without_paramiko_traceback(sshd: SSHServer, ssh_target,
                                                            tmp_path: Path) -> None:
    """A port that accepts TCP but never speaks SSH: paramiko's transport thread logs a
    traceback; in a plain process (no pytest log capture) none of it may reach stderr."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        target = _target_file(tmp_path / "t.toml", ssh_target, port=silent.getsockname()[1],
                              connect_timeout_s=0.5)
        proc = _cli(["measure", str(make_conv_model(tmp_path / "m.onnx")), *FAST, *SHAPE,
                     "--target", str(target)], env={"EDGEPRUNE_CACHE_DIR": str(tmp_path / "c")})
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "Exception" not in err
    errors = _error_lines(err)
    assert len(errors) == 1 and "cannot reach" in errors[0] and "no SSH answer" in errors[0]
    assert out == ""


# --- Ctrl-C ------------------------------------------------------------------------------------


def _runner_pids(work_dir: Path) -> list[int]:
    """Live processes running the runner from ``work_dir`` on the (loopback) device."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(str(work_dir).encode() in part and b"runner-" in part
                                for part in cmdline):
            found.append(int(entry.name))
    return found


def _wait_for(predicate: Callable[[], object], what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_kills_the_remote_runner_and_removes_its_temp_dir(
        how: signal.Signals, sshd: SSHServer, ssh_target, tmp_path: Path) -> None:
    """Ctrl-C, or SIGTERM (a cancelled CI job): the same clean exit."""
    model = make_conv_model(tmp_path / "conv.onnx")
    target = _target_file(tmp_path / "t.toml", ssh_target)
    work = sshd.device_path(ssh_target.work_dir)
    # a measurement that would run for a minute (the per-attempt time cap)
    proc = _cli(["measure", str(model), "--runs", "1000000", "--warmup", "1", "--input-shape",
                 "1x3x128x128", "--repeats", "0", "--no-cache", "--target", str(target)],
                env={"EDGEPRUNE_CACHE_DIR": str(tmp_path / "c")})
    try:
        _wait_for(lambda: _runner_pids(work) or proc.poll() is not None, "the remote runner")
        assert proc.poll() is None, proc.communicate()
        runs = list((work / "runs").iterdir())
        assert len(runs) == 1 and (work / "lock").is_dir()  # what Ctrl-C must clean up
        proc.send_signal(how)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert _error_lines(err) == ["edgeprune: error: interrupted — nothing was measured to the "
                                 "end; anything started on the device was stopped and its files "
                                 "removed; run the command again"]
    assert _runner_pids(work) == []  # the remote process was killed, not left running
    assert not runs[0].exists() and list((work / "runs").iterdir()) == []
    assert not (work / "lock").exists()
    # the device is usable straight away
    proc = _cli(["measure", str(model), *FAST, *SHAPE, "--target", str(target)],
                env={"EDGEPRUNE_CACHE_DIR": str(tmp_path / "c")})
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


# --- the device lock ---------------------------------------------------------------------------


def test_second_measurement_waits_for_the_device(sshd: SSHServer, ssh_target,
                                                 tmp_path: Path) -> None:
    """Two measurements started together on one device run one after the other."""
    import dataclasses

    from edgeprune.devices.measure import MeasureSettings, measure_files
    from edgeprune.errors import TargetError

    model = make_conv_model(tmp_path / "conv.onnx")
    work = sshd.device_path(ssh_target.work_dir)
    long = MeasureSettings(runs=1_000_000, warmup=1, max_repeats=0, max_seconds=8.0,
                           input_shapes=("1x3x64x64",), cv_threshold=10.0, use_cache=False)
    short = dataclasses.replace(long, runs=5, max_seconds=60.0, input_shapes=("1x3x16x16",))
    results: dict[str, object] = {}

    def first() -> None:
        try:
            results["first"] = measure_files(model, ssh_target, long)
        except BaseException as exc:  # reported below
            results["first"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        _wait_for(lambda: _runner_pids(work) or not thread.is_alive(), "the first measurement")
        assert thread.is_alive(), results
        impatient = dataclasses.replace(ssh_target, lock_timeout_s=0.5)
        with pytest.raises(TargetError, match="busy: locked by .* pid"):
            measure_files(model, impatient, short)
        events: list[dict] = []
        second = measure_files(model, ssh_target, short, progress=events.append)
    finally:
        thread.join(300)
    assert not isinstance(results["first"], BaseException), results["first"]
    assert second.runs == 5 and results["first"].p50_ms > 0
    assert any("waiting for the device lock" in (e.get("message") or "") for e in events)
    assert _runner_pids(work) == []
    _assert_device_clean(sshd, ssh_target.work_dir)


# --- local and SSH: the same runner, the same report ------------------------------------------


def test_local_and_ssh_measure_report_the_same_things(sshd: SSHServer, ssh_target,
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """On loopback the "device" is this machine with the same onnxruntime wheel: everything but
    the timings must agree, and both text reports have the same layout. (How close the timings
    are is measured by scripts/bench_measure.py; tests do not assert on wall-clock time.)"""
    model = make_conv_model(tmp_path / "conv.onnx")
    target = _target_file(tmp_path / "t.toml", ssh_target)
    docs: dict[str, dict] = {}
    texts: dict[str, list[str]] = {}
    for name, where in (("local", "local"), ("ssh", str(target))):
        assert main(["measure", str(model), *FAST, *SHAPE, "--target", where,
                     "--format", "json"]) == 0
        docs[name] = json.loads(capsys.readouterr().out)
        assert main(["measure", str(model), *FAST, *SHAPE, "--target", where]) == 0
        texts[name] = capsys.readouterr().out.splitlines()
    local, remote = docs["local"], docs["ssh"]
    assert local["host"] is None and remote["host"] == "127.0.0.1"
    for key in ("artifact_sha256", "artifact_size_bytes", "runtime", "runtime_version", "inputs",
                "runs", "warmup", "providers", "threads"):
        assert local[key] == remote[key], key
    for key in ("machine", "cpu_model", "cores", "memory_total_mb", "kernel"):
        assert local["device"][key] == remote["device"][key], key
    assert local["device"]["python_executable"] == sys.executable
    assert remote["device"]["python_executable"] == "/usr/bin/python3"
    stats = ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
    for doc in (local, remote):
        values = [doc[k] for k in stats]
        assert values == sorted(values) and values[0] > 0 and doc["mean_ms"] > 0
        assert doc["peak_rss_mb"] > 10 and doc["session_create_ms"] > 0
    # same report layout: the table header, and every line after the first starts alike
    assert texts["local"][2].split() == texts["ssh"][2].split()
    assert texts["local"][2].startswith("p50 ms")
    def words(lines: list[str]) -> list[str]:  # table rules vary in width with the numbers
        return [ln.split()[0] for ln in lines[1:] if not ln.split()[0][0].isdigit()
                and set(ln.split()[0]) != {"-"}]

    assert words(texts["local"]) == words(texts["ssh"])
    assert words(texts["local"])[-2:] == ["peak", "device:"]
