"""measure(): the same runner locally and over a real loopback sshd; caches, lock, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprune.artifacts.files import artifact_files
from edgeprune.devices.measure import MeasureResult, MeasureSettings
from edgeprune.devices.targets import load_target
from edgeprune.errors import (
    DeviceDiskFullError,
    DeviceOutOfMemoryError,
    MeasurementError,
    RuntimeMissingError,
    TargetError,
    UsageError,
)
from edgeprune.pipeline.measuring import measure
from tests._sshd import (
    SSHServer,
    make_conv_model,
    make_memory_hog_model,
    make_unknown_op_model,
)

# cv_threshold huge: tiny models on a shared CI box are "noisy" (5 runs, one slow one can put
# the IQR-based CV far above 1), and noisy results are not cached; noise has its own test
FAST = MeasureSettings(runs=5, warmup=1, max_repeats=0, input_shapes=("1x3x16x16",),
                       cv_threshold=1e6)


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
    runners = sorted(p.name for p in work.glob("runner-*.py"))
    assert len(runners) == 1

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


def _assert_device_clean(sshd: SSHServer, target) -> None:
    """No per-run temp dir and no lock left in the target's work dir on the device."""
    work = sshd.device_path(target.work_dir)
    assert list((work / "runs").iterdir()) == []
    assert not (work / "lock").exists()


@pytest.mark.ssh
def test_runtime_missing_is_named(sshd: SSHServer, ssh_target, model: Path,
                                  tmp_path: Path) -> None:
    # a device python that has numpy but no onnxruntime
    target = dataclasses.replace(ssh_target, python=sshd.numpy_only_python())
    with pytest.raises(RuntimeMissingError, match="onnxruntime missing.*pip install onnxruntime"):
        measure(model, target, FAST)
    _assert_device_clean(sshd, ssh_target)
    bare = dataclasses.replace(ssh_target, python=sshd.bare_python())
    with pytest.raises(RuntimeMissingError, match="numpy"):
        measure(model, bare, FAST)
    _assert_device_clean(sshd, ssh_target)


@pytest.mark.ssh
def test_python_missing_is_named(sshd: SSHServer, ssh_target, model: Path) -> None:
    target = dataclasses.replace(ssh_target, python="/opt/no/such/python3")
    with pytest.raises(RuntimeMissingError, match="not found.*python ="):
        measure(model, target, FAST)
    _assert_device_clean(sshd, ssh_target)


@pytest.mark.ssh
def test_python_too_old_to_parse_the_runner(sshd: SSHServer, ssh_target, model: Path) -> None:
    # test double: no pre-3.6 interpreter exists here; this one fails the way it would
    wrapper = sshd.root / "python-syntax-error.sh"
    wrapper.write_text('#!/bin/sh\necho \'  File "runner.py", line 1\' >&2\n'
                       'echo "SyntaxError: invalid syntax" >&2\nexit 1\n')
    wrapper.chmod(0o755)
    target = dataclasses.replace(ssh_target, python=str(wrapper))
    with pytest.raises(RuntimeMissingError, match="too old for the runner.*3.6"):
        measure(model, target, FAST)
    _assert_device_clean(sshd, ssh_target)


@pytest.mark.ssh
def test_killed_for_memory_is_out_of_memory(sshd: SSHServer, ssh_target, tmp_path: Path) -> None:
    hog = make_memory_hog_model(tmp_path / "hog.onnx", mb=512)
    python, how = sshd.oom_python(limit_mb=160)
    target = dataclasses.replace(ssh_target, python=python)
    # the kernel's OOM killer (cgroup limit) sends SIGKILL; under ulimit -v allocations fail
    expected = "killed \\(SIGKILL\\) — probably out of memory" if how == "cgroup" else (
        "probably out of memory|out of memory on")
    with pytest.raises(DeviceOutOfMemoryError, match=expected):
        measure(hog, target, dataclasses.replace(FAST, input_shapes=()))
    _assert_device_clean(sshd, ssh_target)


def _self_killing_python(folder: Path, signal_name: str) -> str:
    """Test double for a runtime that dies from ``signal_name`` (a wheel built for another
    CPU raises SIGILL, a runtime bug SIGSEGV): the interpreter kills itself with it. The real
    SSH path that reports the signal is tested in test_transport.py."""
    wrapper = folder / f"python-sig{signal_name.lower()}.sh"
    wrapper.write_text(f"#!/bin/sh\nkill -{signal_name} $$\n")
    wrapper.chmod(0o755)
    return str(wrapper)


SIGNAL_ERRORS = {
    "KILL": (DeviceOutOfMemoryError, "killed \\(SIGKILL\\) — probably out of memory"),
    "ILL": (MeasurementError, "illegal instruction \\(SIGILL\\).*built for the device's CPU"),
    "SEGV": (MeasurementError, "crashed \\(SIGSEGV\\).*another runtime version"),
    "TERM": (MeasurementError, "stopped by SIGTERM.*measure again"),
}


@pytest.mark.ssh
@pytest.mark.parametrize("signal_name", list(SIGNAL_ERRORS))
def test_runner_killed_by_a_signal_over_ssh(signal_name: str, sshd: SSHServer, ssh_target,
                                            model: Path) -> None:
    error, message = SIGNAL_ERRORS[signal_name]
    target = dataclasses.replace(ssh_target,
                                 python=_self_killing_python(sshd.root, signal_name))
    with pytest.raises(error, match=message):
        measure(model, target, FAST)
    _assert_device_clean(sshd, ssh_target)


@pytest.mark.parametrize("signal_name", ["KILL", "ILL"])
def test_runner_killed_by_a_signal_locally(signal_name: str, model: Path,
                                           tmp_path: Path) -> None:
    error, message = SIGNAL_ERRORS[signal_name]
    target = dataclasses.replace(load_target("local"),
                                 python=_self_killing_python(tmp_path, signal_name))
    with pytest.raises(error, match=message):
        measure(model, target, FAST)


@pytest.mark.ssh
def test_unloadable_artifact(sshd: SSHServer, ssh_target, tmp_path: Path) -> None:
    # truncated: caught here before anything is uploaded
    bad = tmp_path / "bad.onnx"
    make_conv_model(bad)
    data = bytearray(bad.read_bytes())
    bad.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(MeasurementError, match="cannot read ONNX model bad.onnx"):
        measure(bad, ssh_target, FAST)
    # a well-formed file the device's onnxruntime refuses: an operator it does not have
    unknown = make_unknown_op_model(tmp_path / "unknown op.onnx")
    with pytest.raises(MeasurementError,
                       match="runtime on .* cannot load the artifact: .*NoSuchOp"):
        measure(unknown, ssh_target, dataclasses.replace(FAST, input_shapes=()))  # fixed 1x3
    _assert_device_clean(sshd, ssh_target)


def test_unloadable_artifact_local(tmp_path: Path) -> None:
    unknown = make_unknown_op_model(tmp_path / "unknown.onnx")
    with pytest.raises(MeasurementError, match="local .*cannot load the artifact: .*NoSuchOp"):
        measure(unknown, load_target("local"), dataclasses.replace(FAST, input_shapes=()))


@pytest.mark.ssh
def test_disk_full_while_uploading_the_artifact(sshd: SSHServer, ssh_target,
                                                tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    mount = sshd.device_path(f"{ssh_target.work_dir}-tiny")
    mount.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        shutil.chown(mount, sshd.user, sshd.user)
        target = dataclasses.replace(ssh_target, work_dir=f"{ssh_target.work_dir}-tiny/work")
        big = make_conv_model(tmp_path / "big.onnx", channels=24000)  # 2.6 MB (+1 MB headroom)
        with pytest.raises(DeviceDiskFullError, match="disk space .* big.onnx.*free space"):
            measure(big, target, FAST)
        _assert_device_clean(sshd, target)
        assert list((mount / "work" / "artifacts").iterdir()) == []
        # a model that fits still measures on the same small disk
        small = make_conv_model(tmp_path / "small.onnx")
        assert measure(small, target, FAST).p50_ms > 0
        # two models that each fit but not together: the older cached one makes room
        first = make_conv_model(tmp_path / "first.onnx", channels=13000)  # 1.4 MB each
        second = make_conv_model(tmp_path / "second.onnx", channels=13001)
        assert measure(first, target, FAST).p50_ms > 0
        events: list[dict] = []
        assert measure(second, target, FAST, progress=events.append).p50_ms > 0
        assert any("removing" in (e.get("message") or "") for e in events)
        cached = [p.name for d in (mount / "work" / "artifacts").iterdir() for p in d.iterdir()]
        assert "second.onnx" in cached and "first.onnx" not in cached
    finally:
        subprocess.run(["umount", str(mount)])
        mount.rmdir()


@pytest.mark.ssh
def test_leftover_run_dirs_are_swept(sshd: SSHServer, ssh_target, model: Path) -> None:
    """A client killed outright (SIGKILL, power loss) cannot clean up; the next one does."""
    work = sshd.device_path(ssh_target.work_dir)
    leftover = work / "runs" / "0123abcd" / "artifact"
    leftover.mkdir(parents=True)
    (leftover / "half.onnx").write_bytes(b"x" * 1000)
    old_runner = work / "runner-000000000000.py"  # another edgeprune version's runner
    old_runner.write_text("print('old')\n")
    for path in (work, work / "runs", leftover.parent, leftover, leftover / "half.onnx",
                 old_runner):
        shutil.chown(path, sshd.user, sshd.user)
    events: list[dict] = []
    assert measure(model, ssh_target, FAST, progress=events.append).p50_ms > 0
    assert not leftover.parent.exists() and not old_runner.exists()
    assert len(list(work.glob("runner-*.py"))) == 1
    assert any("left behind" in (e.get("message") or "") for e in events)
    _assert_device_clean(sshd, ssh_target)


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
    os.utime(lock, (old, old))
    # no heartbeat for an hour, but its holder said one attempt may take two: still busy
    (lock / "owner").write_text("someone@elsewhere pid 1\ntimeout_s=7200\n")
    os.utime(lock, (old, old))
    with pytest.raises(TargetError, match="busy: locked by someone@elsewhere pid 1 —"):
        measure(model, busy, FAST)
    (lock / "owner").write_text("someone@elsewhere pid 1\n")
    os.utime(lock, (old, old))  # no heartbeat for an hour: a crashed client's lock
    events: list[dict] = []
    r = measure(model, busy, FAST, progress=events.append)
    assert r.p50_ms > 0 and any("stale" in (e.get("message") or "") for e in events)
    assert not lock.exists()

    # a fresh lock whose owner was a process on this machine that has exited: broken at once
    import socket

    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.mkdir()
    (lock / "owner").write_text(f"me@{socket.gethostname()} pid {gone.pid} since 12:00:00\n")
    for path in (lock, lock / "owner"):
        shutil.chown(path, sshd.user)
    events.clear()
    fresh = dataclasses.replace(FAST, use_cache=False)
    assert measure(model, busy, fresh, progress=events.append).p50_ms > 0
    assert any("process on this machine is gone" in (e.get("message") or "") for e in events)


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


def test_wrong_input_shape_names_the_flag(model: Path, _cache: Path) -> None:
    """A shape of the wrong rank is refused from the graph before any runner starts."""
    settings = dataclasses.replace(FAST, input_shapes=("1x3",), use_cache=False)
    with pytest.raises(UsageError) as caught:
        measure(model, load_target("local"), settings)
    assert caught.value.one_line() == (
        "input 'x' is N×3×H×W in conv.onnx (only N, H, W can vary); --input-shape 1x3 does not "
        "match — give 1x3x1x1")
    assert not (_cache / "locks").exists()  # the local device was never taken


def _two_input_model(path: Path) -> Path:
    """x: fixed 1×3×8×8, y: dynamic ×4 (an unknown -1 dim, dynamic to onnxruntime as a named
    one is), w: 0×4 (a fixed size of zero to onnxruntime); sums of their means."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [0, 4])
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("ReduceMean", ["y"], ["n"], keepdims=0),
             helper.make_node("ReduceSum", ["w"], ["o"], keepdims=0),
             helper.make_node("Sum", ["m", "n", "o"], ["z"])]
    model = helper.make_model(helper.make_graph(nodes, "two", [x, y, w], [out]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def test_input_shapes_are_checked_against_the_graph(tmp_path: Path, _cache: Path) -> None:
    """Fixed dims must match, dynamic ones take anything, names must exist; what the check
    lets through really runs in onnxruntime."""
    from edgeprune.pipeline.measuring import check_input_shapes

    two = _two_input_model(tmp_path / "two.onnx")
    local = load_target("local")

    def refused(*shapes: str) -> str:
        with pytest.raises(UsageError) as caught:
            measure(two, local, dataclasses.replace(FAST, input_shapes=shapes))
        return caught.value.one_line()

    assert refused("y=2x4", "x=1x3x9x8") == (
        "input 'x' is fixed at 1×3×8×8 in two.onnx; --input-shape x=1x3x9x8 does not match — "
        "drop --input-shape or give x=1x3x8x8")
    assert refused("y=5x3") == (
        "input 'y' is ?×4 in two.onnx (only ? can vary); --input-shape y=5x3 does not match — "
        "give y=5x4")
    assert refused("v=1x3x8x8") == (
        "two.onnx has no input named 'v' (--input-shape v=1x3x8x8); its inputs: x, y, w — name "
        "one of those inputs, or drop NAME= to shape every input")
    assert "cannot read --input-shape 'y=2xfour'" in refused("y=2xfour")
    # one unnamed shape for every input cannot fit them all: the fix names the input
    assert refused("1x3x8x8").startswith("input 'y' is ?×4 in two.onnx")
    assert refused("w=3x4") == (
        "input 'w' is 0×4 in two.onnx: a dimension of size 0, which onnxruntime runs only on "
        "empty tensors — re-export the model with that dimension dynamic (named)")
    assert not (_cache / "locks").exists()  # nothing reached the device

    check_input_shapes(two, ["y=7x4", "x=1x3x8x8"])  # dynamic: any size
    check_input_shapes(tmp_path / "m.tflite", ["1x2"])  # TFLite: left to the runner

    import numpy as np
    import onnxruntime as ort

    # what the check calls dynamic and fixed is what onnxruntime enforces
    session = ort.InferenceSession(str(two), providers=["CPUExecutionProvider"])
    feeds = {"x": np.ones((1, 3, 8, 8), np.float32), "y": np.ones((7, 4), np.float32),
             "w": np.ones((0, 4), np.float32)}
    assert session.run(None, feeds)[0] == pytest.approx(2.0)
    with pytest.raises(Exception, match="invalid dimensions for input: w"):
        session.run(None, {**feeds, "w": np.ones((3, 4), np.float32)})


def test_scalar_and_shapeless_inputs_are_checked_too(tmp_path: Path, _cache: Path) -> None:
    """A scalar input declares rank 0 (no --input-shape fits it, so a shape for every input is
    refused naming it); an input that declares no shape takes any."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgeprune.pipeline.measuring import check_input_shapes

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [])
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, None)
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "s"], ["a"]),
             helper.make_node("ReduceSum", ["q"], ["o"], keepdims=0),
             helper.make_node("Add", ["a", "o"], ["z"])]
    model = helper.make_model(helper.make_graph(nodes, "scalar", [x, s, q], [out]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "scalar.onnx"
    onnx.save_model(model, str(path))

    check_input_shapes(path, ["x=1x3x8x8"])  # the scalar and the shapeless input not asked
    check_input_shapes(path, ["x=1x3x8x8", "q=2x5"])  # no declared shape: any rank
    check_input_shapes(path, ["q=7"])
    for shapes in (["1x3x8x8"], ["x=1x3x8x8", "s=1"]):
        with pytest.raises(UsageError) as caught:
            measure(path, load_target("local"), dataclasses.replace(FAST, input_shapes=shapes))
        assert caught.value.one_line() == (
            f"input 's' is a scalar in scalar.onnx; --input-shape {shapes[-1]} does not match — "
            "give the shape as NAME=SHAPE for each input it is for (a scalar input needs none)")
    assert not (_cache / "locks").exists()  # nothing reached the device

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"x": np.ones((1, 3, 8, 8), np.float32), "s": np.array(2.0, np.float32),
             "q": np.ones((2, 5), np.float32)}
    assert session.run(None, feeds)[0] == pytest.approx(12.0)  # what passed really runs


def test_a_device_measures_the_files_it_is_given(tmp_path: Path) -> None:
    """The devices layer reads no ONNX: without a file list an artifact is itself plus a
    ``<name>.data`` beside it; any other external-data name comes from the caller's list."""
    from edgeprune.devices.measure import default_files, measure_files

    model = make_conv_model(tmp_path / "ext.onnx", external_data="ext.onnx.data")
    assert default_files(model) == [model, tmp_path / "ext.onnx.data"]
    r = measure_files(model, load_target("local"), FAST)
    assert r.artifact_size_bytes == sum(f.stat().st_size for f in artifact_files(model))
    assert r.model == str(model) and r.artifact == str(model)

    other = make_conv_model(tmp_path / "w.onnx", external_data="weights.bin")
    assert default_files(other) == [other]
    listed = measure_files(other, load_target("local"), FAST, files=artifact_files(other))
    assert listed.artifact_size_bytes == sum(f.stat().st_size for f in artifact_files(other))
    with pytest.raises(UsageError, match="not an .onnx or .tflite file"):
        measure_files(tmp_path / "model.pt", load_target("local"), FAST)


def test_measuring_a_file_imports_no_model_code(tmp_path: Path) -> None:
    """A device measures files, not models: measuring an artifact through the devices layer
    imports neither torch, onnx nor edgeprune's models, pruning or artifacts packages."""
    model = make_conv_model(tmp_path / "conv.onnx")
    code = ("import sys; from edgeprune.devices.measure import MeasureSettings, measure_files; "
            "from edgeprune.devices.targets import load_target; "
            "import edgeprune.devices.remote, edgeprune.devices.protocol; "
            f"r = measure_files({str(model)!r}, load_target('local'), MeasureSettings(runs=2, "
            "warmup=0, max_repeats=0, input_shapes=('1x3x8x8',), cv_threshold=1e6)); "
            "assert r.p50_ms > 0; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx') or "
            "m.startswith(('edgeprune.models', 'edgeprune.pruning', 'edgeprune.artifacts'))))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
