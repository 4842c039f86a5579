"""Pruned-model directories: save, load without pickles, atomic and non-clobbering writes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import edgeprune
from edgeprune.errors import CheckpointError, ModelSpecError, OutputExistsError
from edgeprune.models import pruned_dir


def _shrink_first_conv(model: nn.Module, keep: int) -> None:
    """A hand-made structural prune of the MNIST CNN's first conv (and the next conv's inputs)."""
    conv, nxt = model.features[0], model.features[3]
    idx = torch.arange(keep)
    conv.weight = nn.Parameter(conv.weight[idx].clone())
    conv.bias = nn.Parameter(conv.bias[idx].clone())
    conv.out_channels = keep
    nxt.weight = nn.Parameter(nxt.weight[:, idx].clone())
    nxt.in_channels = keep


def test_roundtrip_rebuilds_widths_and_outputs(tmp_path, digits_images):
    from tests.conftest import real_images

    model = edgeprune.load_model("builtin:mnist-cnn")
    _shrink_first_conv(model, 12)
    x = (real_images(digits_images, 16, 1, 28) - 0.1307) / 0.3081
    expected = model(x)
    out = edgeprune.save(model, tmp_path / "m", spec="builtin:mnist-cnn",
                         input_shape=(1, 1, 28, 28), history=[{"step": 1}],
                         extra={"note": "hand pruned"})
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["modules"]["features.0"]["out_channels"] == 12
    loaded = edgeprune.load(out)
    assert loaded.features[0].out_channels == 12 and loaded.features[3].in_channels == 12
    assert torch.equal(loaded(x), expected)
    assert edgeprune.load_model(str(out)).features[0].weight.shape[0] == 12  # dir as a spec
    assert pruned_dir.read_manifest(out).history == [{"step": 1}]


def test_existing_output_needs_force_and_nothing_else_is_clobbered(tmp_path):
    model = edgeprune.load_model("builtin:mnist-cnn")
    out = edgeprune.save(model, tmp_path / "m", spec="builtin:mnist-cnn")
    with pytest.raises(OutputExistsError, match="--force"):
        edgeprune.save(model, out, spec="builtin:mnist-cnn")
    edgeprune.save(model, out, spec="builtin:mnist-cnn", force=True)
    user_dir = tmp_path / "photos"
    user_dir.mkdir()
    (user_dir / "cat.jpg").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="not a pruned model"):
        edgeprune.save(model, user_dir, spec="builtin:mnist-cnn", force=True)
    assert (user_dir / "cat.jpg").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_tampered_weights_are_refused(tmp_path):
    out = edgeprune.save(edgeprune.load_model("builtin:mnist-cnn"), tmp_path / "m",
                         spec="builtin:mnist-cnn")
    data = bytearray((out / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (out / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        edgeprune.load(out)


def test_a_bias_added_by_a_fold_survives_the_round_trip(tmp_path):
    conv = nn.Conv2d(1, 4, 3, bias=False)
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False))
    model[2].bias = nn.Parameter(torch.tensor([0.5, -0.25]))  # as materialize's fold does
    src = tmp_path / "net.py"
    src.write_text("import torch.nn as nn\n"
                   "def make():\n"
                   "    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(),"
                   " nn.Conv2d(4, 2, 1, bias=False))\n")
    out = edgeprune.save(model, tmp_path / "m", spec=f"{src}:make", input_shape=(1, 1, 8, 8))
    loaded = edgeprune.load(out)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


_NET = ("import torch.nn as nn\n"
        "def make(width=4):\n"
        "    return nn.Sequential(nn.Conv2d(1, width, 3), nn.ReLU(), nn.Flatten(),"
        " nn.Linear(width * 36, 3))\n")


def test_a_relative_factory_spec_is_stored_absolute(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "net.py").write_text(_NET)
    monkeypatch.chdir(project)
    model = edgeprune.load_model("net.py:make(width=3)")
    out = edgeprune.save(model, "runs/m", spec="net.py:make(width=3)", input_shape=(1, 1, 8, 8))
    spec = json.loads((out / "model.json").read_text())["spec"]
    assert spec == f"{project / 'net.py'}:make(width=3)"
    monkeypatch.chdir("/")  # `cd / && edgeprune info DIR` works
    loaded = edgeprune.load(project / "runs" / "m")
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


def test_an_old_relative_spec_is_found_next_to_the_directory(tmp_path, monkeypatch):
    (tmp_path / "net.py").write_text(_NET)
    model = edgeprune.load_model(f"{tmp_path / 'net.py'}:make")
    out = edgeprune.save(model, tmp_path / "m", spec=f"{tmp_path / 'net.py'}:make")
    manifest = json.loads((out / "model.json").read_text())
    manifest["spec"] = "net.py:make"  # what edgeprune wrote before specs were stored absolute
    (out / "model.json").write_text(json.dumps(manifest))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert pruned_dir.read_manifest(out).spec == f"{tmp_path / 'net.py'}:make"
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(edgeprune.load(out)(x), model(x))
    (tmp_path / "net.py").rename(tmp_path / "moved.py")
    with pytest.raises(ModelSpecError) as info:
        edgeprune.load(out)
    message = str(info.value)
    assert str(elsewhere / "net.py") in message and str(tmp_path / "net.py") in message
    assert "\n" not in message and " — " in message
