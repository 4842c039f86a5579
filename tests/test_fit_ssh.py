"""fit over a real OpenSSH server on loopback (tests/_sshd.py), as a user with a one-off device.

The device is this machine reached as an unprivileged user whose Python is the system's, so every
candidate travels through SFTP and the 3.6-compatible runner. Timings over loopback are as noisy
as local ones: the test asserts on what the run recorded and on the device being left clean,
never on wall-clock time or on the budget being met. Also: the fit's checks that run before any
work (host key, the --tflite converter).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from edgeprune.cli.main import main
from tests._sshd import DEVICE_PYTHON, SSHServer

QUICK_FLAGS = ["--model", "builtin:mnist-cnn", "--data", "builtin:mnist5k",
               "--step-batches", "3", "--epochs", "1", "--final-batches", "3", "--runs", "10",
               "--eval-batches", "4", "--exporter", "torchscript", "--uniform-tolerance", "0.45",
               "--verify-pairs", "1"]



def _device_run_dirs(sshd: SSHServer) -> set[str]:
    """Per-measurement temp dirs under the default work dir of a one-off target."""
    runs = sshd.device_path("~/.cache/edgeprune-device/runs")
    return {p.name for p in runs.iterdir()} if runs.exists() else set()


@pytest.mark.ssh
@pytest.mark.slow
def test_fit_over_loopback_ssh(sshd: SSHServer, known_hosts: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
    out = tmp_path / "run"
    before = _device_run_dirs(sshd)
    code = main(["fit", *QUICK_FLAGS, "--target", url, "--identity-file", str(sshd.client_key),
                 "--known-hosts", str(known_hosts), "--python", DEVICE_PYTHON,
                 "--speedup", "1.3", "--out", str(out), "--format", "json"])
    assert code in (0, 3), capsys.readouterr().err  # 3: loopback noise missed the budget
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == url
    assert report["device"]["runtime"] == "onnxruntime"
    # every measurement went to the device: the unpruned model and at least one candidate
    log = [json.loads(line) for line in (out / "measurements.jsonl").read_text().splitlines()]
    assert {"unpruned"} < {entry["role"] for entry in log}
    assert all(entry["p90_ms"] > 0 for entry in log)
    settings = json.loads((out / "settings.json").read_text())["settings"]
    # a path, never a secret
    assert settings["device"]["identity_file"] == str(sshd.client_key)
    assert (out / "model.onnx").exists() and (out / "report.html").exists()
    # per-run temp dirs on the device are removed after every measurement
    assert _device_run_dirs(sshd) == before, capsys.readouterr().err[-4000:]


@pytest.mark.ssh
def test_fit_refuses_an_unknown_host_key(sshd: SSHServer, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    code = main(["fit", *QUICK_FLAGS, "--target", url, "--identity-file", str(sshd.client_key),
                 "--known-hosts", str(empty), "--python", DEVICE_PYTHON, "--speedup", "1.3",
                 "--out", str(tmp_path / "run")])
    assert code == 1
    errors = [ln for ln in capsys.readouterr().err.splitlines()
              if ln.startswith("edgeprune: error:")]
    assert len(errors) == 1 and "--accept-new-host-key" in errors[0]
    assert empty.read_text() == ""  # nothing recorded without the explicit option


@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is not None,
                    reason="the tflite extra is installed: the converter would run")
def test_tflite_without_the_extra_fails_before_any_work(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["fit", *QUICK_FLAGS, "--speedup", "1.3", "--tflite", "--out", str(out)])
    assert code == 1
    errors = [ln for ln in capsys.readouterr().err.splitlines()
              if ln.startswith("edgeprune: error:")]
    assert len(errors) == 1 and "pip install 'edgeprune[tflite]'" in errors[0]
    assert not (out / "measurements.jsonl").exists()  # nothing measured
