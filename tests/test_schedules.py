"""Pruning schedules end to end on the shipped MNIST CNN and real builtin:mnist5k data."""

from __future__ import annotations

import copy

import pytest
import torch

from edgeprune.errors import ConfigError
from edgeprune.models.cost import width_table
from edgeprune.pruning import engine
from edgeprune.pruning.prune import PruneConfig
from edgeprune.pruning.schedules import (
    compare_soft_hard,
    list_schedules,
    prune_epochs,
    run_schedule,
)
from edgeprune.pruning.soft import SoftFilterPruning
from edgeprune.training.recipes import get_recipe

QUICK = get_recipe("full", max_batches_per_epoch=4, val_max_batches=2)


@pytest.fixture(scope="module")
def bundle():
    from edgeprune.data import load_data

    return load_data("builtin:mnist5k", input_shape=(1, 28, 28), batch_size=128)


@pytest.fixture(scope="module")
def trained():
    from edgeprune.models.load import load_model

    return load_model("builtin:mnist-cnn")


@pytest.fixture(scope="module")
def example(bundle):
    return bundle.val.dataset.batch([0, 1])[0]


def test_registry():
    assert set(list_schedules()) >= {"oneshot", "iterative", "during-training", "soft", "retrain"}
    with pytest.raises(ConfigError, match="did you mean 'oneshot'"):
        run_schedule(torch.nn.Linear(1, 1), None, "one-shot", PruneConfig(), "full", epochs=1,
                     example_inputs=torch.zeros(1, 1))
    assert prune_epochs(2, 1) == [1]
    assert prune_epochs(6, 3) == [2, 3, 4]


@pytest.mark.parametrize("name", ["oneshot", "iterative", "during-training", "soft", "retrain"])
def test_schedule_end_to_end(name, trained, bundle, example):
    config = PruneConfig(ratio=0.5, criterion="l2", iterative_steps=2)
    result = run_schedule(trained, bundle, name, config, QUICK, epochs=2, example_inputs=example)
    assert result.params_after < result.params_before * 0.5
    assert result.before.top1 > 0.98
    if name == "retrain":  # from scratch: far from the trained net, far above chance
        assert result.pruned is not None and result.pruned.top1 < 0.3
        assert result.after.top1 > result.pruned.top1 + 0.1
    else:
        assert result.after.top1 > 0.9, result.to_dict()["accuracy_after"]
    # the history rebuilds the architecture; the weights then load strictly
    fresh = engine.replay(copy.deepcopy(trained), example, result.history)
    fresh.load_state_dict(result.model.state_dict())
    fresh.eval()
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(example), result.model(example), atol=1e-5)
    assert result.to_dict()["schedule"] == name
    assert sum(p.numel() for p in trained.parameters()) == result.params_before  # input kept


def test_stepwise_schedules_end_at_the_one_shot_widths(trained, bundle, example):
    """Counted from the original widths: relative ratios rounded at each step would compound
    (32 channels at 0.6 in 3 steps: 32 → 26 → 20 → 14, where one-shot keeps 13)."""
    config = PruneConfig(ratio=0.6, iterative_steps=3)
    recipe = get_recipe("full", max_batches_per_epoch=1, val_max_batches=1)
    widths = {}
    for name in ("oneshot", "iterative", "during-training"):
        result = run_schedule(trained, bundle, name, config, recipe, epochs=3,
                              example_inputs=example)
        widths[name] = {k: v["out"] for k, v in width_table(result.model).items()}
    assert widths["oneshot"]["features.0"] == 32 - 19  # floor(0.6 × 32) removed
    assert widths["iterative"] == widths["oneshot"]
    assert widths["during-training"] == widths["oneshot"]


def test_soft_filter_pruning_zeroes_and_materializes_exactly(trained, bundle, example):
    from edgeprune.pruning.materialize import materialize
    from edgeprune.training.finetune import finetune

    model = copy.deepcopy(trained)
    sfp = SoftFilterPruning(model, example, PruneConfig(ratio=0.6))
    expected = {"features.0": 19, "features.3": 38, "classifier.0": 76}  # floor(0.6 × width)
    assert sfp.n_zero == expected
    finetune(model, bundle.train, bundle.val, get_recipe("full", epochs=1, lr=0.05,
             max_batches_per_epoch=6, val_max_batches=1), on_epoch_end=sfp)
    # zeroed filters keep training: after a few more steps some grew back
    finetune(model, bundle.train, bundle.val, get_recipe("full", epochs=1, lr=0.05,
             max_batches_per_epoch=3, val_max_batches=1, restore_best=False))
    assert sum(_zero_rows(model, n) for n in expected) < sum(expected.values())
    sfp.finalize()
    assert {n: _zero_rows(model, n) for n in expected} == expected
    batches = [bundle.val.dataset.batch(list(range(i, i + 64)))[0] for i in (0, 64)]
    result = materialize(model, example, calibration=batches)
    widths = width_table(result.model)
    assert widths["features.0"]["out"] == 32 - 19 and widths["features.3"]["out"] == 64 - 38
    assert widths["classifier.0"]["out"] == 128 - 76
    model.eval()
    result.model.eval()
    with torch.no_grad():
        for x in batches:
            assert (model(x) - result.model(x)).abs().max() <= 1e-5


def test_soft_schedule_cut_keeps_the_trained_model(trained, bundle, example):
    """The final cut removes the zeroed channels without changing what was trained: channels
    left dead by a negative bias go, constant ones are folded into the next layer (a Linear
    here) instead of having their bias zeroed, which would change the outputs."""
    result = run_schedule(trained, bundle, "soft", PruneConfig(ratio=0.8), QUICK, epochs=2,
                          example_inputs=example)
    cut = next(p for p in result.phases if p["phase"] == "materialize")
    trained_eval = next(p for p in result.phases if p["phase"] == "soft")["final"]
    assert cut["removed"] == cut["zeroed"] == {"features.0": 25, "features.3": 51,
                                               "classifier.0": 102}
    assert set(cut["biases_zeroed"]) <= {"features.0"}  # only a zero-padded conv cannot fold
    if not cut["biases_zeroed"]:
        assert result.after.top1 == trained_eval["top1"]
        assert abs(result.after.loss - trained_eval["loss"]) < 1e-5


def _zero_rows(model: torch.nn.Module, name: str) -> int:
    module = model.get_submodule(name)
    rows = module.weight.detach().flatten(1).abs().sum(dim=1)
    return int((rows == 0).sum())


def test_soft_filter_pruning_zeroes_residual_groups_together(digits_images):
    """ResNet-18: coupled residual channels are zeroed in every producer and BN, then removed."""
    from edgeprune.models.torchvision_compat import import_torchvision
    from edgeprune.pruning.materialize import materialize
    from tests.conftest import real_images

    tv = import_torchvision()
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=10).eval()
    x = real_images(digits_images, 8, 3, 32)
    sfp = SoftFilterPruning(model, x[:1], PruneConfig(ratio=0.25))
    residual = next(g for g in sfp.groups if any(m.name == "layer1.0.conv2" for m in g.members)
                    and len([m for m in g.members if m.dim == "out"]) > 2)
    zeroed = sfp.finalize()
    channels = zeroed[residual.root]
    assert len(channels) == 16
    for member in residual.members:
        if member.dim == "out" and hasattr(member.module, "weight"):
            weight = member.module.weight.detach()
            assert weight[list(channels)].abs().sum() == 0, member.name
    result = materialize(model, x[:1], calibration=[x])
    assert width_table(result.model)["layer1.0.conv2"]["out"] == 64 - 16
    assert result.removed[residual.root] == 16
    with torch.no_grad():
        assert (model(x) - result.model(x)).abs().max() <= 1e-5


@pytest.mark.slow
def test_soft_versus_hard_at_the_same_ratio(trained, bundle, example):
    comparison = compare_soft_hard(trained, bundle, PruneConfig(ratio=0.6), QUICK, epochs=2,
                                   example_inputs=example)
    data = comparison.to_dict()
    assert data["soft"]["params_after"] == data["hard"]["params_after"]
    assert 0.5 < data["soft"]["top1_after"] <= 1 and 0.5 < data["hard"]["top1_after"] <= 1


@pytest.mark.slow
def test_schedule_resumes_from_its_checkpoints(trained, bundle, example, tmp_path):
    config = PruneConfig(ratio=0.5)
    recipe = get_recipe("full", max_batches_per_epoch=3, val_max_batches=1)
    straight = run_schedule(trained, bundle, "during-training", config, recipe, epochs=2,
                            example_inputs=example)

    def interrupt(event):
        if event.get("stage") == "finetune" and event.get("event") == "batch" \
                and event["epoch"] == 2 and event["batch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_schedule(trained, bundle, "during-training", config, recipe, epochs=2,
                     example_inputs=example, checkpoint_dir=tmp_path, progress=interrupt)
    resumed = run_schedule(trained, bundle, "during-training", config, recipe, epochs=2,
                           example_inputs=example, checkpoint_dir=tmp_path)
    assert resumed.phases[-1]["resumed_from_epoch"] == 1
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_partial_recipe_layers_from_history_are_the_pruned_block_only(digits_images):
    """The documents' example: layer2.0.conv1 pruned alone. `finetune --recipe partial` on the
    saved directory unfreezes that block's conv1, bn1 and the conv2 that reads it — not the
    layer-1 residual group that layer2.0.conv1 merely consumes."""
    from edgeprune.models.torchvision_compat import import_torchvision
    from edgeprune.pruning.prune import prune
    from edgeprune.pruning.schedules import pruned_layers_from_history
    from tests.conftest import real_images

    tv = import_torchvision()
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=10).eval()
    x = real_images(digits_images, 2, 3, 32)
    result = prune(model, x[:1], PruneConfig(ratio=0.2, layers=("layer2.0.conv1",)))
    layers = pruned_layers_from_history(result.model, x[:1], result.history)
    assert layers == ("layer2.0.bn1", "layer2.0.conv1", "layer2.0.conv2")
