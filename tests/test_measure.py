"""measure(): the same runner locally and over a real loopback sshd; caches, lock, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from edgeprune.errors import (
    DeviceOutOfMemoryError,
    MeasurementError,
    RuntimeMissingError,
    TargetError,
    UsageError,
)
from edgeprune.measure import MeasureResult, MeasureSettings, artifact_files, measure
from edgeprune.targets import load_target
from tests._sshd import DEVICE_PYDIR, SSHServer, make_conv_model, make_memory_hog_model

# cv_threshold high: tiny models on a shared CI box are always "noisy"; noise has its own test
FAST = MeasureSettings(runs=5, warmup=1, max_repeats=0, input_shapes=("1x3x16x16",),
                       cv_threshold=10.0)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return make_conv_model(tmp_path / "conv.onnx")


def _check_result(r: MeasureResult) -> None:
    assert r.runtime == "onnxruntime" and r.runs == 5 and r.warmup == 1
    assert r.min_ms <= r.p50_ms <= r.p90_ms <= r.p95_ms <= r.p99_ms <= r.max_ms
    assert r.peak_rss_mb and r.peak_rss_mb > 10
    assert r.session_create_ms > 0 and r.first_run_ms > 0 and r.cv >= 0
    assert r.inputs["x"]["shape"] == [1, 3, 16, 16]
    assert r.device["machine"] and r.device["cores"] >= 1
    data = json.loads(json.dumps(r.to_dict()))
    assert data["p90_ms"] == r.p90_ms and "device" in data
    assert MeasureResult.from_dict(data) == r


def test_local_target_uses_the_runner_subprocess(model: Path) -> None:
    r = measure(model, load_target("local"), FAST)
    _check_result(r)
    assert r.where == "local (local)" and r.host is None and not r.cached
    assert r.device["python_executable"] == sys.executable
    again = measure(model, load_target("local"), FAST)
    assert again.cached and again.p50_ms == r.p50_ms


pytestmark_ssh = pytest.mark.ssh


@pytest.mark.ssh
def test_ssh_measure_real_model_and_cleanup(sshd: SSHServer, ssh_target, model: Path) -> None:
    events: list[dict] = []
    r = measure(model, ssh_target, FAST, progress=events.append)
    _check_result(r)
    assert r.host == "127.0.0.1" and f":{sshd.port}" in r.where
    assert r.device["python_executable"] == "/usr/bin/python3"
    assert {e["stage"] for e in events} >= {"connect", "run"}
    work = sshd.device_path(ssh_target.work_dir)
    assert list((work / "runs").iterdir()) == []  # per-run temp dirs removed
    assert not (work / "lock").exists()
    cached = list((work / "artifacts").iterdir())
    assert len(cached) == 1 and (cached[0] / "conv.onnx").is_file()

    # identical measure: the local result cache answers without touching the device
    again = measure(model, ssh_target, FAST)
    assert again.cached and again.p50_ms == r.p50_ms
    # a fresh measurement re-uses the artifact already on the device
    events.clear()
    fresh = measure(model, ssh_target, dataclasses.replace(FAST, use_cache=False),
                    progress=events.append)
    assert not fresh.cached
    assert any("already on the device" in (e.get("message") or "") for e in events)


@pytest.mark.ssh
def test_hostile_names_and_external_data_survive(sshd: SSHServer, ssh_target,
                                                 tmp_path: Path) -> None:
    folder = tmp_path / "dir with 'quotes'; and $(touch pwned)"
    folder.mkdir()
    name = "mo del's; $(touch pwned) `id`.onnx"
    model = make_conv_model(folder / name, external_data=name + ".data")
    assert [f.name for f in artifact_files(model)] == [name, name + ".data"]
    r = measure(model, ssh_target, FAST)
    assert r.p50_ms > 0 and r.artifact_size_bytes == sum(
        f.stat().st_size for f in artifact_files(model))
    home = sshd.device_path("~")
    assert not (home / "pwned").exists()
    assert not any(p.name == "pwned" for p in sshd.device_path(ssh_target.work_dir).rglob("*"))


@pytest.mark.ssh
def test_runtime_missing_is_named(sshd: SSHServer, ssh_target, model: Path,
                                  tmp_path: Path) -> None:
    # a device python that has numpy but no onnxruntime
    numpy_only = sshd.root / "numpy-only"
    numpy_only.mkdir(exist_ok=True)
    for entry in Path(DEVICE_PYDIR).iterdir():
        if entry.name.startswith("numpy") and not (numpy_only / entry.name).exists():
            (numpy_only / entry.name).symlink_to(entry)
    wrapper = sshd.root / "python-numpy-only.sh"
    wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH={numpy_only}\nexec /usr/bin/python3 "$@"\n')
    wrapper.chmod(0o755)
    target = dataclasses.replace(ssh_target, python=str(wrapper))
    with pytest.raises(RuntimeMissingError, match="onnxruntime missing.*pip install onnxruntime"):
        measure(model, target, FAST)
    bare = dataclasses.replace(ssh_target, python=sshd.bare_python())
    with pytest.raises(RuntimeMissingError, match="numpy"):
        measure(model, bare, FAST)


@pytest.mark.ssh
def test_python_missing_is_named(ssh_target, model: Path) -> None:
    target = dataclasses.replace(ssh_target, python="/opt/no/such/python3")
    with pytest.raises(RuntimeMissingError, match="not found.*python ="):
        measure(model, target, FAST)


@pytest.mark.ssh
def test_killed_for_memory_is_out_of_memory(sshd: SSHServer, ssh_target, tmp_path: Path) -> None:
    hog = make_memory_hog_model(tmp_path / "hog.onnx", mb=512)
    python, _how = sshd.oom_python(limit_mb=160)
    target = dataclasses.replace(ssh_target, python=python)
    with pytest.raises(DeviceOutOfMemoryError, match="out of memory"):
        measure(hog, target, dataclasses.replace(FAST, input_shapes=()))
    work = sshd.device_path(ssh_target.work_dir)
    assert list((work / "runs").iterdir()) == []


@pytest.mark.ssh
def test_unloadable_artifact(ssh_target, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    make_conv_model(bad)
    data = bytearray(bad.read_bytes())
    bad.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(MeasurementError):
        measure(bad, ssh_target, FAST)


@pytest.mark.ssh
def test_busy_device_lock_and_stale_lock(sshd: SSHServer, ssh_target, model: Path) -> None:
    work = sshd.device_path(ssh_target.work_dir)
    lock = work / "lock"
    lock.mkdir(parents=True)
    (lock / "owner").write_text("someone@elsewhere pid 1\n")
    for path in (work, lock, lock / "owner"):
        shutil.chown(path, sshd.user)
    busy = dataclasses.replace(ssh_target, lock_timeout_s=0.5)
    with pytest.raises(TargetError, match="busy: locked by someone@elsewhere"):
        measure(model, busy, FAST)
    old = time.time() - 3600
    os.utime(lock, (old, old))  # no heartbeat for an hour: a crashed client's lock
    events: list[dict] = []
    r = measure(model, busy, FAST, progress=events.append)
    assert r.p50_ms > 0 and any("stale" in (e.get("message") or "") for e in events)
    assert not lock.exists()


def test_noisy_results_are_repeated_and_flagged(model: Path) -> None:
    settings = dataclasses.replace(FAST, cv_threshold=0.0, max_repeats=1, use_cache=False)
    r = measure(model, load_target("local"), settings)
    assert r.attempts == 2 and len(r.attempt_p50_ms) == 2 and r.noisy


def test_not_an_artifact(tmp_path: Path) -> None:
    spec = tmp_path / "model.pt"
    spec.write_bytes(b"x")
    with pytest.raises(UsageError, match="not an .onnx or .tflite"):
        measure(spec, load_target("local"), FAST)
    with pytest.raises(UsageError):
        MeasureSettings(runs=0)
