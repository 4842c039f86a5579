"""The measure / targets / profiles commands end to end (real runner, real sshd)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.cli.main import main
from tests._sshd import SSHServer, make_conv_model


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEPRUNE_CONFIG_DIR", str(tmp_path / "cfg"))


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return make_conv_model(tmp_path / "conv.onnx")


FAST = ["--runs", "5", "--warmup", "1", "--repeats", "0", "--input-shape", "1x3x16x16"]


def _json(capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_measure_local_json(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", str(model), *FAST, "--per-op", "--format", "json"]) == 0
    data, err = _json(capsys)
    assert data["target"] == "local" and data["profile"] == "local"
    assert data["p50_ms"] > 0 and data["per_op"]["by_op_type"]
    assert "measuring conv.onnx" in err  # progress on stderr, stdout stays JSON


def test_measure_local_text(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", str(model), *FAST]) == 0
    out = capsys.readouterr().out
    assert "p50 ms" in out and "peak RSS" in out and "device:" in out


@pytest.mark.ssh
def test_one_off_ssh_target(sshd: SSHServer, known_hosts: Path, model: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
    base = ["measure", str(model), *FAST, "--target", url, "--identity-file",
            str(sshd.client_key), "--python", "/usr/bin/python3", "--profile", "rpi4",
            "--format", "json"]
    assert main([*base, "--known-hosts", str(known_hosts)]) == 0
    data, _ = _json(capsys)
    assert data["host"] == "127.0.0.1" and data["profile"] == "rpi4"
    assert data["threads"] == 4  # from the rpi4 profile

    fresh = known_hosts.parent / "fresh_known_hosts"
    assert main([*base, "--known-hosts", str(fresh), "--no-cache"]) == 1
    data, err = _json(capsys)
    assert data["error"]["type"] == "HostKeyError"
    errors = [ln for ln in err.splitlines() if ln.startswith("edgeprune: error:")]
    assert len(errors) == 1 and "SHA256:" in errors[0] and "--accept-new-host-key" in errors[0]
    # --no-cache: a cached result would answer without connecting at all
    assert main([*base, "--known-hosts", str(fresh), "--accept-new-host-key", "--no-cache"]) == 0
    assert f"[127.0.0.1]:{sshd.port}" in fresh.read_text()


@pytest.mark.ssh
def test_targets_check_over_ssh(sshd: SSHServer, known_hosts: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
    assert main(["targets", "check", url, "--identity-file", str(sshd.client_key),
                 "--known-hosts", str(known_hosts), "--python", "/usr/bin/python3",
                 "--format", "json"]) == 0
    data, _ = _json(capsys)
    assert data["runtimes"]["onnxruntime"]["present"] is True
    assert data["device"]["python_executable"] == "/usr/bin/python3"
    assert main(["targets", "check", url, "--identity-file", str(sshd.client_key),
                 "--known-hosts", str(known_hosts), "--python", "/usr/bin/python3"]) == 0
    assert "onnxruntime" in capsys.readouterr().out


def _error_lines(err: str) -> list[str]:
    """stderr minus progress lines (which start with two spaces)."""
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("  ")]


def _check_args(sshd: SSHServer, known_hosts: Path, python: str) -> list[str]:
    return ["targets", "check", f"ssh://{sshd.user}@127.0.0.1:{sshd.port}", "--identity-file",
            str(sshd.client_key), "--known-hosts", str(known_hosts), "--python", python]


@pytest.mark.ssh
def test_targets_check_fails_without_a_runtime(sshd: SSHServer, known_hosts: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    numpy_only = sshd.numpy_only_python()
    assert main(_check_args(sshd, known_hosts, numpy_only)) == 1
    captured = capsys.readouterr()
    errors = _error_lines(captured.err)
    assert len(errors) == 1 and errors[0].startswith("edgeprune: error: no model runtime")
    assert f"{numpy_only} -m pip install onnxruntime" in errors[0]
    # the facts still show what is there and what is not
    assert "NOT ready" in captured.out and "numpy " in captured.out
    assert "onnxruntime     missing" in captured.out

    # a TFLite-only profile names the TFLite package instead (Python 3.10+: ai-edge-litert)
    profile = sshd.root / "tflite-board.toml"
    profile.write_text('runtimes = ["tflite"]\narch = "any"\n')
    assert main([*_check_args(sshd, known_hosts, numpy_only), "--profiles-file", str(profile),
                 "--profile", "tflite-board"]) == 1
    assert "pip install ai-edge-litert" in _error_lines(capsys.readouterr().err)[0]

    bare = sshd.bare_python()
    assert main([*_check_args(sshd, known_hosts, bare), "--format", "json"]) == 1
    data, err = _json(capsys)  # one JSON document: the facts plus the error
    assert data["ready"] is False and data["runtimes"]["numpy"]["present"] is False
    assert data["error"]["type"] == "RuntimeMissingError"
    assert f"{bare} -m pip install numpy onnxruntime" in data["error"]["message"]
    assert "edgeprune: error:" not in err


@pytest.mark.ssh
def test_targets_check_python_missing_or_too_old(sshd: SSHServer, known_hosts: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_check_args(sshd, known_hosts, "/opt/no/such/python3")) == 1
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "'/opt/no/such/python3' not found" in errors[0]
    assert "python = ..." in errors[0]

    old = sshd.old_python("3.5.2")  # test double: reports 3.5.2, see tests/_sshd.py
    assert main(_check_args(sshd, known_hosts, old)) == 1
    captured = capsys.readouterr()
    errors = _error_lines(captured.err)
    assert len(errors) == 1 and "Python 3.5.2" in errors[0] and "too old" in errors[0]
    assert "3.6" in errors[0] and "--python" in errors[0]
    assert "python    : 3.5.2" in captured.out


@pytest.mark.ssh
def test_targets_check_ready_device_lists_runtimes(sshd: SSHServer, known_hosts: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_check_args(sshd, known_hosts, "/usr/bin/python3"), "--format", "json"]) == 0
    data, _ = _json(capsys)
    assert data["ready"] is True and "error" not in data
    runtimes = data["runtimes"]
    import numpy
    import onnxruntime

    assert runtimes["onnxruntime"]["version"] == onnxruntime.__version__  # same wheel pinned
    assert runtimes["numpy"]["version"] == numpy.__version__
    assert "CPUExecutionProvider" in runtimes["onnxruntime"]["providers"]
    assert set(runtimes) >= {"numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime"}
    assert all(r["version"] for r in runtimes.values() if r["present"])
    dev = data["device"]
    assert dev["machine"] and dev["cores"] >= 1 and dev["memory_total_mb"] > 0


def test_targets_check_local(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "check", "local", "--format", "json"]) == 0
    data, _ = _json(capsys)
    assert data["ready"] is True and data["runtimes"]["onnxruntime"]["present"] is True
    # this machine's Python without any site-packages (python -S): no numpy, no runtime
    wrapper = tmp_path / "python-no-site"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    wrapper.chmod(0o755)
    assert main(["targets", "check", "local", "--python", str(wrapper)]) == 1
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "numpy and a model runtime" in errors[0]
    assert "pip install numpy onnxruntime" in errors[0]


def test_errors_are_one_line_with_exit_codes(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "resnet.pt"
    spec.write_bytes(b"x")
    assert main(["measure", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not an .onnx or .tflite file" in err
    onnx_file = make_conv_model(tmp_path / "m.onnx")
    assert main(["measure", str(onnx_file), "--target", "nope-device"]) == 1
    assert "no target named 'nope-device'" in capsys.readouterr().err


def test_profiles_and_targets_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "list", "--format", "json"]) == 0
    names = {p["name"] for p in _json(capsys)[0]["profiles"]}
    assert {"rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "local"} <= names
    assert main(["profiles", "show", "jetson-nano"]) == 0
    assert "max_latency_ms" in capsys.readouterr().out
    assert main(["targets", "list", "--format", "json"]) == 0
    targets = {t["name"]: t for t in _json(capsys)[0]["targets"]}
    assert targets["local"]["kind"] == "local" and targets["rpi4"]["kind"] == "ssh"
    assert main(["targets", "show", "rpi5", "--format", "json"]) == 0
    assert _json(capsys)[0]["target"]["ssh"]["host_key_policy"] == "strict"


def test_help_imports_nothing_heavy() -> None:
    code = ("import sys; from edgeprune.cli.main import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'paramiko', 'numpy') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_measure_a_spec_names_the_spec_not_its_cached_export(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A spec is exported on the fly into the cache: what the user sees is the spec they typed;
    the export stays in the JSON. C,H,W means one image, as in prune/info/export."""
    # never "noisy" (3 runs under load can have an IQR-based CV above 10): always cached
    quick = ["--runs", "3", "--warmup", "0", "--repeats", "0", "--cv-threshold", "1e6"]
    assert main(["measure", "builtin:mnist-cnn", *quick, "--input-shape", "1x28x28"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "builtin:mnist-cnn on local (local)"
    assert "measuring builtin:mnist-cnn on local" in captured.err
    assert "exports" not in captured.out + captured.err  # the cache path is not what was asked

    assert main(["measure", "builtin:mnist-cnn", *quick, "--input-shape", "1x1x28x28",
                 "--format", "json"]) == 0
    data, err = _json(capsys)
    assert data["model"] == "builtin:mnist-cnn" and data["cached"]  # same export, same result
    exported = Path(data["artifact"])
    assert exported.parent == tmp_path / "cache" / "exports" and exported.suffix == ".onnx"
    assert data["inputs"]["input"]["shape"] == [1, 1, 28, 28]
    assert "cached result for builtin:mnist-cnn" in err

    # an artifact file keeps its path in both places
    onnx_file = make_conv_model(tmp_path / "conv.onnx")
    assert main(["measure", str(onnx_file), *FAST, "--format", "json"]) == 0
    data, _ = _json(capsys)
    assert data["model"] == data["artifact"] == str(onnx_file)


def test_wrong_input_shape_for_fixed_dims_is_refused_before_running(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixed = make_conv_model(tmp_path / "model.onnx", dynamic=False)  # x: 1×3×32×32
    assert main(["measure", str(fixed), "--input-shape", "1x3x16x16"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "edgeprune: error: input 'x' is fixed at 1×3×32×32 in model.onnx; --input-shape "
        "1x3x16x16 does not match — drop --input-shape or give 1x3x32x32"]
    assert not (tmp_path / "cache" / "locks").exists()  # no runner was started

    assert main(["measure", str(fixed), "--input-shape", "1x3x16", "--format", "json"]) == 2
    data, _ = _json(capsys)
    assert data["error"]["type"] == "UsageError" and "give 1x3x32x32" in data["error"]["message"]
    assert main(["measure", str(fixed), "--input-shape", "1x3x3two"]) == 2
    assert "cannot read --input-shape '1x3x3two'" in capsys.readouterr().err

    # the shape the message asks for runs in onnxruntime; so does any size of a dynamic dim
    assert main(["measure", str(fixed), *FAST[:6], "--input-shape", "1x3x32x32",
                 "--format", "json"]) == 0
    assert _json(capsys)[0]["inputs"]["x"]["shape"] == [1, 3, 32, 32]
    dynamic = make_conv_model(tmp_path / "dyn.onnx")  # x: N×3×H×W
    assert main(["measure", str(dynamic), *FAST[:6], "--input-shape", "2x3x9x5"]) == 0
    assert main(["measure", str(dynamic), "--input-shape", "1x1x9x5"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "edgeprune: error: input 'x' is N×3×H×W in dyn.onnx (only N, H, W can vary); "
        "--input-shape 1x1x9x5 does not match — give 1x3x9x5")


def test_ctrl_c_while_exporting_a_spec_says_what_happened(tmp_path: Path) -> None:
    """Ctrl-C before any runner starts (the spec is still exporting): exit 130, and the one
    line is true — nothing was started on a device, and no half-written export is left to be
    reused by the next run."""
    import os
    import signal

    from edgeprune.cli.measure import INTERRUPTED

    cache = tmp_path / "cache"
    env = {**os.environ, "EDGEPRUNE_CACHE_DIR": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "edgeprune.cli.main", "measure",
                             "torchvision:resnet50", "--target", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen = []
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "exporting torchvision:resnet50" in line:
                break
        assert proc.poll() is None, "".join(seen)
        proc.send_signal(signal.SIGINT)
        _out, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = "".join(seen) + rest
    assert proc.returncode == 130, err
    assert [ln for ln in err.splitlines() if ln.startswith("edgeprune: error:")] == [
        f"edgeprune: error: {INTERRUPTED}"]
    assert "nothing was measured" in INTERRUPTED and "anything started" in INTERRUPTED
    assert not (cache / "locks").exists()  # no runner, no device lock
    assert list((cache / "exports").glob("*.onnx")) == []
