"""Importance criteria scored directly on engine groups of real torchvision models."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.models.torchvision_compat import import_torchvision
from edgeprune.pruning import engine, importance
from edgeprune.pruning.importance import (
    ImportanceContext,
    MissingDataError,
    get_importance,
    list_importances,
    register_importance,
)
from tests.conftest import digits_rgb32

X = torch.zeros(1, 3, 32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    return digits_rgb32()


@functools.lru_cache(maxsize=1)
def _template() -> nn.Module:
    torch.manual_seed(0)
    return import_torchvision().models.resnet18(num_classes=10).eval()


def _groups(model: nn.Module) -> dict[str, engine.ChannelGroup]:
    graph = engine.build_graph(model, X)
    return {g.root: g for g in engine.channel_groups(graph)}


@pytest.fixture
def resnet18() -> nn.Module:
    return copy.deepcopy(_template())


# --- registry ----------------------------------------------------------------------------------


def test_builtin_criteria_are_registered() -> None:
    assert {"l1", "l2", "bn_scale", "taylor", "activation", "random", "fpgm"} <= set(
        list_importances())


def test_registering_a_name_twice_warns_and_replaces() -> None:
    def first() -> importance.Importance:
        return lambda group, ctx: torch.ones(group.size)

    def second() -> importance.Importance:
        return lambda group, ctx: torch.zeros(group.size)

    try:
        register_importance("test_only_criterion")(first)
        with pytest.warns(RuntimeWarning, match="registered again"):
            register_importance("test_only_criterion")(second)
        assert get_importance("test_only_criterion") is not None
        assert importance._REGISTRY["test_only_criterion"] is second
    finally:
        importance._REGISTRY.pop("test_only_criterion", None)


def test_unknown_criterion_and_bad_option_give_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'bn_scale'"):
        get_importance("bn_scal")
    with pytest.raises(ConfigError, match="bad options for criterion 'l1'"):
        get_importance("l1", p=3)


# --- magnitude and the documented aggregation --------------------------------------------------


def test_group_score_is_the_mean_of_mean_normalised_member_scores(resnet18: nn.Module) -> None:
    group = _groups(resnet18)["layer2.0.conv1"]
    block = resnet18.layer2[0]
    conv = block.conv1.weight.detach().abs().sum(dim=(1, 2, 3))
    with torch.no_grad():
        block.bn1.weight.uniform_(0.5, 1.5)
    gamma = block.bn1.weight.detach().abs()
    next_in = block.conv2.weight.detach().abs().sum(dim=(0, 2, 3))
    ctx = ImportanceContext()
    outs_only = get_importance("l1", include_inputs=False)(group, ctx)
    expected = (conv / conv.mean() + gamma / gamma.mean()) / 2
    assert torch.allclose(outs_only, expected, atol=1e-5)
    with_inputs = get_importance("l1")(group, ctx)
    expected = (conv / conv.mean() + gamma / gamma.mean() + next_in / next_in.mean()) / 3
    assert torch.allclose(with_inputs, expected, atol=1e-5)
    l2 = get_importance("l2", include_inputs=False)(group, ctx)
    conv_l2 = block.conv1.weight.detach().flatten(1).norm(dim=1)
    assert torch.allclose(l2, (conv_l2 / conv_l2.mean() + gamma / gamma.mean()) / 2, atol=1e-5)


def test_residual_group_scores_cover_every_coupled_member(resnet18: nn.Module) -> None:
    group = _groups(resnet18)["layer2.0.downsample.0"]
    scores = get_importance("l2")(group, ImportanceContext())
    assert scores.shape == (128,)
    assert torch.isclose(scores.mean(), torch.tensor(1.0), atol=1e-4)
    assert len(group.members) >= 8  # convs, BNs, next blocks' inputs


def test_bn_scale_uses_gamma_and_falls_back_to_l2_without_batchnorm(resnet18: nn.Module) -> None:
    group = _groups(resnet18)["layer2.0.conv1"]
    with torch.no_grad():
        resnet18.layer2[0].bn1.weight.uniform_(0.1, 2.0)
    ctx = ImportanceContext()
    scores = get_importance("bn_scale")(group, ctx)
    gamma = resnet18.layer2[0].bn1.weight.detach()
    assert torch.allclose(scores, gamma / gamma.mean(), atol=1e-5)
    assert not ctx.notes
    squeezenet = import_torchvision().models.squeezenet1_1(num_classes=10).eval()  # no BN
    sq_group = _groups(squeezenet)["features.3.squeeze"]
    fallback = get_importance("bn_scale")(sq_group, ctx)
    assert torch.allclose(fallback, get_importance("l2")(sq_group, ImportanceContext()))
    assert ctx.notes == ["bn_scale: features.3.squeeze has no BatchNorm; its channels were "
                         "scored by l2"]


def test_fpgm_scores_filters_near_the_median_lowest(resnet18: nn.Module) -> None:
    conv = resnet18.layer2[0].conv1
    with torch.no_grad():
        centre = conv.weight.mean(dim=0)
        conv.weight[[7, 40, 99]] = centre
    scores = get_importance("fpgm")(_groups(resnet18)["layer2.0.conv1"], ImportanceContext())
    assert sorted(torch.argsort(scores)[:3].tolist()) == [7, 40, 99]


# --- data-driven -------------------------------------------------------------------------------


def test_activation_needs_real_calibration_data_and_reflects_it(resnet18: nn.Module) -> None:
    """Stem filters computing red − green are silent on grey digits, loud on noise."""
    planted = [3, 17, 30, 51]
    with torch.no_grad():
        pattern = torch.randn(len(planted), 7, 7) * 3 * resnet18.conv1.weight.abs().mean()
        resnet18.conv1.weight[planted, 0] = pattern
        resnet18.conv1.weight[planted, 1] = -pattern
        resnet18.conv1.weight[planted, 2] = 0
    groups = _groups(resnet18)
    criterion = get_importance("activation")
    with pytest.raises(MissingDataError, match="random noise is never used"):
        criterion.prepare(resnet18, list(groups.values()), ImportanceContext())
    with pytest.raises(MissingDataError, match="prepare"):
        criterion(groups["conv1"], ImportanceContext())
    real = ImportanceContext(calibration=[_digits()[0][:32], (_digits()[0][32:64], None)])
    criterion.prepare(resnet18, list(groups.values()), real)
    scores = criterion(groups["conv1"], real)
    assert sorted(torch.argsort(scores)[:4].tolist()) == planted
    assert float(scores[planted].max()) < 1e-4 * float(scores.mean())
    noise = ImportanceContext(calibration=[torch.randn(32, 3, 32, 32)])
    criterion.prepare(resnet18, list(groups.values()), noise)
    assert not set(torch.argsort(criterion(groups["conv1"], noise))[:16].tolist()) & set(planted)
    l1 = get_importance("l1")(groups["conv1"], ImportanceContext())
    assert not set(torch.argsort(l1)[:16].tolist()) & set(planted)
    assert resnet18.training is False


def test_activation_at_the_batchnorm_site(resnet18: nn.Module) -> None:
    groups = _groups(resnet18)
    with torch.no_grad():
        resnet18.layer2[0].bn1.weight[[5, 6]] = 0.0
        resnet18.layer2[0].bn1.bias[[5, 6]] = 0.0
    criterion = get_importance("activation", site="bn")
    ctx = ImportanceContext(calibration=[_digits()[0][:16]])
    criterion.prepare(resnet18, list(groups.values()), ctx)
    scores = criterion(groups["layer2.0.conv1"], ctx)
    assert sorted(torch.argsort(scores)[:2].tolist()) == [5, 6]
    with pytest.raises(ConfigError, match="site"):
        get_importance("activation", site="relu")


def test_taylor_computes_gradients_once_per_step(resnet18: nn.Module) -> None:
    groups = _groups(resnet18)
    x, y = _digits()
    ctx = ImportanceContext(labeled=[(x[:16], y[:16]), (x[16:32], y[16:32])])
    calls = []
    handle = resnet18.register_forward_hook(lambda *_: calls.append(1))
    criterion = get_importance("taylor")
    with pytest.raises(MissingDataError, match="prepare"):
        criterion(groups["conv1"], ctx)
    try:
        criterion.prepare(resnet18, list(groups.values()), ctx)
        assert len(calls) == 2
        scores = [criterion(g, ctx) for g in groups.values()]
        assert len(calls) == 2  # scoring every group reuses the gradients
    finally:
        handle.remove()
    assert all(torch.isfinite(s).all() and s.shape == (g.size,)
               for s, g in zip(scores, groups.values(), strict=True))
    assert all(p.grad is None for p in resnet18.parameters())  # .grad left untouched
    with pytest.raises(MissingDataError, match="labeled batches"):
        get_importance("taylor").prepare(resnet18, list(groups.values()), ImportanceContext())


def test_random_is_seeded_per_run_and_group(resnet18: nn.Module) -> None:
    groups = _groups(resnet18)
    group = groups["layer2.0.conv1"]
    criterion = get_importance("random")
    a = criterion(group, ImportanceContext(seed=0))
    assert torch.equal(a, criterion(group, ImportanceContext(seed=0)))
    assert not torch.equal(a, criterion(group, ImportanceContext(seed=1)))
    assert not torch.equal(a, criterion(groups["layer2.1.conv1"], ImportanceContext(seed=0)))
    l1 = get_importance("l1")(group, ImportanceContext())
    assert set(torch.argsort(a)[:25].tolist()) != set(torch.argsort(l1)[:25].tolist())


def test_a_flattened_linear_input_counts_every_feature_of_its_channel() -> None:
    """After ``flatten`` each conv channel feeds 16 linear inputs; all 16 belong to its score."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                          nn.Flatten(), nn.Linear(128, 10)).eval()
    graph = engine.build_graph(model, torch.zeros(1, 3, 16, 16))
    group = next(g for g in engine.channel_groups(graph) if g.root == "0")
    linear = next(m for m in group.members if m.name == "4")
    assert len(linear.idxs) == 128 and linear.dim == "in"
    scores = get_importance("l1")(group, ImportanceContext())
    conv = model[0].weight.detach().abs().sum(dim=(1, 2, 3)) + model[0].bias.detach().abs()
    cols = model[4].weight.detach().abs().sum(dim=0).view(8, 16).sum(dim=1)
    assert torch.allclose(scores, (conv / conv.mean() + cols / cols.mean()) / 2, atol=1e-5)
