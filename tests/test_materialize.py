"""Fake → real on real torchvision architectures, checked on real images (sklearn digits)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from edgeprune.errors import ParityError, UsageError
from edgeprune.pruning import dead_channels, engine
from edgeprune.pruning.dead_channels import detect_dead_channels
from edgeprune.pruning.masks import apply_masks
from edgeprune.pruning.materialize import materialize
from tests._helpers import torchvision_model
from tests.conftest import digits_rgb32

pytestmark = pytest.mark.usefixtures("flush_denormals")

TOL = 1e-5


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """32 real handwritten digits, 8×8 upsampled to 32×32, replicated to 3 channels."""
    return digits_rgb32()[0][:32].clone()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return torchvision_model("resnet18")


@pytest.fixture(scope="module")
def mobilenet_v2() -> nn.Module:
    return torchvision_model("mobilenet_v2")


def _zero_bn(bn: nn.BatchNorm2d, channels: torch.Tensor) -> None:
    with torch.no_grad():
        bn.weight[channels] = 0
        bn.bias[channels] = 0


def _dead_rows(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().flatten(1).abs().sum(dim=1) == 0


def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def _ln_structured_resnet(resnet18: nn.Module, *, remove: bool) -> tuple[nn.Module, int]:
    model = copy.deepcopy(resnet18)
    total = 0
    for block in ("layer1.0", "layer2.1", "layer3.0"):
        conv = model.get_submodule(f"{block}.conv1")
        prune.ln_structured(conv, "weight", amount=0.3, n=2, dim=0)
        dead = _dead_rows(conv.weight)
        total += int(dead.sum())
        _zero_bn(model.get_submodule(f"{block}.bn1"), dead)
        if remove:
            prune.remove(conv, "weight")
    return model, total


@pytest.mark.parametrize("remove", [False, True], ids=["masked", "prune-removed"])
def test_ln_structured_channels_go_with_identical_outputs(
    resnet18: nn.Module, digits: torch.Tensor, remove: bool
) -> None:
    model, dead = _ln_structured_resnet(resnet18, remove=remove)
    result = materialize(model, digits[:1], calibration=digits)

    assert result.removed == {"layer1.0.conv1": 19, "layer2.1.conv1": 38, "layer3.0.conv1": 77}
    assert sum(result.removed.values()) == dead
    assert result.model.layer2[1].conv1.out_channels == 128 - 38
    assert result.model.layer2[1].conv2.in_channels == 128 - 38
    assert result.model.layer2[1].bn1.num_features == 128 - 38
    assert result.params_after < result.params_before
    assert result.macs_after < result.macs_before
    assert result.max_abs_diff <= TOL
    assert _max_diff(result.model, model, digits) <= TOL  # independent of the internal check
    json.dumps(result.to_dict())
    if not remove:  # the input model is left as it was
        assert hasattr(model.layer1[0].conv1, "weight_orig")


def test_random_structured_on_mobilenet_v2_goes_through_the_depthwise_conv(
    mobilenet_v2: nn.Module, digits: torch.Tensor
) -> None:
    model = copy.deepcopy(mobilenet_v2)
    torch.manual_seed(3)
    expected = {}
    for block in (3, 6, 10):
        expand = model.features[block].conv[0][0]
        prune.random_structured(expand, "weight", amount=0.25, dim=0)
        dead = _dead_rows(expand.weight)
        expected[block] = int(dead.sum())
        _zero_bn(model.features[block].conv[0][1], dead)
    result = materialize(model, digits[:1], calibration=digits)

    assert sum(result.removed.values()) == sum(expected.values())
    for block, n in expected.items():
        dw = result.model.features[block].conv[1][0]
        width = model.features[block].conv[1][0].out_channels - n
        assert dw.in_channels == dw.out_channels == dw.groups == width
        assert result.model.features[block].conv[2].in_channels == width
    assert _max_diff(result.model, model, digits) <= TOL


def _constant_channels(model: nn.Module, conv_name: str, bn_name: str, shifts: list[float]) -> None:
    """Zero the first len(shifts) filters of a conv; its BN then emits those shifts."""
    conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
    with torch.no_grad():
        for c, shift in enumerate(shifts):
            conv.weight[c] = 0
            bn.weight[c] = 1.0
            bn.running_mean[c] = 0.0
            bn.bias[c] = shift


def test_constant_channel_into_a_1x1_conv_is_folded_exactly(
    mobilenet_v2: nn.Module, digits: torch.Tensor
) -> None:
    model = copy.deepcopy(mobilenet_v2)
    # features.1 ends in a 1×1 projection + BN (no activation) read by features.2's 1×1 expand
    _constant_channels(model, "features.1.conv.1", "features.1.conv.2", [0.7, -1.3, 0.4])
    result = materialize(model, digits[:1], calibration=digits)

    assert result.removed == {"features.1.conv.1": 3}
    expand = result.model.features[2].conv[0][0]
    assert expand.in_channels == 13
    assert expand.bias is None  # the bias-free conv's BatchNorm absorbed the constant
    assert not torch.equal(
        result.model.features[2].conv[0][1].running_mean, model.features[2].conv[0][1].running_mean
    )
    assert _max_diff(result.model, model, digits) <= TOL
    rebuilt = engine.replay(torchvision_model("mobilenet_v2"), digits[:1], result.history)
    rebuilt.load_state_dict(result.model.state_dict())
    assert _max_diff(rebuilt, result.model, digits) == 0.0


def test_an_added_bias_is_recorded_and_replayed(resnet18: nn.Module, digits: torch.Tensor) -> None:
    # a fold into a bias-free conv with no BatchNorm after it needs a new (zero) bias: the
    # engine records it so that replay rebuilds the same parameter set
    model = copy.deepcopy(resnet18)
    graph = engine.build_graph(model, digits[:1])
    engine.add_bias(graph, "layer3.0.downsample.0")
    bias = model.layer3[0].downsample[0].bias
    assert bias is not None and torch.equal(bias, torch.zeros(256))
    steps = engine.history(graph)
    assert steps == [{"version": 1, "op": "add_bias", "layer": "layer3.0.downsample.0"}]
    rebuilt = engine.replay(copy.deepcopy(resnet18), digits[:1], steps)
    rebuilt.load_state_dict(model.state_dict())
    assert _max_diff(rebuilt, model, digits) == 0.0


def test_constant_channel_through_relu6_and_pooling_is_folded_into_the_classifier(
    mobilenet_v2: nn.Module, digits: torch.Tensor
) -> None:
    model = copy.deepcopy(mobilenet_v2)
    # 1×1 conv → BN → ReLU6 → global average pool → dropout → linear; 9.0 is clipped to 6 by
    # ReLU6 and -2.0 becomes 0 (dead), which the fold must see
    _constant_channels(model, "features.18.0", "features.18.1", [0.5, 9.0, -2.0, 3.0])
    before = model.classifier[1].bias.detach().clone()
    result = materialize(model, digits[:1], calibration=digits)

    assert result.removed == {"features.18.0": 4}
    assert result.model.classifier[1].in_features == 1280 - 4
    w = model.classifier[1].weight.detach()
    folded = before + w[:, 0] * 0.5 + w[:, 1] * 6.0 + w[:, 3] * 3.0
    assert torch.allclose(result.model.classifier[1].bias, folded, atol=1e-6)
    assert _max_diff(result.model, model, digits) <= TOL


def _constant_into_3x3(resnet18: nn.Module) -> nn.Module:
    model = copy.deepcopy(resnet18)
    # layer1.0.conv1 → bn1 → ReLU → layer1.0.conv2 (3×3, zero padding 1)
    _constant_channels(model, "layer1.0.conv1", "layer1.0.bn1", [0.8, 0.5, 1.1])
    return model


def test_constant_channel_into_a_padded_3x3_conv_is_kept_by_default(
    resnet18: nn.Module, digits: torch.Tensor
) -> None:
    model = _constant_into_3x3(resnet18)
    for policy in ("fold", "keep"):
        result = materialize(model, digits[:1], calibration=digits, constant_channels=policy)
        assert result.removed == {}
        assert result.model.layer1[0].conv1.out_channels == 64
        assert result.max_abs_diff == 0.0
        assert any("layer1.0.conv1: kept 3 constant" in n for n in result.notes)
        assert any("unchanged" in n for n in result.notes)


def test_remove_and_report_measures_the_deviation(
    resnet18: nn.Module, digits: torch.Tensor
) -> None:
    model = _constant_into_3x3(resnet18)
    result = materialize(
        model, digits[:1], calibration=digits, constant_channels="remove-and-report"
    )
    assert result.removed == {"layer1.0.conv1": 3}
    measured = _max_diff(result.model, model, digits)
    assert measured > TOL
    assert result.max_abs_diff == pytest.approx(measured, rel=1e-4)
    note = next(n for n in result.notes if n.startswith("layer1.0.conv1: removed 3"))
    assert f"{result.max_abs_diff:.3g}" in note


def test_residual_channel_goes_only_when_dead_in_every_coupled_layer(
    resnet18: nn.Module, digits: torch.Tensor
) -> None:
    model = copy.deepcopy(resnet18)
    channel = torch.tensor([5])
    # dead in layer2.0's main branch only: the downsample path and layer2.1 still feed it
    with torch.no_grad():
        model.layer2[0].conv2.weight[5] = 0
    _zero_bn(model.layer2[0].bn2, channel)
    result = materialize(model, digits[:1], calibration=digits)
    assert result.removed == {}
    assert result.model.layer2[0].conv2.out_channels == 128
    assert any("alive in another" in n for n in result.notes)
    found = detect_dead_channels(model, digits[:1], calibration=digits)
    assert any(5 in info.partly_dead for info in found.values())

    # now dead in every producer of the layer2 residual stream
    for conv, bn in (
        ("layer2.0.downsample.0", "layer2.0.downsample.1"),
        ("layer2.1.conv2", "layer2.1.bn2"),
    ):
        with torch.no_grad():
            model.get_submodule(conv).weight[5] = 0
        _zero_bn(model.get_submodule(bn), channel)
    result = materialize(model, digits[:1], calibration=digits)
    assert sum(result.removed.values()) == 1
    for name in ("layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"):
        assert result.model.get_submodule(name).out_channels == 127
    assert result.model.layer3[0].downsample[0].in_channels == 127
    assert _max_diff(result.model, model, digits) <= TOL


def test_nothing_dead_comes_back_unchanged_with_a_note(
    resnet18: nn.Module, digits: torch.Tensor
) -> None:
    result = materialize(resnet18, digits[:1], calibration=digits)
    assert result.removed == {}
    assert result.params_after == result.params_before
    assert result.macs_after == result.macs_before
    assert result.max_abs_diff == 0.0
    assert any("unchanged" in n for n in result.notes)
    assert _max_diff(result.model, resnet18, digits) == 0.0


def test_edgeprune_masks_switch_channels_off(resnet18: nn.Module, digits: torch.Tensor) -> None:
    keep = torch.ones(128, dtype=torch.bool)
    keep[[3, 40, 41, 99]] = False
    masks = {"layer2.1.conv1": keep, "layer2.1.bn1": keep}
    result = materialize(resnet18, digits[:1], masks=masks, calibration=digits)
    assert result.removed == {"layer2.1.conv1": 4}
    masked = copy.deepcopy(resnet18)
    apply_masks(masked, masks)
    assert _max_diff(result.model, masked, digits) <= TOL
    assert resnet18.layer2[1].bn1.weight[3] != 0  # caller's model untouched

    with pytest.raises(UsageError, match="entries"):
        materialize(resnet18, digits[:1], masks={"layer2.1.conv1": keep[:5]})
    with pytest.raises(UsageError, match="not a layer"):
        materialize(resnet18, digits[:1], masks={"layer9.conv": keep})


def test_parity_guard_fires_when_an_unsafe_fold_slips_through(
    resnet18: nn.Module, digits: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fault injection: pretend a zero-padded 3×3 conv absorbs constants exactly
    monkeypatch.setattr(dead_channels, "folds_exactly", lambda module: True)
    with pytest.raises(ParityError, match="deviates"):
        materialize(_constant_into_3x3(resnet18), digits[:1], calibration=digits)


def test_unknown_policy_is_a_usage_error(resnet18: nn.Module, digits: torch.Tensor) -> None:
    with pytest.raises(UsageError, match="constant_channels"):
        materialize(resnet18, digits[:1], constant_channels="drop")


@pytest.mark.slow
def test_densenet_constant_channels_fold_through_concat(digits: torch.Tensor) -> None:
    model = torchvision_model("densenet121")
    # a zero growth filter emits 0; every later layer's BN turns it into relu(shift) for its
    # 1×1 conv, and norm5 → pooling → classifier: all exact folds,
    # at concat offsets; two neighbouring layers, so pruning one shifts the other's offsets
    with torch.no_grad():
        model.features.denseblock1.denselayer1.conv2.weight[[0, 8]] = 0
        model.features.denseblock1.denselayer2.conv2.weight[[3, 17, 30]] = 0
    result = materialize(model, digits[:1], calibration=digits[:8])
    assert result.removed == {
        "features.denseblock1.denselayer1.conv2": 2,
        "features.denseblock1.denselayer2.conv2": 3,
    }
    assert result.model.features.denseblock1.denselayer3.conv1.in_channels == 64 + 2 * 32 - 5
    assert result.model.features.transition1.conv.in_channels == 256 - 5
    assert _max_diff(result.model, model, digits[:8]) <= TOL


def test_constant_through_a_padded_depthwise_conv_varies_and_is_kept(
    mobilenet_v2: nn.Module, digits: torch.Tensor
) -> None:
    model = copy.deepcopy(mobilenet_v2)
    # expand 1×1 → BN (shift 0.6) → ReLU6 → 3×3 depthwise with zero padding: the constant
    # becomes a fixed border pattern, not one value
    _constant_channels(model, "features.4.conv.0.0", "features.4.conv.0.1", [0.6, 0.6])
    depthwise, bn = model.features[4].conv[1][0], model.features[4].conv[1][1]
    with torch.no_grad():  # positive filters and shift so that ReLU6 keeps the border pattern
        depthwise.weight[:2] = 0.2
        bn.running_mean[:2], bn.weight[:2], bn.bias[:2] = 0.0, 1.0, 0.5
    kept = materialize(model, digits[:1], calibration=digits)
    assert kept.removed == {}
    assert any("data-independent" in n for n in kept.notes)

    removed = materialize(
        model, digits[:1], calibration=digits, constant_channels="remove-and-report"
    )
    assert sum(removed.removed.values()) == 2
    assert removed.model.features[4].conv[1][0].groups == 144 - 2
    # the reported deviation is real (float64, so not rounding) and the float32 figure is the
    # one a user measures on the saved model
    assert removed.max_abs_diff > 1e-9
    assert removed.max_abs_diff_float32 == pytest.approx(
        _max_diff(removed.model, model, digits), rel=1e-4)


def test_dead_channels_go_through_squeeze_excitation(digits: torch.Tensor) -> None:
    model = torchvision_model("mobilenet_v3_small")
    block = model.features[4].block  # expand → depthwise → squeeze-excitation → project
    width = block[1][0].out_channels
    keep = torch.ones(width, dtype=torch.bool)
    keep[[0, 5, 9]] = False
    # the depthwise BN emits 0, Hardswish(0) = 0 and the SE scale multiplies 0: dead,
    # whatever the SE branch computes
    result = materialize(
        model, digits[:1], masks={"features.4.block.1.1": keep}, calibration=digits
    )
    assert sum(result.removed.values()) == 3
    se = result.model.features[4].block[2]
    assert se.fc1.in_channels == se.fc2.out_channels == width - 3
    assert result.model.features[4].block[3][0].in_channels == width - 3
    masked = copy.deepcopy(model)
    apply_masks(masked, {"features.4.block.1.1": keep})
    assert _max_diff(result.model, masked, digits) <= TOL


def test_a_constant_through_squeeze_excitation_is_kept(digits: torch.Tensor) -> None:
    model = torchvision_model("mobilenet_v3_small")
    bn = model.features[4].block[1][1]
    with torch.no_grad():  # the depthwise BN emits 0.8: the SE scale makes it vary per image
        bn.weight[[0, 5]] = 0.0
        bn.bias[[0, 5]] = 0.8
    result = materialize(model, digits[:1], calibration=digits)
    assert result.removed == {}
    assert any("data-independent" in n for n in result.notes)
