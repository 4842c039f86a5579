"""The on-device runner: Python 3.6 syntax, stdlib-only imports, and real runs in a subprocess."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeprune.devices import runner
from tests._sshd import DEVICE_PYTHON, make_conv_model

RUNNER = Path(runner.__file__)
ALLOWED_IMPORTS = {
    # standard library
    "argparse", "glob", "json", "math", "os", "platform", "shutil", "sys", "tempfile", "time",
    "traceback", "resource", "importlib",
    # the device-side packages
    "numpy", "onnxruntime", "psutil", "ai_edge_litert", "tflite_runtime",
}


def run_runner(*args: str, python: str = sys.executable, env: dict[str, str] | None = None):
    proc = subprocess.run([python, str(RUNNER), *args], capture_output=True, text=True,
                          timeout=120, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(runner.MARKER)]
    assert lines, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(lines[-1][len(runner.MARKER):])


def test_runner_parses_as_python_3_6() -> None:
    source = RUNNER.read_text()
    tree = ast.parse(source, feature_version=(3, 6))
    for node in ast.walk(tree):
        assert not isinstance(node, ast.NamedExpr), "walrus is 3.8+"
        if isinstance(node, ast.ImportFrom):
            assert node.module != "__future__", "from __future__ imports break 3.6 for annotations"
        if isinstance(node, ast.FormattedValue):
            pytest.fail("f-strings are 3.6 but keep the runner free of them (no f'{x=}' risk)")


def test_runner_imports_only_stdlib_numpy_and_runtimes() -> None:
    tree = ast.parse(RUNNER.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            continue  # the runtimes, by name from a fixed list
    assert names <= ALLOWED_IMPORTS, names - ALLOWED_IMPORTS


def test_percentiles_match_numpy() -> None:
    values = sorted(np.random.RandomState(1).exponential(size=37).tolist())
    for q in (50, 90, 95, 99):
        assert runner.percentile(values, q) == pytest.approx(np.percentile(values, q))
    stats = runner.summarize([v / 1000.0 for v in values])
    assert stats["std_ms"] == pytest.approx(np.std(values))
    assert stats["cv"] == pytest.approx(np.std(values) / np.mean(values))


def test_runner_measures_a_real_onnx_model(tmp_path: Path) -> None:
    model = make_conv_model(tmp_path / "m.onnx")
    rc, doc = run_runner("--model", str(model), "--runs", "7", "--warmup", "2",
                         "--default-shape", "1x3x24x24", "--threads", "1", "--keep-times")
    assert rc == 0, doc
    assert doc["runtime"] == "onnxruntime" and doc["runtime_version"]
    assert doc["runs"] == 7 and len(doc["times_ms"]) == 7
    assert doc["inputs"]["x"]["shape"] == [1, 3, 24, 24]
    assert doc["min_ms"] <= doc["p50_ms"] <= doc["p90_ms"] <= doc["p99_ms"] <= doc["max_ms"]
    assert doc["peak_rss_mb"] > 10 and doc["session_create_ms"] > 0 and doc["first_run_ms"] > 0
    assert doc["threads"] == 1 and doc["providers"] == ["CPUExecutionProvider"]
    facts = doc["device"]
    assert facts["machine"] and facts["cores"] >= 1 and facts["memory_total_mb"] > 0
    assert facts["python_executable"] == sys.executable


def test_input_shape_override_and_per_op(tmp_path: Path) -> None:
    model = make_conv_model(tmp_path / "m.onnx")
    rc, doc = run_runner("--model", str(model), "--runs", "3", "--warmup", "0",
                         "--input-shape", "x=2x3x8x8", "--per-op")
    assert rc == 0, doc
    assert doc["inputs"]["x"]["shape"] == [2, 3, 8, 8]
    ops = {o["op_type"] for o in doc["per_op"]["by_op_type"]}
    assert "GlobalAveragePool" in ops or "Conv" in ops


def test_missing_numpy_is_a_named_error(tmp_path: Path) -> None:
    if not os.path.exists(DEVICE_PYTHON):
        pytest.skip(f"{DEVICE_PYTHON} not present")
    model = make_conv_model(tmp_path / "m.onnx")
    rc, doc = run_runner("--model", str(model), python=DEVICE_PYTHON,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""})
    check = subprocess.run([DEVICE_PYTHON, "-c", "import numpy"], capture_output=True,
                           env={"PATH": "/usr/bin:/bin"})
    if check.returncode == 0:
        pytest.skip("the system python has numpy installed globally")
    assert rc == runner.EXIT_FAILED
    assert doc["error"]["kind"] == "runtime_missing" and doc["error"]["package"] == "numpy"


def test_unloadable_artifact_is_load_failed(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf")
    rc, doc = run_runner("--model", str(bad))
    assert rc == runner.EXIT_FAILED
    assert doc["error"]["kind"] == "load_failed"


def test_probe_lists_runtimes() -> None:
    rc, doc = run_runner("--probe")
    assert rc == 0
    assert doc["runtimes"]["onnxruntime"]["present"] is True
    assert doc["runtimes"]["numpy"]["version"] == np.__version__
    assert "machine" in doc["device"]


def test_one_preempted_run_does_not_make_a_steady_result_noisy():
    from edgeprune.devices import runner

    steady = [0.001 + 0.00001 * (i % 5) for i in range(99)]
    stats = runner.summarize([*steady, 0.050])  # one run 50x slower (preempted)
    assert stats["cv"] > 1.0  # the classic CV is dominated by the outlier
    assert stats["robust_cv"] < 0.02  # the IQR-based one describes the bulk
    wobbly = runner.summarize([0.001 * (1 + (i % 2)) for i in range(100)])
    assert wobbly["robust_cv"] > 0.2  # genuinely spread timings still count as noisy


# --- TFLite (a real .tflite built from the schema, run by ai-edge-litert) ----------------------


def test_runner_measures_a_real_tflite_model(tmp_path: Path) -> None:
    import ai_edge_litert

    from tests._tflite import make_fc_model

    sample = make_fc_model(tmp_path / "fc.tflite", dynamic_batch=True)
    rc, doc = run_runner("--model", str(sample.path), "--runs", "7", "--warmup", "2",
                         "--threads", "1", "--keep-times", "--default-shape", "3x64")
    assert rc == 0, doc
    assert doc["runtime"] == "ai-edge-litert"
    assert doc["runtime_version"] == ai_edge_litert.__version__
    assert doc["runs"] == 7 and len(doc["times_ms"]) == 7 and doc["threads"] == 1
    assert doc["providers"] == [] and "per_op" not in doc
    # a dynamic batch dim (shape_signature -1) filled from --default-shape, then resized
    assert doc["inputs"]["x"] == {"shape": [3, 64], "dtype": "float32",
                                  "declared": ["None", 64]}
    assert doc["min_ms"] <= doc["p50_ms"] <= doc["p90_ms"] <= doc["p99_ms"] <= doc["max_ms"]
    assert doc["session_create_ms"] > 0 and doc["peak_rss_mb"] > 10


def test_runner_tflite_errors_are_named(tmp_path: Path) -> None:
    from tests._tflite import make_fc_model

    sample = make_fc_model(tmp_path / "fc.tflite")
    rc, doc = run_runner("--model", str(sample.path), "--per-op")
    assert rc == runner.EXIT_FAILED and doc["error"]["kind"] == "bad_args"
    assert "ONNX-only" in doc["error"]["message"]
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\x00" * 64)
    rc, doc = run_runner("--model", str(broken))
    assert rc == runner.EXIT_FAILED and doc["error"]["kind"] == "load_failed"
    assert doc["error"]["message"].startswith("ai-edge-litert cannot load broken.tflite: ")
    rc, doc = run_runner("--model", str(sample.path), "--runtime", "tensorrt")
    assert rc == runner.EXIT_FAILED and doc["error"]["kind"] == "bad_args"


def test_tflite_package_hint_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.platform, "machine", lambda: "x86_64")
    assert runner.tflite_package_hint() == "ai-edge-litert"  # this Python is >= 3.10
    monkeypatch.setattr(runner.platform, "machine", lambda: "armv7l")  # 32-bit Pi OS
    assert runner.tflite_package_hint() == "tflite-runtime"


def test_probe_lists_ai_edge_litert() -> None:
    import ai_edge_litert

    rc, doc = run_runner("--probe")
    assert rc == 0
    assert doc["runtimes"]["ai_edge_litert"] == {"present": True,
                                                 "version": ai_edge_litert.__version__}
