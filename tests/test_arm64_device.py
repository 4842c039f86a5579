"""Measuring on an ARM64 device, end to end through the real CLI in a subprocess: a Debian arm64
root under qemu-user-static behind a real sshd (tests/_arm64.py, docs/arm64-device.md), with the
aarch64 wheels of numpy and onnxruntime. Its timings are emulated: these tests assert what the
device reports and that results are well formed, never how fast anything is.

The runner reports no model outputs, so outputs are not compared with the host's here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._arm64 import ARM_PYTHON, ARM_USER, ARM64Server, installed_version, skip_reason
from tests._sshd import make_conv_model, serve

pytestmark = pytest.mark.arm64

FAST = ["--runs", "5", "--warmup", "1", "--repeats", "0", "--no-cache"]


@pytest.fixture(scope="module")
def arm64_sshd() -> Iterator[ARM64Server]:
    yield from serve(ARM64Server(), skip_reason())


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


@pytest.fixture()
def target_file(arm64_sshd: ARM64Server, known_hosts: Path, tmp_path: Path) -> Iterator[Path]:
    """``emulated-rpi4.toml``: a Raspberry Pi 4 target file (profile rpi4) pointing at the arm64
    device, with a work dir of its own (removed afterwards) so every test uploads afresh."""
    work_dir = f"~/ep-test/{uuid.uuid4().hex[:10]}"
    path = tmp_path / "emulated-rpi4.toml"
    path.write_text("\n".join([
        'profile = "rpi4"', f'python = "{ARM_PYTHON}"', f'work_dir = "{work_dir}"', "[ssh]",
        f'host = "{arm64_sshd.host}"', f"port = {arm64_sshd.port}", f'user = "{ARM_USER}"',
        f'identity_file = "{arm64_sshd.client_key}"', "use_agent = false",
        f'known_hosts = "{known_hosts}"', "connect_timeout_s = 10.0", ""]))
    yield path
    shutil.rmtree(arm64_sshd.device_path(work_dir), ignore_errors=True)


def test_targets_check_reports_an_aarch64_device(arm64_sshd: ARM64Server, known_hosts: Path,
                                                 tmp_path: Path) -> None:
    status, data, err = _cli(["targets", "check", arm64_sshd.url(),
                              *_device_args(arm64_sshd, known_hosts)], tmp_path)
    assert status == 0, err
    assert data["ready"] is True and "error" not in data
    device = data["device"]
    assert device["machine"] == "aarch64" and device["system"] == "Linux"
    assert device["python_executable"] == ARM_PYTHON
    assert device["python"].startswith("3.11.")  # bookworm's python3
    runtimes = data["runtimes"]
    for dist in ("numpy", "onnxruntime", "psutil"):
        assert runtimes[dist]["present"] is True, runtimes[dist]
        assert runtimes[dist]["version"] == installed_version(dist)  # the aarch64 wheel's
    assert "CPUExecutionProvider" in runtimes["onnxruntime"]["providers"]


def test_measure_onnx_on_aarch64(arm64_sshd: ARM64Server, target_file: Path,
                                 tmp_path: Path) -> None:
    model = make_conv_model(tmp_path / "conv.onnx")
    status, data, err = _cli(["measure", str(model), "--targets-file", str(target_file),
                              "--target", "emulated-rpi4", *FAST,
                              "--input-shape", "1x3x16x16", "--per-op"], tmp_path)
    assert status == 0, err
    assert "uploading conv.onnx" in err, err  # a fresh work dir: the model went over SFTP
    assert data["device"]["machine"] == "aarch64"
    assert data["host"] == "127.0.0.1"
    assert data["where"] == f"emulated-rpi4 ({ARM_USER}@127.0.0.1:{arm64_sshd.port})"
    assert data["runtime"] == "onnxruntime"
    assert data["runtime_version"] == installed_version("onnxruntime")
    assert data["runs"] == 5 and data["attempts"] == 1 and data["cached"] is False
    assert data["inputs"]["x"]["shape"] == [1, 3, 16, 16]
    # emulated timings: well-formed and ordered, nothing about speed
    lat = [data[k] for k in ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")]
    assert all(v > 0 for v in lat) and lat == sorted(lat)
    assert data["runner"]["runner_version"] >= 1 and data["runner"]["capped"] is False
    ops = {op["op_type"]: op for op in data["per_op"]["by_op_type"]}  # aarch64 onnxruntime's
    assert "GlobalAveragePool" in ops and ({"Conv", "FusedConv"} & set(ops)), ops  # profiler
    assert all(op["calls_per_run"] >= 1 for op in ops.values())
    assert sum(op["share"] for op in ops.values()) == pytest.approx(1.0)
    # on the device (seen from here, inside the root): the run's temp dir is gone, the upload
    # stays cached for the next measurement
    home = arm64_sshd.device_path("~/")
    assert not list(home.glob("**/runs/*"))
    assert list(home.glob(f"**/artifacts/{data['artifact_sha256'][:24]}/.complete"))


@pytest.mark.slow  # ~20 s: two CLI processes that import torch, emulated runs
def test_rpi4_target_measures_and_gates_the_trained_cnn(target_file: Path,
                                                        tmp_path: Path) -> None:
    """What a Pi owner runs: the shipped, trained MNIST CNN exported on the fly, measured with the
    rpi4 profile's settings, then gated on rpi4's budgets — without the note that says the
    numbers come from another architecture (the device is aarch64)."""
    device = ["--targets-file", str(target_file), "--target", "emulated-rpi4", *FAST]
    status, data, err = _cli(["measure", "builtin:mnist-cnn", *device], tmp_path)
    assert status == 0, err
    assert data["profile"] == "rpi4" and data["threads"] == 4  # from the profile
    assert data["device"]["machine"] == "aarch64" and data["runtime"] == "onnxruntime"
    (exported,) = (tmp_path / "cache" / "exports").glob("*.onnx")
    assert Path(data["artifact"]) == exported

    # qemu's own memory counts in the peak RSS: no memory budget on an emulated device
    status, gate, err = _cli(["gate", str(exported), *device, "--memory-mb", "1e6"], tmp_path)
    assert status in (0, 4), err  # 4: the emulated latency missed rpi4's budget (allowed)
    assert not [n for n in gate["notes"] if "is for aarch64" in n], gate["notes"]
    (latency,) = [c for c in gate["checks"] if c["budget"] == "max_latency_ms"]
    assert latency["status"] in ("pass", "fail") and latency["value"] > 0
