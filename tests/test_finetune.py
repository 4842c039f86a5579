"""Fine-tuning on real data: the shipped MNIST CNN, pruned, recovers on builtin:mnist5k."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from edgeprune.errors import CheckpointError, ConfigError, UsageError
from edgeprune.training.finetune import finetune
from edgeprune.training.recipes import Recipe, get_recipe, list_recipes, register_recipe

FAST = {"max_batches_per_epoch": 4, "val_max_batches": 2, "epochs": 1}


@pytest.fixture(scope="module")
def bundle():
    from edgeprune.data import load_data

    return load_data("builtin:mnist5k", input_shape=(1, 28, 28), batch_size=64)


@pytest.fixture(scope="module")
def trained():
    from edgeprune.models.load import load_model

    return load_model("builtin:mnist-cnn")


@pytest.fixture(scope="module")
def pruned(trained, bundle):
    from edgeprune.pruning.prune import PruneConfig, prune

    example = bundle.val.dataset.batch([0])[0]
    return prune(trained, example, PruneConfig(ratio=0.6, criterion="l2"))


def test_registry_has_the_three_recipes_and_overrides_are_checked():
    assert {"full", "partial", "distill"} <= set(list_recipes())
    partial = get_recipe("partial")
    assert partial.trainable == "pruned" and partial.lr == pytest.approx(1e-4)
    assert partial.epochs > get_recipe("full").epochs
    assert get_recipe("full", lr=0.5).lr == 0.5
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        get_recipe("full", lrr=0.1)
    with pytest.raises(ConfigError, match="unknown recipe"):
        get_recipe("ful")
    with pytest.raises(ConfigError, match="epochs"):
        get_recipe("full", epochs=0)


def test_recipe_round_trips_through_a_toml_table():
    recipe = get_recipe("distill", temperature=2.0)
    again = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe
    with pytest.raises(ConfigError, match="key 'lr_schedule'"):
        Recipe.from_dict({"lr_schedule": "linear"}, source="r.toml")
    with pytest.warns(RuntimeWarning):
        register_recipe(get_recipe("full"))


def test_lr_schedules():
    cosine = get_recipe("full", epochs=4, lr=1.0)
    assert [round(cosine.lr_at(e), 3) for e in (1, 3)] == [1.0, 0.5]
    step = get_recipe("full", lr_schedule="step", step_size=2, gamma=0.1, lr=1.0)
    assert [step.lr_at(e) for e in (1, 2, 3)] == pytest.approx([1.0, 1.0, 0.1])
    assert get_recipe("full", lr_schedule="constant").lr_at(5) == get_recipe("full").lr


@pytest.mark.parametrize("name", ["full", "partial"])
def test_finetune_after_pruning_raises_accuracy(name, trained, pruned, bundle):
    from edgeprune.pruning.schedules import pruned_layers
    from edgeprune.training.evaluate import evaluate

    base = evaluate(trained, bundle.val).top1
    model = copy.deepcopy(pruned.model)
    dropped = evaluate(model, bundle.val)
    drop = dropped.top1
    assert drop < base - 0.01  # pruning 60% without fine-tuning costs accuracy
    recipe = get_recipe(name, epochs=1, max_batches_per_epoch=25, val_max_batches=2)
    result = finetune(model, bundle.train, bundle.val, recipe,
                      pruned_layers=pruned_layers(pruned))
    # full (lr 0.01) recovers most of the loss at once; partial (lr 1e-4) moves slowly but surely
    assert result.final.top1 > drop + (0.01 if name == "full" else 0.0), (drop, result.final)
    assert result.final.loss < dropped.loss * (0.7 if name == "full" else 0.95)
    assert result.epochs_run == 1 and result.history[0].lr == pytest.approx(recipe.lr)


def test_partial_recipe_freezes_everything_but_the_named_layers(pruned, bundle):
    model = copy.deepcopy(pruned.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = get_recipe("partial", lr=1e-3, **FAST)
    result = finetune(model, bundle.train, bundle.val, recipe, pruned_layers=["features.3"])
    after = model.state_dict()
    assert torch.equal(before["features.0.weight"], after["features.0.weight"])
    assert not torch.equal(before["features.3.weight"], after["features.3.weight"])
    assert not torch.equal(before["classifier.2.weight"], after["classifier.2.weight"])
    assert torch.equal(before["classifier.0.weight"], after["classifier.0.weight"])
    assert all(p.requires_grad for p in model.parameters())  # the caller's flags come back
    assert result.trainable_params < sum(p.numel() for p in model.parameters())
    with pytest.raises(UsageError, match="pruned layers"):
        finetune(model, bundle.train, bundle.val, recipe)


def test_distillation_runs_and_needs_a_teacher(trained, pruned, bundle):
    model = copy.deepcopy(pruned.model)
    recipe = get_recipe("distill", **FAST)
    with pytest.raises(UsageError, match="teacher"):
        finetune(model, bundle.train, bundle.val, recipe)
    result = finetune(model, bundle.train, bundle.val, recipe, teacher=trained)
    assert result.final.top1 > 0.9 and result.history[0].train_loss > 0


def test_early_stop_on_a_plateau(pruned, bundle):
    model = copy.deepcopy(pruned.model)
    recipe = get_recipe("full", lr=0.0, lr_schedule="constant", epochs=5, patience=1,
                        max_batches_per_epoch=2, val_max_batches=2)
    result = finetune(model, bundle.train, bundle.val, recipe)
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 1


def test_resume_after_interruption_gives_the_same_weights(pruned, bundle, tmp_path):
    recipe = get_recipe("full", epochs=3, max_batches_per_epoch=4, val_max_batches=2)
    straight = copy.deepcopy(pruned.model)
    finetune(straight, bundle.train, bundle.val, recipe)

    def interrupt(event):
        if event.get("event") == "batch" and event["epoch"] == 2 and event["batch"] == 2:
            raise KeyboardInterrupt

    interrupted = copy.deepcopy(pruned.model)
    with pytest.raises(KeyboardInterrupt):
        finetune(interrupted, bundle.train, bundle.val, recipe, checkpoint_dir=tmp_path,
                 progress=interrupt)
    assert json.loads((tmp_path / "latest.json").read_text())["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "epoch-0001").iterdir()) == [
        "best.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json",
        "weights.safetensors"]
    resumed = copy.deepcopy(pruned.model)  # a fresh process would rebuild the pruned model
    result = finetune(resumed, bundle.train, bundle.val, recipe, checkpoint_dir=tmp_path)
    assert result.resumed_from_epoch == 1 and result.epochs_run == 3
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    with pytest.raises(CheckpointError, match="another recipe"):
        finetune(copy.deepcopy(pruned.model), bundle.train, bundle.val,
                 get_recipe("full", epochs=4), checkpoint_dir=tmp_path)


def test_cli_finetune_keeps_spec_and_history(tmp_path, pruned):
    from edgeprune.cli.main import main
    from edgeprune.models import pruned_dir

    src = pruned_dir.save(pruned.model, tmp_path / "pruned", spec="builtin:mnist-cnn",
                      input_shape=(1, 1, 28, 28), history=list(pruned.history))
    out = tmp_path / "ft"
    args = ["finetune", "--model", str(src), "--data", "builtin:mnist5k", "--recipe",
            "partial", "--epochs", "1", "--lr", "1e-3", "--max-batches", "3", "--val-batches",
            "2", "--out", str(out), "--format", "json"]
    assert main(args) == 0
    manifest = pruned_dir.read_manifest(out)
    assert manifest.spec == "builtin:mnist-cnn" and manifest.history == list(pruned.history)
    record = manifest.extra["finetune"]
    assert record["recipe"]["lr"] == pytest.approx(1e-3) and record["epochs_run"] == 1
    assert "classifier.0" in record["unfrozen_layers"]
    assert not (tmp_path / "ft.ckpt").exists()
    model = pruned_dir.load(out)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert main(args) == 1  # the output exists: --force needed


def test_a_teacher_that_does_not_fit_is_refused_before_training(pruned, bundle, tmp_path):
    from edgeprune.models.load import load_model

    model = copy.deepcopy(pruned.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = get_recipe("distill", **FAST)
    usps = load_model("builtin:usps-cnn")  # a real trained digit CNN, but for 16×16 images
    with pytest.raises(UsageError) as info:
        finetune(model, bundle.train, bundle.val, recipe, teacher=usps)
    message = str(info.value)
    assert "teacher 'builtin:usps-cnn' does not accept the student's images of shape " \
           "(1, 28, 28)" in message
    assert "--teacher" in message and "\n" not in message
    src = tmp_path / "five.py"
    src.write_text("import torch.nn as nn\n"
                   "def make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 5))\n")
    five = load_model(f"{src}:make")
    with pytest.raises(UsageError, match=r"teacher '.*five.py:make' returns shape \(5,\) per "
                       r"batch of 64 images, the student \(10,\)"):
        finetune(model, bundle.train, bundle.val, recipe, teacher=five)
    for key, value in model.state_dict().items():  # refused before any training step
        assert torch.equal(value, before[key]), key
    assert model.training == pruned.model.training  # the check restores the modes


def test_distilling_from_itself_warns(trained, pruned, bundle):
    import warnings

    from edgeprune.models.load import load_model

    student = load_model("builtin:mnist-cnn")  # the unpruned model, as its own teacher
    with pytest.warns(UserWarning, match="same architecture and weights as the student"):
        finetune(student, bundle.train, bundle.val, get_recipe("distill", **FAST),
                 teacher=load_model("builtin:mnist-cnn"))
    with warnings.catch_warnings():  # a real teacher (the unpruned original): no warning
        warnings.filterwarnings("error", message=".*same architecture and weights")
        finetune(copy.deepcopy(pruned.model), bundle.train, bundle.val,
                 get_recipe("distill", **FAST), teacher=trained)


def test_training_never_imports_pruning():
    import subprocess
    import sys

    code = ("import sys, edgeprune.training.finetune, edgeprune.training.recipes, "
            "edgeprune.training.checkpoints, edgeprune.training.evaluate; "
            "print(sorted(m for m in sys.modules if m.startswith('edgeprune.pruning')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_finetune_names():
    import edgeprune
    from edgeprune.training import finetune as loop
    from edgeprune.training import recipes

    assert edgeprune.finetune is loop.finetune
    assert edgeprune.get_recipe is recipes.get_recipe
    assert "full" in recipes.list_recipes()
