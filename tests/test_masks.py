"""Masks in: torch.nn.utils.prune pairs on a live model and in a state dict become plain weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from edgeprune.errors import CheckpointError, UsageError
from edgeprune.pruning.masks import (
    apply_masks,
    apply_torch_prune_masks,
    load_masked_state_dict,
    masked_copy,
)
from edgeprune.pruning.materialize import materialize
from tests._helpers import torchvision_model
from tests.conftest import digits_rgb32

pytestmark = pytest.mark.usefixtures("flush_denormals")


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """32 real handwritten digits, 8×8 upsampled to 32×32, replicated to 3 channels."""
    return digits_rgb32()[0][:32].clone()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return torchvision_model("resnet18")


def _dead_rows(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().flatten(1).abs().sum(dim=1) == 0


def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def _ln_structured_resnet(resnet18: nn.Module) -> nn.Module:
    """Three convs masked by ln_structured (still masked), their BatchNorms zeroed to match."""
    model = copy.deepcopy(resnet18)
    for block in ("layer1.0", "layer2.1", "layer3.0"):
        conv = model.get_submodule(f"{block}.conv1")
        prune.ln_structured(conv, "weight", amount=0.3, n=2, dim=0)
        dead = _dead_rows(conv.weight)
        bn = model.get_submodule(f"{block}.bn1")
        with torch.no_grad():
            bn.weight[dead] = 0
            bn.bias[dead] = 0
    return model


def test_masked_state_dict_loads_into_plain_weights(
    resnet18: nn.Module, digits: torch.Tensor
) -> None:
    model = _ln_structured_resnet(resnet18)
    state = model.state_dict()
    assert "layer1.0.conv1.weight_orig" in state and "layer1.0.conv1.weight_mask" in state

    fresh = torchvision_model("resnet18")
    load_masked_state_dict(fresh, state)
    assert torch.equal(fresh.layer1[0].conv1.weight, model.layer1[0].conv1.weight)
    assert _max_diff(fresh, model, digits) == 0.0
    assert sum(materialize(fresh, digits[:1]).removed.values()) == 134

    del state["layer1.0.conv1.weight_mask"]
    with pytest.raises(CheckpointError, match="weight_mask"):
        load_masked_state_dict(torchvision_model("resnet18"), state)


def test_apply_torch_prune_masks_bakes_the_masks_in(resnet18: nn.Module) -> None:
    model = _ln_structured_resnet(resnet18)
    converted = apply_torch_prune_masks(model)
    assert converted == ["layer1.0.conv1.weight", "layer2.1.conv1.weight", "layer3.0.conv1.weight"]
    conv = model.layer1[0].conv1
    assert not hasattr(conv, "weight_orig") and isinstance(conv.weight, nn.Parameter)
    assert int(_dead_rows(conv.weight).sum()) == 19


def test_masked_copy_leaves_the_masked_model_alone(
    resnet18: nn.Module, digits: torch.Tensor
) -> None:
    model = _ln_structured_resnet(resnet18)
    keep = torch.ones(128, dtype=torch.bool)
    keep[[3, 40]] = False
    work = masked_copy(model, {"layer2.0.conv1": keep})
    assert not work.training
    assert hasattr(model.layer1[0].conv1, "weight_orig")  # the input keeps its masks
    assert not hasattr(work.layer1[0].conv1, "weight_orig")
    assert bool(_dead_rows(work.layer2[0].conv1.weight)[[3, 40]].all())
    assert bool(model.layer2[0].conv1.weight[3].abs().sum() > 0)


def test_apply_masks_refuses_what_it_cannot_mask(resnet18: nn.Module) -> None:
    model = copy.deepcopy(resnet18)
    with pytest.raises(UsageError, match="entries"):
        apply_masks(model, {"layer2.1.conv1": torch.ones(5, dtype=torch.bool)})
    with pytest.raises(UsageError, match="not a layer"):
        apply_masks(model, {"layer9.conv": torch.ones(5, dtype=torch.bool)})
    with pytest.raises(UsageError, match="no output channels"):
        apply_masks(model, {"relu": torch.ones(5, dtype=torch.bool)})
