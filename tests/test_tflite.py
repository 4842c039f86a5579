"""TFLite end to end: a real .tflite (hand-built from the schema, tests/_tflite.py) run by the real
LiteRT interpreter (ai-edge-litert 2.3.0), measured locally and on the loopback SSH "device",
read statically (params), and every TFLite-specific failure as one named line."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeprune.artifacts.tflite_info import tflite_info
from edgeprune.cli.main import main
from edgeprune.devices.measure import MeasureResult, MeasureSettings, measure_files
from edgeprune.devices.targets import load_target
from edgeprune.errors import MeasurementError, RuntimeMissingError, UsageError
from tests._sshd import DEVICE_PYDIR, DEVICE_PYTHON, REPO, SSHServer
from tests._tflite import TFLiteSample, make_fc_model, reference

# cv_threshold high: a microsecond model on a shared CI box is always "noisy" (noise has its own
# tests in test_measure.py); no assertion here looks at how long anything took.
FAST = MeasureSettings(runs=5, warmup=1, max_repeats=0, cv_threshold=10.0)
FAST_CLI = ["--runs", "5", "--warmup", "1", "--repeats", "0", "--cv-threshold", "10"]


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEPRUNE_CONFIG_DIR", str(tmp_path / "cfg"))


@pytest.fixture()
def sample(tmp_path: Path) -> TFLiteSample:
    return make_fc_model(tmp_path / "fc.tflite")


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    return interp


def _run(interp, x: np.ndarray) -> np.ndarray:
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


# --- the sample itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("softmax", [False, True])
def test_sample_loads_in_litert_and_computes_x_wt_plus_b(tmp_path: Path, softmax: bool) -> None:
    sample = make_fc_model(tmp_path / "fc.tflite", softmax=softmax)
    assert sample.path.read_bytes()[4:8] == b"TFL3"
    interp = _interpreter(sample.path)
    (inp,) = interp.get_input_details()
    assert list(inp["shape"]) == [1, 64] and inp["dtype"] is np.float32
    assert [d["name"] for d in interp.get_output_details()] == ["probs" if softmax else "logits"]
    rng = np.random.RandomState(1)
    for _ in range(3):
        x = rng.standard_normal((1, 64)).astype(np.float32)
        got = _run(interp, x)
        np.testing.assert_allclose(got, reference(sample, x), rtol=1e-5, atol=1e-6)
    if softmax:
        assert got.sum() == pytest.approx(1.0, abs=1e-5)
    else:  # the bias is applied (a model without it would not match the reference)
        assert not np.allclose(got, x @ sample.weight.T, atol=1e-3)


def test_sample_dynamic_batch_resizes(tmp_path: Path) -> None:
    sample = make_fc_model(tmp_path / "dyn.tflite", dynamic_batch=True, out_features=7)
    interp = _interpreter(sample.path)
    assert list(interp.get_input_details()[0]["shape_signature"]) == [-1, 64]
    interp.resize_tensor_input(interp.get_input_details()[0]["index"], [3, 64])
    interp.allocate_tensors()
    x = np.random.RandomState(2).standard_normal((3, 64)).astype(np.float32)
    got = _run(interp, x)
    assert got.shape == (3, 7)
    np.testing.assert_allclose(got, reference(sample, x), rtol=1e-5, atol=1e-6)


def test_sample_matches_the_schema_reader(sample: TFLiteSample) -> None:
    """The slot numbers in tests/_tflite.py, checked with the schema's generated reader."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(sample.path.read_bytes(), 0)
    assert model.Version() == 3 and model.SubgraphsLength() == 1
    codes = [model.OperatorCodes(i).BuiltinCode() for i in range(model.OperatorCodesLength())]
    assert codes == [schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.SOFTMAX]
    graph = model.Subgraphs(0)
    names = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]
    assert names == ["x", "fc.weight", "fc.bias", "logits", "probs"]
    weight = graph.Tensors(1)
    assert weight.ShapeAsNumpy().tolist() == [10, 64]
    assert weight.Type() == schema.TensorType.FLOAT32
    data = model.Buffers(weight.Buffer()).DataAsNumpy()
    np.testing.assert_array_equal(np.frombuffer(data.tobytes(), np.float32).reshape(10, 64),
                                  sample.weight)
    fc = graph.Operators(0)
    assert fc.InputsAsNumpy().tolist() == [0, 1, 2] and fc.OutputsAsNumpy().tolist() == [3]
    assert fc.BuiltinOptionsType() == schema.BuiltinOptions.FullyConnectedOptions


# --- static facts: info / gate ------------------------------------------------------------------


def test_tflite_info_counts_params_from_the_flatbuffer(tmp_path: Path) -> None:
    sample = make_fc_model(tmp_path / "fc.tflite", in_features=32, out_features=5,
                           dynamic_batch=True)
    info = tflite_info(sample.path)
    assert info.params == sample.param_count == 32 * 5 + 5
    assert info.op_types == {"FULLY_CONNECTED": 1, "SOFTMAX": 1} and info.nodes == 2
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == [("x", "float32", (-1, 32))]
    assert [(t.name, t.shape) for t in info.outputs] == [("probs", (-1, 5))]
    assert info.size_bytes == sample.path.stat().st_size and info.schema_version == 3
    # the same count the runtime sees: the constant tensors' elements
    interp = _interpreter(sample.path)
    constant = {d["name"]: int(np.prod(d["shape"])) for d in interp.get_tensor_details()
                if d["name"] in ("fc.weight", "fc.bias")}
    assert sum(constant.values()) == info.params
    json.dumps(info.to_dict())


def test_tflite_info_rejects_corrupt_files(sample: TFLiteSample, tmp_path: Path) -> None:
    from edgeprune.errors import ExportError

    truncated = tmp_path / "trunc.tflite"
    truncated.write_bytes(sample.path.read_bytes()[:1000])
    with pytest.raises(ExportError, match="not a readable TFLite model"):
        tflite_info(truncated)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"definitely not a flatbuffer")
    with pytest.raises(ExportError, match="no TFL3 identifier"):
        tflite_info(garbage)


# --- measuring locally ---------------------------------------------------------------------------


def _check_tflite_result(r: MeasureResult, sample: TFLiteSample) -> None:
    import ai_edge_litert

    assert r.runtime == "ai-edge-litert" and r.runtime_version == ai_edge_litert.__version__
    assert r.runs == 5 and r.warmup == 1 and r.providers == ()
    assert 0 < r.min_ms <= r.p50_ms <= r.p90_ms <= r.p95_ms <= r.p99_ms <= r.max_ms
    assert r.min_ms <= r.mean_ms <= r.max_ms and r.std_ms >= 0
    assert r.inputs == {"x": {"shape": [1, 64], "dtype": "float32", "declared": [1, 64]}}
    assert r.peak_rss_mb and r.peak_rss_mb > 10
    assert r.session_create_ms > 0 and r.first_run_ms > 0
    assert r.artifact_size_bytes == sample.path.stat().st_size
    assert r.per_op is None


def test_measure_tflite_on_the_local_target(sample: TFLiteSample) -> None:
    r = measure_files(sample.path, load_target("local"), dataclasses.replace(FAST, threads=1))
    _check_tflite_result(r, sample)
    assert r.threads == 1 and r.where == "local (local)"
    assert r.runner["numpy_version"] == np.__version__


def test_cli_measure_tflite_json(sample: TFLiteSample, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", "--target", "local", str(sample.path), *FAST_CLI,
                 "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    _check_tflite_result(MeasureResult.from_dict(data), sample)
    assert data["runtime"] == "ai-edge-litert" and data["runtime_version"] == "2.3.0"
    assert {"p50_ms", "p90_ms", "p95_ms", "p99_ms"} <= data.keys()
    assert main(["measure", "--target", "local", str(sample.path), *FAST_CLI, "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "ai-edge-litert 2.3.0" in text and "p50 ms" in text


def test_measure_tflite_dynamic_batch_with_input_shape(tmp_path: Path) -> None:
    sample = make_fc_model(tmp_path / "dyn.tflite", dynamic_batch=True)
    r = measure_files(sample.path, load_target("local"),
                dataclasses.replace(FAST, input_shapes=("x=4x64",)))
    assert r.inputs["x"]["shape"] == [4, 64] and r.inputs["x"]["declared"][1] == 64
    # a shape the model cannot take is the user's input, named, not a crash
    with pytest.raises(UsageError, match="cannot run the model with input shapes x=4x63"):
        measure_files(sample.path, load_target("local"),
                dataclasses.replace(FAST, input_shapes=("x=4x63",)))


def test_per_op_is_onnx_only(sample: TFLiteSample, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match=r"--per-op\) is ONNX-only"):
        measure_files(sample.path, load_target("local"), dataclasses.replace(FAST, per_op=True))
    assert main(["measure", str(sample.path), *FAST_CLI, "--per-op"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("edgeprune:")]
    assert len(err) == 1 and "ONNX-only" in err[0] and "without --per-op" in err[0]


def test_corrupt_tflite_is_cannot_load(sample: TFLiteSample, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(sample.path.read_bytes()[:1000])  # truncated
    with pytest.raises(MeasurementError, match="cannot load the artifact: ai-edge-litert cannot "
                       "load bad.tflite"):
        measure_files(bad, load_target("local"), FAST)
    assert main(["measure", str(bad), *FAST_CLI]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("edgeprune:")]
    assert len(err) == 1 and "cannot load the artifact" in err[0]


def _numpy_only_python(root: Path) -> str:
    """The device's Python with numpy but neither ai_edge_litert nor tflite_runtime."""
    probe = subprocess.run([DEVICE_PYTHON, "-c", "import ai_edge_litert"], capture_output=True,
                           env={"PATH": "/usr/bin:/bin"})
    probe2 = subprocess.run([DEVICE_PYTHON, "-c", "import tflite_runtime"], capture_output=True,
                            env={"PATH": "/usr/bin:/bin"})
    if probe.returncode == 0 or probe2.returncode == 0:
        pytest.skip(f"{DEVICE_PYTHON} has a TFLite runtime installed globally")
    if not Path(DEVICE_PYDIR, "numpy").is_dir():
        pytest.skip(f"no device package dir {DEVICE_PYDIR} (scripts/prepare_test_device.sh)")
    numpy_only = root / "numpy-only"
    numpy_only.mkdir(exist_ok=True)
    for entry in Path(DEVICE_PYDIR).iterdir():
        if entry.name.startswith("numpy") and not (numpy_only / entry.name).exists():
            (numpy_only / entry.name).symlink_to(entry)
    wrapper = root / "python-numpy-only-tflite.sh"
    wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH={numpy_only}\nexec {DEVICE_PYTHON} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_tflite_runtime_missing_is_named_locally(sample: TFLiteSample, tmp_path: Path) -> None:
    if not os.path.exists(DEVICE_PYTHON):
        pytest.skip(f"{DEVICE_PYTHON} not present")
    target = dataclasses.replace(load_target("local"), python=_numpy_only_python(tmp_path))
    with pytest.raises(RuntimeMissingError) as info:
        measure_files(sample.path, target, FAST)
    line = info.value.one_line()
    assert "\n" not in line
    assert line.startswith("ai-edge-litert missing on local")
    assert line.endswith("-m pip install ai-edge-litert")
    assert "tflite-runtime (Python <= 3.11 with numpy < 2)" in line


# --- the loopback SSH device ---------------------------------------------------------------------


@pytest.fixture()
def litert_device(sshd: SSHServer, ssh_target):
    """The SSH device's Python with ai-edge-litert (built by prepare_test_device.sh)."""
    check = subprocess.run([DEVICE_PYTHON, "-c", "import ai_edge_litert.interpreter"],
                           env={"PYTHONPATH": DEVICE_PYDIR, "PATH": "/usr/bin:/bin"},
                           capture_output=True)
    if check.returncode != 0:
        if os.geteuid() != 0:
            pytest.skip(f"ai-edge-litert missing in {DEVICE_PYDIR}: run "
                        "scripts/prepare_test_device.sh as root")
        subprocess.run(["bash", str(REPO / "scripts" / "prepare_test_device.sh")], check=True)
    return ssh_target


@pytest.mark.ssh
def test_ssh_measure_tflite(sshd: SSHServer, litert_device, sample: TFLiteSample) -> None:
    r = measure_files(sample.path, litert_device, FAST)
    _check_tflite_result(r, sample)
    assert r.host == "127.0.0.1" and f":{sshd.port}" in r.where
    assert r.device["python_executable"] == DEVICE_PYTHON
    assert r.runner["numpy_version"] == "2.4.6"  # the device's numpy, not ours
    work = sshd.device_path(litert_device.work_dir)
    cached = list((work / "artifacts").iterdir())
    assert len(cached) == 1 and (cached[0] / "fc.tflite").is_file()
    assert list((work / "runs").iterdir()) == []


@pytest.mark.ssh
def test_ssh_targets_check_lists_litert(sshd: SSHServer, known_hosts: Path, litert_device,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
    assert main(["targets", "check", url, "--identity-file", str(sshd.client_key),
                 "--known-hosts", str(known_hosts), "--python", DEVICE_PYTHON,
                 "--format", "json"]) == 0
    runtimes = json.loads(capsys.readouterr().out)["runtimes"]
    assert runtimes["ai_edge_litert"] == {"present": True, "version": "2.3.0"}


@pytest.mark.ssh
def test_ssh_tflite_runtime_missing_is_named(sshd: SSHServer, ssh_target, sample: TFLiteSample,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    target = dataclasses.replace(ssh_target, python=_numpy_only_python(sshd.root))
    with pytest.raises(RuntimeMissingError, match=r"ai-edge-litert missing on .*127\.0\.0\.1.*"
                       r"tflite-runtime.* -m pip install ai-edge-litert$"):
        measure_files(sample.path, target, FAST)


@pytest.mark.ssh
def test_ssh_corrupt_tflite_is_cannot_load(litert_device, sample: TFLiteSample,
                                           tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.tflite"
    data = bytearray(sample.path.read_bytes())
    data[8:64] = b"\xff" * 56  # the root table offset and vtable: garbage
    bad.write_bytes(bytes(data))
    with pytest.raises(MeasurementError, match="cannot load the artifact: ai-edge-litert"):
        measure_files(bad, litert_device, FAST)
