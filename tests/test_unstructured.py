"""Unstructured magnitude pruning: exact sparsity per layer, globally, by threshold; the note."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from edgeprune.errors import ConfigError
from edgeprune.models.torchvision_compat import import_torchvision
from edgeprune.pruning.unstructured import SPARSITY_NOTE, sparsity_report, unstructured_prune

pytestmark = pytest.mark.usefixtures("one_thread")


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return import_torchvision().models.resnet18(num_classes=10).eval()


def _conv_linear(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_layer_ratio_gives_exact_sparsity_per_layer() -> None:
    model = _resnet18()
    x = torch.randn(2, 3, 32, 32)
    report = unstructured_prune(model, ratio=0.3, scope="layer")
    layers = _conv_linear(model)
    assert {r.name for r in report.layers} == set(layers)
    for row in report.layers:
        w = layers[row.name].weight
        assert row.params == w.numel()
        assert row.nonzero_params == w.numel() - int(0.3 * w.numel())
        assert int(torch.count_nonzero(w)) == row.nonzero_params
    assert model(x).shape == (2, 10)
    assert report.note == SPARSITY_NOTE
    assert "no faster" in report.note and "does not shrink" in report.note


def test_layer_ratio_zeroes_the_smallest_weights() -> None:
    model = _resnet18()
    before = model.layer1[0].conv1.weight.detach().abs().clone().flatten()
    unstructured_prune(model, ratio=0.5, layers=["layer1.0.conv1"])
    after = model.layer1[0].conv1.weight.detach().flatten()
    zeroed = before[after == 0]
    kept = before[after != 0]
    assert zeroed.numel() == before.numel() // 2
    assert zeroed.max() <= kept.min()
    # other layers untouched
    conv2 = model.layer1[0].conv2.weight
    assert int(torch.count_nonzero(conv2)) == conv2.numel()


def test_global_ratio_is_exact_over_all_layers_and_uneven_per_layer() -> None:
    model = _resnet18()
    report = unstructured_prune(model, ratio=0.6, scope="global")
    total = sum(m.weight.numel() for m in _conv_linear(model).values())
    assert report.params == total
    assert report.nonzero_params == total - int(0.6 * total)
    assert report.sparsity == pytest.approx(int(0.6 * total) / total)
    per_layer = {round(r.sparsity, 2) for r in report.layers}
    assert len(per_layer) > 3  # global ranking spreads sparsity unevenly across layers


def test_threshold_zeroes_exactly_the_small_weights() -> None:
    model = _resnet18()
    threshold = 0.02
    expected = {n: int((m.weight.detach().abs() >= threshold).sum())
                for n, m in _conv_linear(model).items()}
    report = unstructured_prune(model, threshold=threshold)
    assert {r.name: r.nonzero_params for r in report.layers} == expected
    data = report.to_dict()
    json.dumps(data)
    assert data["threshold"] == threshold and data["note"] == SPARSITY_NOTE
    assert data["model_params"] == sum(p.numel() for p in model.parameters())


def test_leave_masks_uses_torch_prune_and_reports_the_mask() -> None:
    model = _resnet18()
    report = unstructured_prune(model, ratio=0.25, layers=["fc"], leave_masks=True)
    assert hasattr(model.fc, "weight_mask") and hasattr(model.fc, "weight_orig")
    n = model.fc.weight.numel()
    assert report.nonzero_params == n - int(0.25 * n)
    assert int(model.fc.weight_mask.sum()) == report.nonzero_params
    # a second round on a masked layer combines masks: ratio counts the zeros already there
    report2 = unstructured_prune(model, ratio=0.5, layers=["fc"])
    assert report2.nonzero_params == n - int(0.5 * n)
    assert sparsity_report(model, layers=["fc"]).nonzero_params == report2.nonzero_params


def test_mask_from_torch_prune_is_counted_by_sparsity_report() -> None:
    model = _resnet18()
    torch_prune.l1_unstructured(model.layer4[1].conv2, "weight", amount=0.4)
    report = sparsity_report(model)
    row = next(r for r in report.layers if r.name == "layer4.1.conv2")
    assert row.sparsity == pytest.approx(0.4, abs=1e-4)
    assert report.model_params == sum(
        p.numel() for n, p in model.named_parameters())


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ratio": 1.2}, "outside [0, 1)"),
        ({"ratio": 0.5, "threshold": 0.1}, "exactly one"),
        ({}, "exactly one"),
        ({"ratio": 0.5, "scope": "globl"}, "did you mean 'global'"),
        ({"ratio": 0.5, "layers": ["layer1.0.conv3"]}, "did you mean 'layer1.0.conv"),
        ({"ratio": 0.5, "layers": ["layer1.0.bn1"]}, "not a Conv or Linear"),
    ],
)
def test_bad_arguments_give_one_line_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        unstructured_prune(_resnet18(), **kwargs)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
