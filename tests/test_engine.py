"""The pruning engine on real torchvision architectures (small inputs keep it fast)."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

import pytest
import torch
from torch import nn

from edgeprune.errors import PruningError
from edgeprune.models.cost import width_table
from edgeprune.pruning import engine
from tests._helpers import torchvision_model

pytestmark = pytest.mark.usefixtures("flush_denormals")

X32 = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return torchvision_model("resnet18")


@pytest.fixture(scope="module")
def mobilenet_v2() -> nn.Module:
    return torchvision_model("mobilenet_v2")


def _axis(module: nn.Module, dim: str) -> int:
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups == module.out_channels > 1
        return 0 if dim == "out" or depthwise else 1
    if isinstance(module, nn.Linear):
        return 0 if dim == "out" else 1
    return 0


def _group(groups: list[engine.ChannelGroup], root: str) -> engine.ChannelGroup:
    return next(g for g in groups if g.root == root)


def _assert_moved_with_channel(model: nn.Module, root: str, channel: int) -> None:
    """Prune one root channel and check every member lost exactly its aligned slice."""
    x = torch.randn(X32)
    graph = engine.build_graph(model, x)
    group = _group(engine.channel_groups(graph), root)
    before = {
        m.name: (m.dim, m.idxs[m.root_idxs.index(channel)], m.module.weight.detach().clone())
        for m in group.members
    }
    buffers = {
        m.name: m.module.running_mean.clone()
        for m in group.members
        if isinstance(m.module, nn.BatchNorm2d)
    }
    engine.prune_group(graph, group, [channel])
    for member in group.members:
        dim, idx, old = before[member.name]
        axis = _axis(member.module, dim)
        keep = [i for i in range(old.shape[axis]) if i != idx]
        expected = old.index_select(axis, torch.tensor(keep))
        assert torch.equal(member.module.weight.detach(), expected), member.name
        if member.name in buffers:
            assert torch.equal(member.module.running_mean, buffers[member.name][keep])


def test_resnet18_groups_cover_blocks_and_residuals(resnet18: nn.Module) -> None:
    graph = engine.build_graph(resnet18, torch.randn(X32))
    groups = engine.channel_groups(graph)
    roots = {g.root for g in groups}
    # 8 inner block convs + 4 residual stages (stem + layer1 share theirs)
    assert len(groups) == 12
    assert {f"layer{i}.{j}.conv1" for i in range(1, 5) for j in range(2)} <= roots
    residual = next(
        g
        for g in groups
        if any(m.name == "layer3.0.downsample.0" for m in g.members if m.dim == "out")
    )
    outs = {m.name for m in residual.members if m.dim == "out"}
    assert {
        "layer3.0.conv2",
        "layer3.0.bn2",
        "layer3.1.conv2",
        "layer3.1.bn2",
        "layer3.0.downsample.1",
    } <= outs
    ins = {m.name for m in residual.members if m.dim == "in"}
    assert {"layer3.1.conv1", "layer4.0.conv1", "layer4.0.downsample.0"} <= ins
    for group in groups:
        assert group.size == resnet18.get_submodule(group.root).out_channels
        for member in group.members:
            assert member.one_to_one
            assert not (member.name == "fc" and member.dim == "out")


def test_member_idxs_follow_the_root_channel_in_a_block(resnet18: nn.Module) -> None:
    _assert_moved_with_channel(copy.deepcopy(resnet18), "layer1.0.conv1", 5)


def test_member_idxs_follow_the_root_channel_across_a_residual_stage(resnet18: nn.Module) -> None:
    model = copy.deepcopy(resnet18)
    graph = engine.build_graph(model, torch.randn(X32))
    root = next(
        g.root
        for g in engine.channel_groups(graph)
        if any(m.name == "layer2.0.downsample.0" for m in g.members)
    )
    _assert_moved_with_channel(model, root, 77)


def test_member_idxs_through_depthwise_conv(mobilenet_v2: nn.Module) -> None:
    model = copy.deepcopy(mobilenet_v2)
    graph = engine.build_graph(model, torch.randn(X32))
    group = next(
        g
        for g in engine.channel_groups(graph)
        if any(m.name == "features.5.conv.1.0" for m in g.members)
    )
    _assert_moved_with_channel(model, group.root, 3)
    depthwise = model.features[5].conv[1][0]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == 191


def test_weights_helper_gives_one_row_per_root_channel(resnet18: nn.Module) -> None:
    graph = engine.build_graph(resnet18, torch.randn(X32))
    group = _group(engine.channel_groups(graph), "layer1.0.conv1")
    rows = dict((m.name, w) for m, w in group.weights())
    conv = resnet18.layer1[0].conv1.weight.detach()
    assert torch.equal(rows["layer1.0.conv1"], conv.reshape(64, -1))
    nxt = resnet18.layer1[0].conv2.weight.detach()
    assert torch.equal(rows["layer1.0.conv2"][7], nxt[:, 7].reshape(-1))


def test_classifier_outputs_are_never_pruned() -> None:
    for arch in ("resnet18", "mobilenet_v2"):
        model = torchvision_model(arch)
        graph = engine.build_graph(model, torch.randn(X32))
        assert graph.protected
        for group in engine.channel_groups(graph):
            fresh = engine.group_of(graph, group.root)
            engine.prune_group(graph, fresh, list(range(0, fresh.size, 2)))
        assert model(torch.randn(X32)).shape == (1, 10)


def test_history_replay_reproduces_widths_and_outputs(resnet18: nn.Module) -> None:
    pristine = copy.deepcopy(resnet18)
    model = copy.deepcopy(resnet18)
    x = torch.randn(X32)
    graph = engine.build_graph(model, x)
    for root, channels in (("layer1.0.conv1", [0, 9, 33]), ("layer3.1.conv1", [100])):
        engine.prune_group(graph, _group(engine.channel_groups(graph), root), channels)
    residual = next(
        g
        for g in engine.channel_groups(graph)
        if any(m.name == "layer4.0.downsample.0" for m in g.members)
    )
    engine.prune_group(graph, residual, list(range(0, 512, 3)))
    steps = json.loads(json.dumps(engine.history(graph)))
    assert len(steps) == 3

    rebuilt = engine.replay(pristine, x, steps)
    assert width_table(rebuilt) == width_table(model)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert width_table(model)["layer4.0.downsample.0"]["out"] == 512 - 171


def test_pruning_every_channel_or_a_stale_group_is_refused(resnet18: nn.Module) -> None:
    model = copy.deepcopy(resnet18)
    graph = engine.build_graph(model, torch.randn(X32))
    group = _group(engine.channel_groups(graph), "layer1.1.conv1")
    with pytest.raises(PruningError, match="remove all"):
        engine.prune_group(graph, group, range(group.size))
    with pytest.raises(PruningError, match="out of range"):
        engine.prune_group(graph, group, [64])
    engine.prune_group(graph, group, [1])
    with pytest.raises(PruningError, match="stale group"):
        engine.prune_group(graph, group, [2])


def test_check_forward_names_the_broken_layer(resnet18: nn.Module) -> None:
    model = copy.deepcopy(resnet18)
    model.layer2[1].conv1 = nn.Conv2d(100, 128, 3, padding=1, bias=False)
    with pytest.raises(PruningError, match=r"layer2\.1\.conv1"):
        engine.check_forward(model, torch.randn(X32), (1, 10))


def test_ignored_layers_keep_their_output_channels(resnet18: nn.Module) -> None:
    graph = engine.build_graph(resnet18, torch.randn(X32), ignored_layers=["layer2.0.conv1"])
    roots = {g.root for g in engine.channel_groups(graph)}
    assert "layer2.0.conv1" not in roots and "layer2.1.conv1" in roots
    with pytest.raises(PruningError, match="not in the model"):
        engine.build_graph(resnet18, torch.randn(X32), ignored_layers=["nope"])


def test_channel_shuffle_is_refused_with_a_clear_error() -> None:
    model = torchvision_model("shufflenet_v2_x0_5")
    with pytest.raises(PruningError, match="channel shuffle"):
        engine.build_graph(model, torch.randn(X32))


def test_convnext_layer_scale_is_a_member_and_follows_its_channel() -> None:
    model = torchvision_model("convnext_tiny")
    graph = engine.build_graph(model, torch.randn(X32))
    group = next(g for g in engine.channel_groups(graph) if g.root == "features.2.1")
    scales = [m for m in group.members if m.param == "layer_scale"]
    assert [m.name for m in scales][-1].endswith("layer_scale") and len(scales) == 3
    member = scales[0]
    before = member.module.layer_scale.detach().clone()
    rows = dict((m.name, w) for m, w in group.weights())
    assert torch.equal(rows[member.name][11], before[member.idxs[11]].reshape(-1))
    engine.prune_group(graph, group, [11])
    after = member.module.layer_scale.detach()
    keep = [i for i in range(before.shape[0]) if i != member.idxs[11]]
    assert torch.equal(after, before[keep])


def test_grouped_convolutions_are_skipped_with_a_reason() -> None:
    model = torchvision_model("regnet_x_400mf")
    graph = engine.build_graph(model, torch.randn(X32))
    groups = engine.channel_groups(graph)
    skipped = engine.skipped_groups(graph)
    assert skipped and all("grouped convolution" in r for r in skipped.values())
    assert groups and not set(skipped) & {g.root for g in groups}
    with pytest.raises(PruningError, match="grouped convolution"):
        engine.group_of(graph, next(iter(skipped)))


def test_the_data_flow_after_a_layer(resnet18: nn.Module) -> None:
    graph = engine.build_graph(resnet18, torch.randn(X32))
    conv = resnet18.layer1[0].conv1
    path = list(engine.path_after(graph, conv))
    assert path[0].name == "layer1.0.bn1" and path[0].module is resnet18.layer1[0].bn1
    assert path[0].inputs == 1 and path[0].has_parameters
    assert engine.batchnorm_after(graph, conv) is resnet18.layer1[0].bn1
    # layer1.0.conv2's BatchNorm output meets the residual at an add, not a multiply
    assert not engine.is_gate(graph, resnet18.layer1[0].conv2)
    assert engine.batchnorm_after(graph, resnet18.fc) is None


def test_squeeze_excitation_scale_is_a_gate() -> None:
    model = torchvision_model("mobilenet_v3_small")
    graph = engine.build_graph(model, torch.randn(X32))
    se = model.features[1].block[1]
    assert engine.is_gate(graph, se.fc2)
    assert not engine.is_gate(graph, se.fc1)
    assert engine.is_depthwise(model.features[1].block[0][0])
    assert not engine.is_depthwise(se.fc1)


def _prune_in_rounds(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """List the groups, cut every fourth channel of the first four, twice over."""
    graph = engine.build_graph(model, x)
    for _ in range(2):
        for group in engine.channel_groups(graph)[:4]:
            engine.prune_group(graph, group, list(range(0, group.size, 4)))
    with torch.no_grad():
        out = model(x)
    return {"widths": width_table(model), "out": out, "history": engine.history(graph)}


def test_two_threads_prune_two_models_at_once(
    resnet18: nn.Module, mobilenet_v2: nn.Module
) -> None:
    """Torch-Pruning keeps process-wide state (shared pruning functions, the index mapping the
    engine skips while listing): two threads pruning at once must each get what one alone gets."""
    models = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2}
    x = torch.randn(X32)
    alone = {name: _prune_in_rounds(copy.deepcopy(m), x) for name, m in models.items()}
    barrier = threading.Barrier(len(models))
    together: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        model = copy.deepcopy(models[name])
        barrier.wait()
        try:
            together[name] = _prune_in_rounds(model, x)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for name in models:
        got, want = together[name], alone[name]
        assert got["history"] == want["history"], name
        assert got["widths"] == want["widths"], name
        assert got["out"].shape == (1, 10)
        assert torch.allclose(got["out"], want["out"], atol=1e-5), name
    assert together["resnet18"]["widths"]["conv1"] == {"in": 3, "out": 36, "groups": 1}  # 64-16-12
    assert together["mobilenet_v2"]["widths"] != width_table(mobilenet_v2)


class _TwoBranchConcat(nn.Module):
    """Two convs concatenated: the second branch's channels enter ``head`` at an offset that
    moves when the first branch is pruned."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(16, 4, 1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        return self.fc(self.head(y).mean(dim=(2, 3)))


def _prune_both_branches(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    graph = engine.build_graph(model, x)
    engine.prune_group(graph, engine.group_of(graph, "a"), [0, 1])
    engine.prune_group(graph, engine.group_of(graph, "b"), [0])
    with torch.no_grad():
        return model(x)


def test_listing_one_graph_leaves_the_index_mapping_of_other_threads_alone() -> None:
    """While one thread lists the groups of its graph (index offsets frozen for speed), another
    thread pruning through a concat still gets fresh offsets."""
    x = torch.randn(X32)
    want = _prune_both_branches(_TwoBranchConcat(), x)
    listed = engine.build_graph(_TwoBranchConcat(), x)
    got: list[torch.Tensor] = []
    with engine._index_mapping_computed_once(listed._dg):
        thread = threading.Thread(target=lambda: got.append(_prune_both_branches(
            _TwoBranchConcat(), x)))
        thread.start()
        thread.join(timeout=60)
    assert len(got) == 1 and torch.equal(got[0], want)
    # and after the listing the graph itself is back to fresh offsets in this thread too
    assert torch.equal(_prune_both_branches(_TwoBranchConcat(), x), want)
