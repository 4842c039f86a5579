"""Structural pruning on real torchvision architectures with real digit images.

Each criterion is shown to *decide*: channels planted to be the weakest by that criterion's own
rule are exactly the ones removed. The documents' ResNet-18 figure (layer2.0.conv1 of a 10-class
model: 11,181,642 → 11,138,392 parameters) is reproduced.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.errors import ConfigError, PruningError
from edgeprune.models.torchvision_compat import import_torchvision
from edgeprune.pruning import engine
from edgeprune.pruning.importance import MissingDataError, get_importance, list_importances
from edgeprune.pruning.prune import PruneConfig, load_layer_ratios, prune, round_kept
from tests.conftest import digits_rgb32

X = torch.zeros(2, 3, 32, 32)  # example inputs: only shapes matter for tracing
RESNET18_PARAMS = 11_181_642


pytestmark = pytest.mark.usefixtures("one_thread")


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    return digits_rgb32()


def calibration(n_batches: int = 2, batch: int = 32) -> list[torch.Tensor]:
    x, _ = _digits()
    return [x[i * batch:(i + 1) * batch] for i in range(n_batches)]


def labeled(n_batches: int = 2, batch: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = _digits()
    return [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
            for i in range(n_batches)]


@functools.lru_cache(maxsize=1)
def _resnet18_template() -> nn.Module:
    torch.manual_seed(0)
    return import_torchvision().models.resnet18(num_classes=10).eval()


@pytest.fixture
def resnet18() -> nn.Module:
    return copy.deepcopy(_resnet18_template())


def _layer2_conv1_result(model: nn.Module, criterion: str, **kwargs: object):
    config = PruneConfig(ratio=0.2, criterion=criterion, layers=("layer2.0.conv1",))
    return prune(model, X, config, **kwargs)


# --- the documents' setting --------------------------------------------------------------------


@pytest.mark.parametrize(("ratio", "removed"), [(0.2, 25), (0.5, 64)])
def test_documents_layer2_0_conv1_parameter_count(resnet18: nn.Module, ratio: float,
                                                  removed: int) -> None:
    result = prune(resnet18, X, PruneConfig(ratio=ratio, layers=("layer2.0.conv1",)))
    # per channel: a 64×3×3 filter, BN gamma+beta, and conv2's 128×3×3 input slice
    per_channel = 64 * 9 + 2 + 128 * 9
    assert per_channel == 1730
    assert result.params_before == RESNET18_PARAMS
    assert result.params_after == RESNET18_PARAMS - removed * per_channel
    if ratio == 0.2:
        assert result.params_after == 11_138_392  # the documents' figure
    changed = {k for k, v in result.widths_after.items() if result.widths_before[k] != v}
    assert changed == {"layer2.0.conv1", "layer2.0.bn1", "layer2.0.conv2"}
    assert result.widths_after["layer2.0.conv1"]["out"] == 128 - removed
    assert result.widths_after["layer2.0.bn1"]["features"] == 128 - removed
    assert result.widths_after["layer2.0.conv2"] == {"in": 128 - removed, "out": 128, "groups": 1}
    assert len(result.removed_channels["layer2.0.conv1"]) == removed
    assert result.model(calibration(1)[0]).shape == (32, 10)
    assert result.macs_after < result.macs_before
    # the input model is untouched (deep copy by default)
    assert resnet18.layer2[0].conv1.out_channels == 128


def test_result_serialises_and_replays_to_the_same_model(resnet18: nn.Module) -> None:
    result = prune(resnet18, X, PruneConfig(ratio=0.3))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["params_after"] == result.params_after and "model" not in data
    assert data["config"]["ratio"] == 0.3
    fresh = copy.deepcopy(_resnet18_template())
    engine.replay(fresh, X, result.history)
    fresh.load_state_dict(result.model.state_dict())
    x = calibration(1)[0]
    assert torch.allclose(fresh(x), result.model.eval()(x), atol=1e-5)


# --- every criterion ---------------------------------------------------------------------------


@pytest.mark.parametrize("criterion", list_importances())
def test_every_criterion_prunes_the_whole_network(resnet18: nn.Module, criterion: str) -> None:
    result = prune(resnet18, X, PruneConfig(ratio=0.3, criterion=criterion),
                   calibration=calibration(1), labeled=labeled(1))
    x = calibration(1)[0]
    assert result.model(x).shape == (32, 10)
    # each conv loses ~30% of inputs and of outputs: ~0.7² of the weights stay
    assert 0.45 < result.params_after / result.params_before < 0.56
    for group in result.groups:
        assert group.channels_after == group.channels_before - int(0.3 * group.channels_before)


def test_l1_removes_exactly_the_filters_with_the_lowest_l1_norms(resnet18: nn.Module) -> None:
    norms = resnet18.layer2[0].conv1.weight.detach().abs().sum(dim=(1, 2, 3))
    expected = sorted(torch.argsort(norms)[:25].tolist())
    result = prune(resnet18, X, PruneConfig(ratio=0.2, layers=("layer2.0.conv1",)),
                   importance=get_importance("l1", include_inputs=False))
    assert list(result.removed_channels["layer2.0.conv1"]) == expected


def test_l1_and_l2_remove_planted_small_filters(resnet18: nn.Module) -> None:
    planted = list(range(3, 128, 5))[:25]
    with torch.no_grad():
        resnet18.layer2[0].conv1.weight[planted] *= 0.01
    for criterion in ("l1", "l2"):
        result = _layer2_conv1_result(resnet18, criterion)
        assert list(result.removed_channels["layer2.0.conv1"]) == planted


def test_bn_scale_removes_channels_with_near_zero_gamma(resnet18: nn.Module) -> None:
    planted = list(range(0, 128, 5))[:25]
    with torch.no_grad():
        resnet18.layer2[0].bn1.weight.uniform_(0.5, 1.5)
        resnet18.layer2[0].bn1.weight[planted] = 1e-4
        resnet18.layer2[0].conv1.weight[planted] *= 10  # magnitude would keep them
    result = _layer2_conv1_result(resnet18, "bn_scale")
    assert list(result.removed_channels["layer2.0.conv1"]) == planted


def test_activation_removes_channels_inactive_on_real_images(resnet18: nn.Module) -> None:
    """Planted stem filters compute red minus green: large weights, zero output on grey images.

    The digits are grey (three equal channels), so on real data these channels are silent and
    ``activation`` removes exactly them (test_importance shows that magnitude, or noise
    inputs, would keep them).
    """
    planted = list(range(2, 64, 4))  # 16 of 64
    with torch.no_grad():
        conv = resnet18.conv1.weight
        pattern = torch.randn(len(planted), 7, 7) * 3 * conv.abs().mean()
        conv[planted, 0] = pattern
        conv[planted, 1] = -pattern
        conv[planted, 2] = 0
    config = PruneConfig(ratio=0.25, criterion="activation", layers=("conv1",))
    result = prune(resnet18, X, config, calibration=calibration(2))
    assert list(result.removed_channels["conv1"]) == planted
    assert result.model.conv1.out_channels == 48
    assert result.model.layer1[1].conv2.out_channels == 48  # the residual partners follow


def test_activation_without_calibration_data_refuses(resnet18: nn.Module) -> None:
    with pytest.raises(MissingDataError, match="calibration batches of real inputs"):
        _layer2_conv1_result(resnet18, "activation")


def test_taylor_removes_channels_that_do_not_affect_the_loss(resnet18: nn.Module) -> None:
    """Planted channels have large filters but BN gamma = beta = 0: no gradient reaches them.

    20 are planted and 25 go: a random-init network also has a few channels that ReLU silences
    on these inputs, and those have a zero Taylor score too.
    """
    planted = list(range(1, 128, 6))[:20]
    with torch.no_grad():
        resnet18.layer2[0].conv1.weight[planted] *= 10
        resnet18.layer2[0].bn1.weight[planted] = 0.0
        resnet18.layer2[0].bn1.bias[planted] = 0.0
    result = _layer2_conv1_result(resnet18, "taylor", labeled=labeled(2))
    assert set(planted) <= set(result.removed_channels["layer2.0.conv1"])
    assert not set(_layer2_conv1_result(resnet18, "l2").removed_channels["layer2.0.conv1"]) \
        & set(planted)
    with pytest.raises(MissingDataError, match="labeled batches"):
        _layer2_conv1_result(resnet18, "taylor")



# --- scopes, ratios, layers --------------------------------------------------------------------


def test_global_ranks_across_groups_without_wiping_out_a_layer(resnet18: nn.Module) -> None:
    with torch.no_grad():
        resnet18.layer3[0].conv1.weight *= 1e-3  # raw magnitudes would send the whole layer
    result = prune(resnet18, X, PruneConfig(ratio=0.4, scope="global", criterion="l1"))
    total = sum(g.channels_before for g in result.groups)
    removed = sum(g.channels_before - g.channels_after for g in result.groups)
    assert removed == int(0.4 * total)
    after = {g.root: g.channels_after for g in result.groups}
    assert after["layer3.0.conv1"] > 0.3 * 256
    assert len({g.channels_after / g.channels_before for g in result.groups}) > 3
    assert result.model(calibration(1)[0]).shape == (32, 10)


def test_global_keeps_min_channels_per_group(resnet18: nn.Module) -> None:
    config = PruneConfig(ratio=0.95, scope="global", min_channels=8, criterion="random")
    result = prune(resnet18, X, config)
    assert min(g.channels_after for g in result.groups) >= 8
    assert result.model(calibration(1)[0]).shape == (32, 10)


def test_layer_ratios_override_and_only_listed(resnet18: nn.Module) -> None:
    ratios = {"layer2.0.conv1": 0.5, "layer3.1.bn1": 0.25}  # a BN name selects its group
    only = prune(resnet18, X, PruneConfig(layer_ratios=ratios, only_listed=True))
    after = {g.root: g.channels_after for g in only.groups}
    assert after["layer2.0.conv1"] == 64 and after["layer3.1.conv1"] == 192
    assert set(only.removed_channels) == {"layer2.0.conv1", "layer3.1.conv1"}
    mixed = prune(resnet18, X, PruneConfig(ratio=0.1, layer_ratios=ratios))
    after = {g.root: g.channels_after for g in mixed.groups}
    assert after["layer2.0.conv1"] == 64 and after["layer3.1.conv1"] == 192
    assert after["layer4.1.conv1"] == 512 - 51


def test_a_residual_partner_name_selects_the_shared_group(resnet18: nn.Module) -> None:
    result = prune(resnet18, X, PruneConfig(ratio=0.25, layers=("layer2.1.conv2",)))
    assert set(result.removed_channels) == {"layer2.0.downsample.0"}
    for name in ("layer2.0.conv2", "layer2.1.conv2", "layer2.0.downsample.0"):
        assert result.widths_after[name]["out"] == 96
    assert result.widths_after["layer3.0.conv1"]["in"] == 96


def test_ignored_layers_keep_their_output_channels(resnet18: nn.Module) -> None:
    before = resnet18.layer2[0].conv1.weight.detach().clone()
    config = PruneConfig(ratio=0.5, ignored_layers=("layer2.0.conv1", "conv1"))
    result = prune(resnet18, X, config)
    model = result.model
    assert torch.equal(model.layer2[0].conv1.weight, before)
    assert model.layer2[0].bn1.num_features == 128
    assert model.conv1.out_channels == 64 and model.layer1[0].conv2.out_channels == 64
    assert model.layer3[0].conv1.out_channels == 128  # the others are pruned
    assert "layer2.0.conv1" not in result.removed_channels


def test_round_to_8_gives_widths_divisible_by_8(resnet18: nn.Module) -> None:
    result = prune(resnet18, X, PruneConfig(ratio=0.33, round_to=8))
    for group in result.groups:
        assert group.channels_after % 8 == 0
        assert group.channels_after >= group.channels_before - int(0.33 * group.channels_before)
    glob = prune(resnet18, X, PruneConfig(ratio=0.4, round_to=16, scope="global"))
    assert all(g.channels_after % 16 == 0 for g in glob.groups)


def test_round_kept_rules() -> None:
    assert round_kept(103, 128, 1) == 103
    assert round_kept(103, 128, 8) == 104  # up: keep a little more than asked
    assert round_kept(3, 128, 8) == 8  # never below round_to
    assert round_kept(99, 100, 8) == 96  # never above the original: round down instead
    assert round_kept(5, 6, 8) == 6  # narrower than round_to: left alone
    assert round_kept(64, 64, 8) == 64


def test_iterative_steps_reach_the_same_widths_and_rescore(resnet18: nn.Module) -> None:
    events: list[dict] = []
    result = prune(resnet18, X, PruneConfig(ratio=0.5, iterative_steps=3),
                   progress=events.append)
    once = prune(resnet18, X, PruneConfig(ratio=0.5))
    assert [g.channels_after for g in result.groups] == [g.channels_after for g in once.groups]
    assert [e["step"] for e in events] == [1, 2, 3]
    assert len(result.history) == 3 * len(once.history)
    for group in result.groups:
        assert len(set(group.removed)) == len(group.removed)
        assert all(0 <= c < group.channels_before for c in group.removed)
    assert result.model(calibration(1)[0]).shape == (32, 10)


def test_mobilenet_v2_depthwise_pruned_consistently() -> None:
    torch.manual_seed(0)
    model = import_torchvision().models.mobilenet_v2(num_classes=10).eval()
    result = prune(model, X, PruneConfig(ratio=0.3, round_to=8))
    pruned = result.model
    depthwise = [m for m in pruned.modules()
                 if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise
    for conv in depthwise:
        assert conv.groups == conv.in_channels == conv.out_channels
    assert any(c.out_channels < 96 for c in depthwise)
    assert pruned(calibration(1)[0]).shape == (32, 10)
    assert 0.3 < result.params_after / result.params_before < 0.75


# --- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "error", "fragment"),
    [
        (PruneConfig(ratio=1.2), ConfigError, "key 'ratio': ratio 1.2 is outside [0, 1)"),
        (PruneConfig(ratio=-0.1), ConfigError, "outside [0, 1)"),
        (PruneConfig(criterion="taylr"), ConfigError, "did you mean 'taylor'?"),
        (PruneConfig(layers=("layer2.0.cnv1",)), ConfigError, "did you mean 'layer2.0.conv1'?"),
        (PruneConfig(layers=("fc",)), PruningError, "'fc' cannot be pruned"),
        (PruneConfig(scope="globl"), ConfigError, "did you mean 'global'?"),
        (PruneConfig(round_to=0), ConfigError, "round_to"),
        (PruneConfig(scope="global", layer_ratios={"conv1": 0.2}), ConfigError, "uniform"),
        (PruneConfig(layers=("layer2.0.conv1",), layer_ratios={"layer3.0.conv1": 0.2}),
         ConfigError, "not among `layers`"),
        (PruneConfig(layer_ratios={"layer1.0.conv2": 0.2, "conv1": 0.3}), ConfigError,
         "both cut the same channel group"),
    ],
)
def test_bad_configs_give_one_line_errors(resnet18: nn.Module, config: PruneConfig,
                                          error: type, fragment: str) -> None:
    with pytest.raises(error) as info:
        prune(resnet18, X, config)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_config_round_trips_through_toml_data(tmp_path: Path) -> None:
    config = PruneConfig.from_dict({"ratio": 0.3, "criterion": "l1", "layers": ["conv1"],
                                    "layer_ratios": {"conv1": 0.1}, "round_to": 8})
    assert config.layers == ("conv1",) and config.layer_ratios == {"conv1": 0.1}
    assert PruneConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"prune.toml: key 'ratio'.*outside"):
        PruneConfig.from_dict({"ratio": 1.5}, source="prune.toml")
    with pytest.raises(ConfigError, match="did you mean 'criterion'"):
        PruneConfig.from_dict({"critrion": "l1"}, source="prune.toml")


def test_load_layer_ratios_from_toml_and_json(tmp_path: Path, resnet18: nn.Module) -> None:
    toml = tmp_path / "ratios.toml"
    toml.write_text('[ratios]\n"layer2.0.conv1" = 0.5\n"layer3.0.conv1" = 0.25\n')
    assert load_layer_ratios(toml, resnet18) == {"layer2.0.conv1": 0.5, "layer3.0.conv1": 0.25}
    unquoted = tmp_path / "unquoted.toml"  # dotted keys parse as nested tables
    unquoted.write_text("[ratios]\nlayer2.0.conv1 = 0.5\nlayer2.1.conv1 = 0.1\n")
    assert load_layer_ratios(unquoted, resnet18) == {"layer2.0.conv1": 0.5, "layer2.1.conv1": 0.1}
    js = tmp_path / "ratios.json"
    js.write_text(json.dumps({"ratios": {"layer4.0.conv1": 0.3}}))
    assert load_layer_ratios(js, resnet18) == {"layer4.0.conv1": 0.3}
    bad = tmp_path / "bad.toml"
    bad.write_text('[ratios]\n"layer2.0.cnv1" = 0.5\n')
    with pytest.raises(ConfigError) as info:
        load_layer_ratios(bad, resnet18)
    message = str(info.value)
    assert str(bad) in message and "ratios.layer2.0.cnv1" in message
    assert "did you mean 'layer2.0.conv1'?" in message
    over = tmp_path / "over.json"
    over.write_text('{"layer2.0.conv1": 1.0}')
    with pytest.raises(ConfigError, match=r"over.json: key 'layer2.0.conv1'.*outside \[0, 1\)"):
        load_layer_ratios(over)


def test_channel_scores_rank_channels_as_prune_removes_them(resnet18: nn.Module) -> None:
    """The scores fit's knapsack prices channels by are the ones prune ranks them by: at a
    uniform ratio, every group loses exactly its lowest-scoring channels."""
    from edgeprune.pruning.prune import channel_scores

    example = torch.randn(1, 3, 32, 32)
    scores = channel_scores(resnet18, example, "l2")
    result = prune(resnet18, example, PruneConfig(criterion="l2", ratio=0.25))
    removed = result.removed_channels
    assert removed and set(removed) <= set(scores)
    for root, gone in removed.items():
        ranked = sorted(range(len(scores[root])), key=lambda i: (scores[root][i], i))
        assert set(gone) == set(ranked[:len(gone)]), root
