"""ONNX export on real architectures and real images, checked by onnx.checker and onnxruntime."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeprune.artifacts.files import size_on_disk
from edgeprune.artifacts.onnx_export import export_onnx, load_onnx_session, verify_onnx
from edgeprune.artifacts.tflite import export_tflite
from edgeprune.errors import ExportError, OutputExistsError, ParityError, UsageError
from tests.conftest import real_images


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8),
            nn.Conv2d(8, 16, 1, stride=2),
            nn.ReLU(),
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class BranchyCNN(SmallCNN):
    """Data-dependent control flow: torch.export (dynamo) cannot capture it, tracing can."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        if y.mean() > -1e9:  # always true on real data, but a data-dependent branch
            y = y * 2
        return self.head(y.mean(dim=(2, 3)))


class ExportTimeDrift(SmallCNN):
    """Behaves differently while being exported: the artifact does not match PyTorch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out + 1.0 if torch.compiler.is_exporting() else out


@pytest.fixture(scope="module")
def images(digits_images: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Eight real digits at 64×64, three channels, roughly ImageNet-normalised."""
    torch.manual_seed(0)
    return (real_images(digits_images, 8, 3, 64) - 0.45) / 0.25


@pytest.fixture()
def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval()


def calibrated(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """BatchNorm statistics from real images, so random-init outputs are O(1), not ~1e-9.

    Random-init MobileNetV2's outputs vanish (~1e-9) and would pass any absolute tolerance.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches seen
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def _tv():
    from edgeprune.models.torchvision_compat import import_torchvision

    return import_torchvision()


def test_small_cnn_dynamo_single_file(
    tmp_path: Path, small_cnn: SmallCNN, images: torch.Tensor, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    handlers = {n: list(logging.getLogger(n).handlers) for n in ("torch", "torch.onnx")}
    path = tmp_path / "small.onnx"
    result = export_onnx(small_cnn, images[:2], path, check_inputs=images)
    assert capsys.readouterr() == ("", "")  # library functions never print
    assert {n: logging.getLogger(n).handlers for n in handlers} == handlers  # restored
    assert result.exporter == "dynamo" and result.opset == 20
    assert result.files == (str(path),)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.onnx"]  # no temp leftovers
    onnx.checker.check_model(str(path))
    assert result.checked_batches == 4  # 8 real images in chunks of the exported batch of 2
    assert 0 <= result.max_abs_diff <= 1e-4
    assert result.input_shapes == ((2, 3, 64, 64),) and result.output_shapes == ((2, 10),)
    assert result.size_bytes == path.stat().st_size == size_on_disk(path)
    session = load_onnx_session(path)
    got = session.run(None, {"input": images[2:4].numpy()})[0]
    np.testing.assert_allclose(got, small_cnn(images[2:4]).detach().numpy(), atol=1e-4)
    assert result.to_dict()["files"] == [str(path)]


def test_resnet18_external_data_listed_counted_and_portable(
    tmp_path: Path, images: torch.Tensor
) -> None:
    torch.manual_seed(0)
    model = calibrated(_tv().models.resnet18(num_classes=10), images)
    path = tmp_path / "out" / "r18.onnx"
    result = export_onnx(model, images[:1], path, external_data=True, check_inputs=images[:2])
    data = path.with_name("r18.onnx.data")
    assert result.files == (str(path), str(data))
    assert data.stat().st_size > 40_000_000  # the weights live there
    assert result.size_bytes == size_on_disk(path) == path.stat().st_size + data.stat().st_size
    onnx.checker.check_model(str(path))
    assert result.max_abs_diff <= 1e-3 and result.max_abs_output > 0.1
    # copying every listed file to a "device" directory is enough to run it there
    device = tmp_path / "device"
    device.mkdir()
    for name in result.files:
        shutil.copy(name, device)
    out = load_onnx_session(device / "r18.onnx").run(None, {"input": images[:1].numpy()})[0]
    np.testing.assert_allclose(out, model(images[:1]).detach().numpy(), rtol=1e-3, atol=1e-4)


def test_mobilenet_v2_old_opset_uses_torchscript(tmp_path: Path, images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = calibrated(_tv().models.mobilenet_v2(num_classes=10), images)
    path = tmp_path / "mnv2.onnx"
    result = export_onnx(model, images[:1], path, opset=13, check_inputs=images[:2])
    assert result.exporter == "torchscript"
    assert any("opset 13" in note for note in result.notes)
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert result.opset == 13 and result.max_abs_diff <= 1e-3
    assert result.max_abs_output > 0.1  # a meaningful comparison, not vanishing outputs
    assert not any("tiny" in note for note in result.notes)


def test_vanishing_outputs_are_flagged(tmp_path: Path, small_cnn: SmallCNN) -> None:
    with torch.no_grad():
        small_cnn.head.weight.mul_(1e-9)
        small_cnn.head.bias.zero_()
    result = export_onnx(small_cnn, torch.rand(1, 3, 32, 32), tmp_path / "m.onnx",
                         exporter="torchscript")  # fmt: skip
    assert result.max_abs_output < 1e-6
    assert any("outputs are tiny" in note for note in result.notes)


def test_opset_override_with_dynamo_is_read_back(tmp_path: Path, small_cnn: SmallCNN) -> None:
    result = export_onnx(small_cnn, torch.rand(1, 3, 32, 32), tmp_path / "m.onnx", opset=18)
    assert (result.exporter, result.opset) == ("dynamo", 18)
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 18


def test_dynamo_cannot_write_old_opsets(tmp_path: Path, small_cnn: SmallCNN) -> None:
    with pytest.raises(UsageError, match="opset 13"):
        export_onnx(small_cnn, torch.rand(1, 3, 32, 32), tmp_path / "m.onnx", opset=13,
                    exporter="dynamo")  # fmt: skip


def test_data_dependent_branch_falls_back_to_torchscript(
    tmp_path: Path, images: torch.Tensor
) -> None:
    torch.manual_seed(0)
    model = BranchyCNN().eval()
    result = export_onnx(model, images[:1], tmp_path / "b.onnx", check_inputs=images[:4])
    assert result.exporter == "torchscript"
    assert any(note.startswith("dynamo exporter failed") for note in result.notes)
    with pytest.raises(ExportError, match="dynamo exporter failed"):
        export_onnx(model, images[:1], tmp_path / "c.onnx", exporter="dynamo")
    assert not (tmp_path / "c.onnx").exists()


def test_export_time_drift_raises_parity_error_and_writes_nothing(
    tmp_path: Path, images: torch.Tensor
) -> None:
    torch.manual_seed(0)
    path = tmp_path / "drift.onnx"
    with pytest.raises(ParityError, match=r"differs from PyTorch by up to 1 .*atol=0\.0001"):
        export_onnx(ExportTimeDrift().eval(), images[:1], path, exporter="dynamo")
    assert list(tmp_path.iterdir()) == []


def test_changed_weights_fail_verification_with_numbers(
    tmp_path: Path, small_cnn: SmallCNN, images: torch.Tensor
) -> None:
    path = tmp_path / "m.onnx"
    result = export_onnx(small_cnn, images[:1], path)
    assert verify_onnx(path, small_cnn, images[:1]) == pytest.approx(result.max_abs_diff)
    with torch.no_grad():
        small_cnn.head.bias += 0.5
    with pytest.raises(ParityError) as info:
        verify_onnx(path, small_cnn, [images[:1], images[1:2]])
    assert "up to 0.5 " in str(info.value) and "rtol=0.001" in str(info.value)


def test_tolerance_is_applied(tmp_path: Path, small_cnn: SmallCNN, images: torch.Tensor) -> None:
    path = tmp_path / "m.onnx"
    export_onnx(small_cnn, images[:1], path)
    with torch.no_grad():
        small_cnn.head.bias += 1e-3
    assert verify_onnx(path, small_cnn, images[:1], atol=2e-3) == pytest.approx(1e-3, rel=0.05)
    with pytest.raises(ParityError):
        verify_onnx(path, small_cnn, images[:1], atol=1e-4, rtol=0.0)


def test_existing_output_refused_without_force(
    tmp_path: Path, small_cnn: SmallCNN, images: torch.Tensor
) -> None:
    path = tmp_path / "m.onnx"
    export_onnx(small_cnn, images[:1], path, external_data=True)
    assert path.with_name("m.onnx.data").exists()
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--force"):
        export_onnx(small_cnn, images[:1], path)
    assert path.read_bytes() == before
    result = export_onnx(small_cnn, images[:1], path, force=True)  # now a single file
    assert result.files == (str(path),)
    assert not path.with_name("m.onnx.data").exists()  # stale weights of the old artifact gone
    load_onnx_session(path)


def test_dynamic_batch(tmp_path: Path, small_cnn: SmallCNN, images: torch.Tensor) -> None:
    path = tmp_path / "dyn.onnx"
    result = export_onnx(small_cnn, images[:1], path, dynamic_batch=True, check_inputs=images)
    assert result.input_shapes == (("batch", 3, 64, 64),)
    out = load_onnx_session(path).run(None, {"input": images[:5].numpy()})[0]
    assert out.shape == (5, 10)


def test_bad_arguments(tmp_path: Path, small_cnn: SmallCNN, images: torch.Tensor) -> None:
    with pytest.raises(UsageError, match="unknown exporter"):
        export_onnx(small_cnn, images[:1], tmp_path / "a.onnx", exporter="tvm")
    with pytest.raises(UsageError, match="do not fit the exported shape"):
        export_onnx(small_cnn, images[:2], tmp_path / "a.onnx", check_inputs=images[:3])
    with pytest.raises(ExportError, match="cannot load"):
        load_onnx_session(tmp_path / "missing.onnx")
    assert not (tmp_path / "a.onnx").exists()


def test_model_mode_restored(tmp_path: Path, small_cnn: SmallCNN, images: torch.Tensor) -> None:
    small_cnn.train()
    running = small_cnn.features[1].running_mean.clone()
    export_onnx(small_cnn, images[:1], tmp_path / "m.onnx", exporter="torchscript")
    assert small_cnn.training
    assert torch.equal(small_cnn.features[1].running_mean, running)


def test_tflite_needs_the_optional_extra(tmp_path: Path, small_cnn: SmallCNN) -> None:
    try:
        import litert_torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("litert-torch is installed; this case covers its absence")
    with pytest.raises(ExportError, match=r"pip install 'edgeprune\[tflite\]'"):
        export_tflite(small_cnn, torch.rand(1, 3, 32, 32), tmp_path / "m.tflite")


def test_the_cli_lists_the_exporters_the_library_has() -> None:
    """cli/export.py keeps its own copy of the exporter names (the CLI must not import torch at
    start-up); the copy must stay the library's list."""
    from edgeprune.artifacts import onnx_export
    from edgeprune.cli import export as cli_export

    assert cli_export.EXPORTERS == onnx_export.EXPORTERS
