"""Measuring on an ARM64 device, end to end through the real CLI in a subprocess: a Debian arm64
root under qemu-user-static behind a real sshd (tests/_arm64.py, docs/arm64-device.md), with the
aarch64 wheels of numpy and onnxruntime. Its timings are emulated: these tests assert what the
device reports and that results are well formed, never how fast anything is.

The runner reports no model outputs, so outputs are not compared with the host's here."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._arm64 import ARM_PYTHON, ARM_USER, ARM64Server, installed_version, skip_reason
from tests._sshd import make_conv_model


def _arm64_mark() -> pytest.MarkDecorator:
    # Until pyproject.toml registers the `arm64` marker, --strict-markers would stop the whole
    # suite's collection on this file: fall back to `slow` then. Replace with pytest.mark.arm64.
    try:
        return pytest.mark.arm64
    except pytest.fail.Exception:
        return pytest.mark.slow


pytestmark = [_arm64_mark(), pytest.mark.slow]

FAST = ["--runs", "5", "--warmup", "1", "--repeats", "0", "--no-cache"]


@pytest.fixture(scope="module")
def arm64_sshd() -> Iterator[ARM64Server]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    server = ARM64Server()
    try:
        server.start()
    except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
        server.cleanup()
        pytest.skip(f"could not start the arm64 device's sshd: {exc}")
    yield server
    server.cleanup()


@pytest.fixture()
def known_hosts(arm64_sshd: ARM64Server, tmp_path: Path) -> Path:
    return arm64_sshd.write_known_hosts(tmp_path / "known_hosts")


def _cli(args: list[str], tmp_path: Path) -> tuple[int, dict, str]:
    """``edgeprune ARGS --format json`` in a fresh process: (exit status, JSON document, stderr)."""
    env = {"PATH": "/usr/bin:/bin", "EDGEPRUNE_CACHE_DIR": str(tmp_path / "cache"),
           "EDGEPRUNE_CONFIG_DIR": str(tmp_path / "cfg"), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "edgeprune.cli.main", *args, "--format", "json"],
                          capture_output=True, text=True, env=env, timeout=600)
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"stdout is not one JSON document (exit {done.returncode}):\n"
                    f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.returncode, doc, done.stderr


def _device_args(server: ARM64Server, known_hosts: Path) -> list[str]:
    return ["--identity-file", str(server.client_key), "--known-hosts", str(known_hosts),
            "--python", ARM_PYTHON]


def test_targets_check_reports_an_aarch64_device(arm64_sshd: ARM64Server, known_hosts: Path,
                                                 tmp_path: Path) -> None:
    status, data, err = _cli(["targets", "check", arm64_sshd.url(),
                              *_device_args(arm64_sshd, known_hosts)], tmp_path)
    assert status == 0, err
    assert data["ready"] is True and "error" not in data
    device = data["device"]
    assert device["machine"] == "aarch64" and device["system"] == "Linux"
    assert device["python_executable"] == ARM_PYTHON
    assert device["python"].startswith("3.11.")  # bookworm's, not this machine's interpreter
    runtimes = data["runtimes"]
    for dist in ("numpy", "onnxruntime", "psutil"):
        assert runtimes[dist]["present"] is True, runtimes[dist]
        assert runtimes[dist]["version"] == installed_version(dist)  # the aarch64 wheel's
    assert "CPUExecutionProvider" in runtimes["onnxruntime"]["providers"]


def test_measure_onnx_on_aarch64(arm64_sshd: ARM64Server, known_hosts: Path,
                                 tmp_path: Path) -> None:
    model = make_conv_model(tmp_path / "conv.onnx")
    status, data, err = _cli(["measure", str(model), "--target", arm64_sshd.url(),
                              *_device_args(arm64_sshd, known_hosts), *FAST,
                              "--input-shape", "1x3x16x16", "--per-op"], tmp_path)
    assert status == 0, err
    assert data["device"]["machine"] == "aarch64"
    assert data["host"] == "127.0.0.1"
    assert data["where"] == f"{ARM_USER}@127.0.0.1:{arm64_sshd.port}"
    assert data["runtime"] == "onnxruntime"
    assert data["runtime_version"] == installed_version("onnxruntime")
    assert data["runs"] == 5 and data["attempts"] == 1 and data["cached"] is False
    assert data["inputs"]["x"]["shape"] == [1, 3, 16, 16]
    # emulated timings: well-formed and ordered, nothing about speed
    lat = [data[k] for k in ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")]
    assert all(v > 0 for v in lat) and lat == sorted(lat)
    assert data["runner"]["runner_version"] >= 1 and data["runner"]["capped"] is False
    assert {"Conv", "Relu", "GlobalAveragePool"} <= set(data["per_op"]["by_op_type"])
    # on the device (seen from here, inside the root): the run's temp dir is gone, the upload
    # stays cached for the next measurement
    home = arm64_sshd.device_path("~/")
    assert not list(home.glob("**/runs/*"))
    assert list(home.glob(f"**/artifacts/{data['artifact_sha256'][:24]}/.complete"))
