"""CLI round trips on shipped trained weights and shipped real data."""

from __future__ import annotations

import json

import pytest
import torch

import edgeprune
from edgeprune.cli.main import main


def _run(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--format", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_prune_export_info_round_trip(tmp_path, capsys):
    pruned = tmp_path / "pruned model"  # spaces in paths on purpose
    code, r = _run(capsys, "prune", "--model", "builtin:mnist-cnn", "--data", "builtin:mnist5k",
                   "--criterion", "activation", "--ratio", "0.5", "--round-to", "8",
                   "--out", str(pruned))
    assert code == 0
    assert r["params_after"] < 0.5 * r["params_before"]
    assert r["accuracy_before"]["top1"] > 0.98  # the shipped net on real MNIST digits
    widths = {g["root"]: g["channels_after"] for g in r["groups"]}
    assert all(w % 8 == 0 for w in widths.values())
    model = edgeprune.load(pruned)
    assert model.features[0].out_channels == widths["features.0"]

    onnx_path = tmp_path / "m.onnx"
    code, e = _run(capsys, "export", "--model", str(pruned), "--format", "onnx",
                   "--out", str(onnx_path))
    assert code == 0 and onnx_path.exists()
    assert e["max_abs_diff"] <= 1e-4

    code, info = _run(capsys, "info", str(onnx_path))
    assert code == 0
    assert info["params"] == r["params_after"]


def test_prune_refuses_to_overwrite_and_names_the_fix(tmp_path, capsys):
    out = tmp_path / "m"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    code = main(["prune", "--model", "builtin:mnist-cnn", "--ratio", "0.3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "--force" in err and len(err.strip().splitlines()) == 1
    assert (out / "precious.txt").read_text() == "user data"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "builtin:mnist-cnn", "--ratio", "1.2"], "ratio"),
        (["--model", "builtin:mnist-cnn", "--criterion", "l3"], "did you mean"),
        (["--model", "builtin:mnist-cnn", "--criterion", "activation"], "needs real data"),
        (["--model", "torchvision:resnet19"], "did you mean torchvision:resnet18"),
        (["--model", "builtin:mnist-cnn", "--layers", "features.9"], "features"),
    ],
)
def test_prune_bad_input_one_line(tmp_path, capsys, argv, needle):
    code = main(["prune", *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_prune_with_a_schedule_trains_and_saves(tmp_path, capsys):
    code, r = _run(capsys, "prune", "--model", "builtin:mnist-cnn", "--data", "builtin:mnist5k",
                   "--ratio", "0.6", "--schedule", "oneshot", "--epochs", "1",
                   "--max-batches", "8", "--out", str(tmp_path / "m"))
    assert code == 0 and r["schedule"] == "oneshot"
    # training after pruning recovers accuracy on real digits
    assert r["accuracy_after"]["top1"] > r["accuracy_pruned"]["top1"]
    assert edgeprune.load(tmp_path / "m").features[0].out_channels < 32
    assert not (tmp_path / "m.ckpt").exists()  # checkpoints cleaned once the model is written


def test_schedule_needs_data(tmp_path, capsys):
    code = main(["prune", "--model", "builtin:mnist-cnn", "--schedule", "soft",
                 "--out", str(tmp_path / "m")])
    assert code == 2 and "needs --data" in capsys.readouterr().err


def test_materialize_cli_on_torch_prune_masks(tmp_path, capsys):
    import torch.nn.utils.prune as tprune

    model = edgeprune.load_model("builtin:mnist-cnn")
    tprune.ln_structured(model.features[0], "weight", amount=0.25, n=2, dim=0)
    # a dead channel: zero filter and zero bias too (the shipped conv has a bias)
    dead = (model.features[0].weight.flatten(1).abs().sum(1) == 0).nonzero().flatten()
    with torch.no_grad():
        model.features[0].bias[dead] = 0
    torch.save(model.state_dict(), tmp_path / "masked.pt")
    code, r = _run(capsys, "materialize", "--model", "builtin:mnist-cnn", "--weights",
                   str(tmp_path / "masked.pt"), "--data", "builtin:mnist5k",
                   "--out", str(tmp_path / "small"))
    assert code == 0
    assert r["removed_channels"] == 8
    assert r["max_abs_diff"] <= 1e-5  # float64: the removal itself is exact
    assert r["max_abs_diff_float32"] <= 1e-4  # float32 moves by summation order only
    assert r["accuracy_after"]["top1"] == pytest.approx(r["accuracy_before"]["top1"], abs=1e-9)
    assert edgeprune.load(tmp_path / "small").features[0].out_channels == 24


def test_the_input_shape_comes_from_the_data_when_nothing_else_knows_it(tmp_path, capsys):
    """A user's file.py model has no default input shape: with --data the data's own images
    (builtin:digits, 1×8×8) give it, as `edgeprune evaluate` does; without, one line asks."""
    factory = tmp_path / "net.py"
    factory.write_text(
        "import torch.nn as nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))\n")
    spec = f"{factory}:make"
    code = main(["prune", "--model", spec, "--ratio", "0.5", "--out", str(tmp_path / "no")])
    assert code == 2 and "--input-shape" in capsys.readouterr().err
    code = main(["prune", "--model", spec, "--data", "builtin:digits", "--ratio", "0.5",
                 "--out", str(tmp_path / "p"), "--format", "json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["accuracy_before"] is not None
    manifest = json.loads((tmp_path / "p" / "model.json").read_text())
    assert manifest["input_shape"] == [1, 1, 8, 8]
    assert manifest["modules"]["0"]["out_channels"] == 8
