"""``edgeprune export`` and ``edgeprune info`` end to end, in process, on real models and data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeprune.cli.main import main
from edgeprune.errors import EXIT_ERROR, EXIT_USAGE
from edgeprune.models import load as models
from edgeprune.models import pruned_dir as saving

FACTORY = """
import torch
from torch import nn


def small(width=8):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10),
    )
"""


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main([*argv, "--format", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.fixture()
def factory(tmp_path: Path) -> str:
    path = tmp_path / "nets.py"
    path.write_text(FACTORY)
    return f"{path}:small"


def test_export_trained_builtin_on_real_mnist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mnist.onnx"
    code, data = run_cli(
        capsys, "export", "--model", "builtin:mnist-cnn", "--out", str(out),
        "--data", "builtin:mnist5k",
    )  # fmt: skip
    assert code == 0, data
    assert data["files"] == [str(out)] and data["opset"] == 20
    assert data["check_inputs"].startswith("4 real images from builtin:mnist5k")
    assert data["max_abs_diff"] <= 1e-4 and data["max_abs_output"] > 1.0  # trained logits
    assert data["input_shapes"] == [[1, 1, 28, 28]]

    from edgeprune.artifacts.onnx_export import load_onnx_session

    logits = load_onnx_session(out).run(None, {"input": np.zeros((1, 1, 28, 28), np.float32)})
    assert logits[0].shape == (1, 10)

    code, err = run_cli(
        capsys, "export", "--model", "builtin:mnist-cnn", "--out", str(out)
    )  # exists: refused, one-line error in JSON
    assert code == EXIT_ERROR
    assert err["error"]["type"] == "OutputExistsError" and "--force" in err["error"]["message"]


def test_export_old_opset_external_data_then_info(
    tmp_path: Path, factory: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "small.onnx"
    code, data = run_cli(
        capsys, "export", "--model", factory, "--input-shape", "2,3,32,32", "--out", str(out),
        "--opset", "13", "--external-data",
    )  # fmt: skip
    assert code == 0, data
    assert (data["exporter"], data["opset"]) == ("torchscript", 13)
    assert data["files"] == [str(out), str(out) + ".data"]
    assert "random" in data["check_inputs"]

    code, info = run_cli(capsys, "info", str(out))
    assert code == 0, info
    assert info["kind"] == "onnx" and info["opset"] == 13
    assert info["files"] == data["files"]
    assert info["size_bytes"] == sum(Path(f).stat().st_size for f in data["files"])
    assert info["params"] == (3 * 8 * 9 + 8) + (8 * 16 * 9 + 16) + (16 * 10 + 10)
    assert info["inputs"] == [{"name": "input", "dtype": "float32", "shape": [2, 3, 32, 32]}]
    assert info["op_types"]["Conv"] == 2


def test_info_torchvision_resnet18(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_cli(capsys, "info", "torchvision:resnet18")
    assert code == 0, data
    assert data["macs"] == 1_814_073_344 and data["params"] == 11_689_512
    assert data["input_shapes"] == [[1, 3, 224, 224]]
    assert data["size_on_disk_bytes"] is None  # no file behind a bare architecture
    fc = next(w for w in data["widths"] if w["name"] == "fc")
    assert (fc["in_width"], fc["out_width"]) == (512, 1000)

    capsys.readouterr()
    assert main(["info", "torchvision:resnet18", "--input-shape", "1,3,112,112"]) == 0
    text = capsys.readouterr().out
    assert "MACs:" in text and "at 1×3×112×112" in text and "layer4.1.conv2" in text


@pytest.mark.parametrize("shape", ["1,28,28", "1x1x28x28", "1,1,28,28"])
def test_an_input_shape_without_batch_means_one_image(
        shape: str, capsys: pytest.CaptureFixture[str]) -> None:
    """C,H,W and N,C,H,W (',' or 'x') mean the same for every command (prune/info/export/fit)."""
    code, data = run_cli(capsys, "info", "builtin:mnist-cnn", "--input-shape", shape)
    assert code == 0, data
    assert data["input_shapes"] == [[1, 1, 28, 28]]


def test_info_and_export_of_a_pruned_directory(
    tmp_path: Path, factory: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model = models.load_model(factory)
    pruned = saving.save(model, tmp_path / "pruned", spec=factory, input_shape=(1, 3, 24, 24))
    code, data = run_cli(capsys, "info", str(pruned))
    assert code == 0, data
    assert data["input_shapes"] == [[1, 3, 24, 24]]  # from the directory's manifest
    assert data["size_on_disk_bytes"] == sum(p.stat().st_size for p in pruned.iterdir())
    assert data["macs"] == 8 * 24 * 24 * 27 + 16 * 12 * 12 * 72 + 160

    code, err = run_cli(
        capsys, "export", "--model", str(pruned), "--weights", "w.pt", "--out",
        str(tmp_path / "p.onnx"),
    )  # fmt: skip
    assert code == EXIT_USAGE and "drop --weights" in err["error"]["message"]


def test_usage_errors(tmp_path: Path, factory: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.onnx"
    code, err = run_cli(capsys, "export", "--model", factory, "--out", str(out))
    assert code == EXIT_USAGE and "--input-shape" in err["error"]["message"]

    import importlib.util

    if importlib.util.find_spec("litert_torch") is None:  # the extra converts instead
        code, err = run_cli(
            capsys, "export", "--model", factory, "--input-shape", "1,3,16,16", "--out",
            str(tmp_path / "m.tflite"),
        )  # fmt: skip
        assert code == EXIT_ERROR
        assert "pip install 'edgeprune[tflite]'" in err["error"]["message"]
    assert not out.exists()

    code, err = run_cli(capsys, "info", str(tmp_path / "missing.onnx"))
    assert code == EXIT_ERROR and err["error"]["type"] == "NotFoundError"


def test_info_of_a_tflite_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-built (constructed, schema-following) .tflite: params from its constant tensors."""
    from tests._tflite import make_fc_model

    sample = make_fc_model(tmp_path / "dense.tflite", in_features=64, out_features=10)
    assert main(["info", str(sample.path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "tflite"
    assert data["params"] == sample.weight.size + sample.bias.size == 650
    assert data["op_types"] == {"FULLY_CONNECTED": 1, "SOFTMAX": 1}
    assert main(["info", str(sample.path)]) == 0
    assert "params:       650 (constant tensors)" in capsys.readouterr().out
    (tmp_path / "broken.tflite").write_bytes(b"not a flatbuffer at all")
    assert main(["info", str(tmp_path / "broken.tflite")]) == EXIT_ERROR
    assert "not a TFLite model" in capsys.readouterr().err


def test_info_of_an_onnx_file_shows_its_macs(
    tmp_path: Path, factory: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """MACs of an .onnx file from its graph — the PyTorch count of the model it was exported
    from — in JSON and text; a graph it cannot tell says why instead of a number."""
    import torch

    from edgeprune.models import cost

    out = tmp_path / "small.onnx"
    code, data = run_cli(capsys, "export", "--model", factory, "--input-shape", "1,3,32,32",
                         "--out", str(out))
    assert code == 0, data
    expected = cost.count_macs(models.load_model(factory), torch.zeros(1, 3, 32, 32))
    code, info = run_cli(capsys, "info", str(out))
    assert code == 0, info
    assert (info["macs"], info["macs_note"]) == (expected, "")
    assert info["macs_input_shapes"] == [[1, 3, 32, 32]]
    assert main(["info", str(out)]) == 0
    assert f"MACs:         {expected:,} ({expected / 1e9:.3f} G) at 1×3×32×32" in (
        capsys.readouterr().out.splitlines())

    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, None)  # weights of unknown shape
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g", [x, w], [y])
    unknown = tmp_path / "unknown.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                    str(unknown))
    code, info = run_cli(capsys, "info", str(unknown))
    assert code == 0 and info["macs"] is None
    assert "Conv/Gemm/MatMul node(s) are unknown" in info["macs_note"]
    assert main(["info", str(unknown)]) == 0
    assert ("MACs:         unknown (shapes of 1 Conv/Gemm/MatMul node(s) are unknown to ONNX "
            "shape inference)") in capsys.readouterr().out.splitlines()


def test_info_of_an_onnx_or_tflite_file_does_not_import_torch(tmp_path: Path) -> None:
    """Reading a graph needs onnx, not torch: ``edgeprune info x.onnx`` stays light."""
    import subprocess
    import sys

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tests._tflite import make_fc_model

    w = numpy_helper.from_array(np.ones((4, 5), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    path = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                    str(path))
    tfl = make_fc_model(tmp_path / "m.tflite", in_features=4, out_features=5).path
    for artifact in (path, tfl):
        code = ("import sys\n"
                "from edgeprune.cli.main import main\n"
                f"rc = main(['info', {str(artifact)!r}, '--format', 'json'])\n"
                "print('RC', rc, 'TORCH', 'torch' in sys.modules)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        assert out.stdout.splitlines()[-1] == "RC 0 TORCH False", (out.stdout, out.stderr)
