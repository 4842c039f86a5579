"""TFLite export through the optional extra (litert-torch), checked in ai-edge-litert.

The first tests need nothing extra and run everywhere, CI included: without litert-torch the
export is a one-line error naming ``pip install 'edgeprune[tflite]'``, and the CLI refuses
ONNX-only flags for a .tflite output. Every test that converts a model calls
``pytest.importorskip("litert_torch")``: CI does not install the ~1.2 GB extra, so it skips
them. Run them in an environment with the extra (docs/tflite.md), e.g.
``/opt/ep-tflite-venv/bin/python -m pytest -q tests/test_export_tflite.py``. They convert a
trained network (builtin:mnist-cnn) and a pruned torchvision MobileNetV2 for real and compare
ai-edge-litert's Interpreter with PyTorch on real digits.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.artifacts.tflite import export_tflite
from edgeprune.cli.main import main
from edgeprune.errors import EXIT_USAGE, ExportError, OutputExistsError, ParityError
from tests._helpers import torchvision_model
from tests.conftest import digits_rgb32

pytestmark = pytest.mark.usefixtures("one_thread")


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class ExportTimeDrift(SmallCNN):
    """Behaves differently while being exported: the .tflite does not match PyTorch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out + 1.0 if torch.compiler.is_exporting() else out


class Branchy(SmallCNN):
    """Data-dependent control flow: torch.export (under litert-torch) cannot capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        if y.mean() > 0.1:
            y = y * 2
        return self.head(y.mean(dim=(2, 3)))


@pytest.fixture
def litert() -> Any:
    """The extra, or skip: CI does not install litert-torch (see the module docstring)."""
    pytest.importorskip("ai_edge_litert", reason="the TFLite runtime (ai-edge-litert) is needed")
    return pytest.importorskip(
        "litert_torch", reason="the optional extra: pip install 'edgeprune[tflite]'"
    )


def mnist_digits(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` real MNIST digits (builtin:mnist5k, the model's own normalisation) and labels."""
    from edgeprune.data import load_data

    bundle = load_data("builtin:mnist5k", input_shape=(1, 28, 28), batch_size=n)
    images, labels = next(iter(bundle.val))
    return images, labels


def run_tflite(path: Path, batch: np.ndarray) -> np.ndarray:
    """The written file in a fresh Interpreter, one image at a time (the exported batch is 1)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    rows = []
    for image in batch:
        interpreter.set_tensor(inp["index"], image[None].astype(np.float32))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


# --- without the extra (runs in CI) ------------------------------------------------------------


def test_without_the_extra_one_line_error_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "litert_torch" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.delitem(sys.modules, "litert_torch", raising=False)
    out = tmp_path / "m.tflite"
    with pytest.raises(ExportError) as info:
        export_tflite(SmallCNN(), torch.rand(1, 3, 16, 16), out)
    message = str(info.value)
    assert "\n" not in message
    assert "pip install 'edgeprune[tflite]'" in message and "litert-torch" in message
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_without_the_extra_or_with_onnx_only_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.tflite"
    base = ["export", "--model", "builtin:mnist-cnn", "--out", str(out), "--format", "json"]

    capsys.readouterr()
    code = main([*base, "--opset", "13", "--dynamic-batch"])
    error = json.loads(capsys.readouterr().out)["error"]
    assert code == EXIT_USAGE
    assert "--opset, --dynamic-batch apply only to ONNX export" in error["message"]

    code = main(["export", "--model", "builtin:mnist-cnn", "--out", str(tmp_path / "m.onnx"),
                 "--channels-last", "--format", "json"])  # fmt: skip
    error = json.loads(capsys.readouterr().out)["error"]
    assert code == EXIT_USAGE and "--channels-last only applies to TFLite" in error["message"]

    if importlib.util.find_spec("litert_torch") is None:  # CI: the extra is absent
        code = main(base)
        error = json.loads(capsys.readouterr().out)["error"]
        assert code == 1 and "pip install 'edgeprune[tflite]'" in error["message"]
    assert not out.exists()


# --- with the extra: real conversions ----------------------------------------------------------


def test_trained_mnist_cnn_matches_pytorch_on_real_digits(
    litert: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from edgeprune.models.load import load_model

    model = load_model("builtin:mnist-cnn").eval()
    images, labels = mnist_digits(32)
    out = tmp_path / "mnist.tflite"
    events: list[dict[str, Any]] = []
    capfd.readouterr()

    result = export_tflite(model, images[:1], out, check_inputs=images, progress=events.append)

    # nothing leaked to stdout/stderr (Python or C++), and both still work afterwards
    leaked = capfd.readouterr()
    assert (leaked.out, leaked.err) == ("", "")
    print("stdout after")
    os.write(2, b"fd 2 after\n")
    after = capfd.readouterr()
    assert after.out == "stdout after\n" and after.err == "fd 2 after\n"

    assert [e["stage"] for e in events] == ["export", "verify"]
    assert result.format == "tflite" and result.path == str(out) and result.files == (str(out),)
    assert result.size_bytes == out.stat().st_size
    # 421,642 float32 weights: the file is the weights plus a small graph
    assert 421_642 * 4 < result.size_bytes < 421_642 * 4 * 1.1
    assert result.input_shapes == ((1, 1, 28, 28),) and result.output_shapes == ((1, 10),)
    assert result.checked_batches == 32 and not result.channels_last
    assert 0 < result.max_abs_diff <= 1e-3 and result.max_abs_output > 1
    assert result.litert_torch_version == "0.10.0" and result.ai_edge_litert_version
    data = result.to_dict()
    assert "opset" not in data and data["format"] == "tflite"
    assert out.read_bytes()[4:8] == b"TFL3"
    assert [p.name for p in tmp_path.iterdir()] == ["mnist.tflite"]  # no temporary files

    # the written file, loaded afresh, classifies the digits as PyTorch does
    with torch.no_grad():
        reference = model(images).numpy()
    got = run_tflite(out, images.numpy())
    np.testing.assert_allclose(got, reference, rtol=1e-3, atol=1e-4)
    assert np.array_equal(got.argmax(1), reference.argmax(1))
    assert (reference.argmax(1) == labels.numpy()).mean() >= 0.9  # real digits, trained model


def test_channels_last_takes_nhwc_and_still_matches(litert: Any, tmp_path: Path) -> None:
    from edgeprune.models.load import load_model

    model = load_model("builtin:mnist-cnn").eval()
    images, _ = mnist_digits(8)
    out = tmp_path / "nhwc.tflite"
    result = export_tflite(model, images[:1], out, check_inputs=images, channels_last=True)
    assert result.channels_last and result.input_shapes == ((1, 28, 28, 1),)
    with torch.no_grad():
        reference = model(images).numpy()
    got = run_tflite(out, images.permute(0, 2, 3, 1).numpy())
    np.testing.assert_allclose(got, reference, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_pruned_mobilenet_v2_converts_and_matches(litert: Any, tmp_path: Path) -> None:
    from edgeprune.pruning.prune import PruneConfig, prune

    torch.set_flush_denormal(True)
    try:
        model = torchvision_model("mobilenet_v2")
        x, _ = digits_rgb32()
        images = x[:8].contiguous()
        pruned = prune(copy.deepcopy(model), images[:2], PruneConfig(ratio=0.5, round_to=8))
        assert pruned.params_after < 0.6 * pruned.params_before
        out = tmp_path / "mbv2-pruned.tflite"
        result = export_tflite(pruned.model, images[:2], out, check_inputs=images)
    finally:
        torch.set_flush_denormal(False)
    assert result.input_shapes == ((2, 3, 32, 32),) and result.output_shapes == ((2, 10),)
    assert result.checked_batches == 4
    assert result.max_abs_diff <= 1e-3 * max(1.0, result.max_abs_output)
    # the pruned weights, not the original ones, are in the file (float32, small graph overhead)
    assert pruned.params_after * 4 < result.size_bytes < pruned.params_before * 4


def test_refuses_to_overwrite_without_force(litert: Any, tmp_path: Path) -> None:
    out = tmp_path / "m.tflite"
    out.write_bytes(b"user's file")
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(OutputExistsError, match="--force"):
        export_tflite(SmallCNN(), x, out)
    assert out.read_bytes() == b"user's file"
    export_tflite(SmallCNN(), x, out, force=True)
    assert out.read_bytes()[4:8] == b"TFL3"


def test_a_mismatch_is_a_parity_error_and_writes_nothing(litert: Any, tmp_path: Path) -> None:
    x, _ = digits_rgb32()
    out = tmp_path / "drift.tflite"
    with pytest.raises(ParityError, match="ai-edge-litert output differs from PyTorch"):
        export_tflite(ExportTimeDrift(), x[:1], out, check_inputs=x[:4])
    assert list(tmp_path.iterdir()) == []


def test_a_conversion_failure_is_one_line(litert: Any, tmp_path: Path) -> None:
    x, _ = digits_rgb32()
    with pytest.raises(ExportError) as info:
        export_tflite(Branchy(), x[:1], tmp_path / "b.tflite")
    assert str(info.value).startswith("TFLite conversion with litert-torch failed:")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_tflite_and_onnx_exports_in_two_threads_stay_quiet(
    litert: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """litert-torch parks fds 1/2 while ONNX exports in another thread: both artifacts pass their
    checks, nothing leaks from either, and stdio and the descriptors work again afterwards."""
    import threading

    from edgeprune.artifacts.onnx_export import export_onnx

    capfd.readouterr()
    streams = (sys.stdout, sys.stderr)
    fds = [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)]
    x = torch.rand(1, 3, 16, 16)
    start = threading.Barrier(2)
    results: dict[str, Any] = {}

    def job(fmt: str) -> None:
        start.wait(timeout=60)
        try:
            export = export_tflite if fmt == "tflite" else export_onnx
            results[fmt] = export(SmallCNN().eval(), x, tmp_path / f"m.{fmt}")
        except BaseException as exc:  # reported by the main thread
            results[fmt] = exc

    threads = [threading.Thread(target=job, args=(fmt,)) for fmt in ("tflite", "onnx")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for fmt in ("tflite", "onnx"):
        assert not isinstance(results[fmt], BaseException), results[fmt]
        assert results[fmt].format == fmt and results[fmt].max_abs_diff <= 1e-4
    assert capfd.readouterr() == ("", "")
    assert (sys.stdout, sys.stderr) == streams
    assert [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)] == fds
    os.write(1, b"fd 1 after\n")
    assert capfd.readouterr().out == "fd 1 after\n"
