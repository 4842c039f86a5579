"""Model specs, safe weights and the torchvision compatibility path."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgeprune.errors import CheckpointError, ModelSpecError, UnsafeCheckpointError
from edgeprune.models.load import default_input_shape, load_model
from edgeprune.models.spec import absolute_spec, parse_model_spec


@pytest.mark.parametrize(
    ("text", "kind", "target", "factory", "kwargs"),
    [
        ("torchvision:resnet18", "torchvision", "resnet18", None, {}),
        ("torchvision:resnet18(num_classes=10)", "torchvision", "resnet18", None,
         {"num_classes": 10}),
        ("mobilenet_v2(width_mult=0.5, num_classes=3)", "torchvision", "mobilenet_v2", None,
         {"width_mult": 0.5, "num_classes": 3}),
        ("builtin:mnist-cnn", "builtin", "mnist-cnn", None, {}),
        ("path/to/net.py:make(width=8)", "file", "path/to/net.py", "make", {"width": 8}),
        ("pkg.sub.mod:factory", "module", "pkg.sub.mod", "factory", {}),
    ],
)
def test_parse_model_spec(text, kind, target, factory, kwargs):
    spec = parse_model_spec(text)
    assert (spec.kind, spec.target, spec.factory, dict(spec.kwargs)) == (kind, target, factory,
                                                                          kwargs)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty model spec"),
        ("torchvision:resnet19", "did you mean torchvision:resnet18"),
        ("builtin:mnist", "did you mean builtin:mnist-cnn"),
        ("torchvision:resnet18(10)", "keyword arguments"),
        ("torchvision:resnet18(num_classes=os.system('x'))", "literal values"),
        ("no/such/file.py:make", "does not exist"),
        ("no_such_module_xyz:make", "cannot import module"),
        ("torchvison:resnet18", "did you mean 'torchvision:'"),
        ("bultin:mnist-cnn", "did you mean 'builtin:'"),
        ("Bad Spec!", "cannot read model spec"),
    ],
)
def test_bad_specs_give_one_line_errors(text, needle):
    with pytest.raises(ModelSpecError) as info:
        load_model(text)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message and " — " in message  # one line that names a fix


def test_torchvision_architecture_builds_through_compat_path():
    model = load_model("torchvision:resnet18(num_classes=10)")
    # the documents' 10-class CIFAR ResNet-18 has 11,181,642 parameters
    assert sum(p.numel() for p in model.parameters()) == 11_181_642
    assert not model.training


def test_compat_warns_once_in_a_fresh_process():
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "from edgeprune.models.torchvision_compat import import_torchvision, compat_patched\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import_torchvision(); import_torchvision()\n"
        "print(compat_patched(), sum('compiled operators' in str(x.message) for x in w))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    patched, count = out.stdout.split()
    # On this machine the registry's torchvision is a CUDA build: the patch is needed.
    assert (patched, count) in (("True", "1"), ("False", "0"))


def test_file_factory_and_module_factory(tmp_path, monkeypatch):
    src = tmp_path / "tiny net.py"  # a space in the path on purpose
    src.write_text(
        "import torch.nn as nn\n"
        "def make(width=4):\n"
        "    return nn.Sequential(nn.Conv2d(1, width, 3), nn.ReLU(), nn.Flatten(),"
        " nn.LazyLinear(2))\n"
        "def not_a_model():\n    return 3\n"
    )
    model = load_model(f"{src}:make(width=6)")
    assert model[0].out_channels == 6
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tinymod.py").write_text(src.read_text())
    assert load_model("tinymod:make")[0].out_channels == 4
    with pytest.raises(ModelSpecError, match="not an nn.Module"):
        load_model(f"{src}:not_a_model")
    with pytest.raises(ModelSpecError, match="did you mean :make"):
        load_model(f"{src}:mkae")
    (tmp_path / "brokenmod.py").write_text("x = (\n")  # a module that raises SyntaxError
    with pytest.raises(ModelSpecError, match="importing 'brokenmod' failed: SyntaxError"):
        load_model("brokenmod:make")


def test_builtin_weights_load_and_classify_real_digits():
    from edgeprune.models import builtin

    model = load_model("builtin:mnist-cnn")
    entry = builtin.get("mnist-cnn")
    assert entry is not None and entry.input_shape == (1, 1, 28, 28)
    assert default_input_shape("builtin:mnist-cnn") == (1, 1, 28, 28)
    # three real MNIST test images ship inside ccexam as PNGs named with their labels
    from PIL import Image

    root = entry.weights_path().parent.parent / "samples"
    for png, label in (("mnist_test_0_label_7.png", 7), ("mnist_test_1_label_2.png", 2),
                       ("mnist_test_2_label_1.png", 1)):
        pixels = np.asarray(Image.open(root / png).convert("L"), dtype=np.float32)
        img = torch.from_numpy(pixels).reshape(1, 1, 28, 28) / 255.0
        x = (img - 0.1307) / 0.3081
        assert model(x).argmax(1).item() == label


def test_weights_state_dict_and_checkpoint_forms(tmp_path):
    model = load_model("torchvision:resnet18(num_classes=3)")
    sd = model.state_dict()
    torch.save(sd, tmp_path / "plain.pt")
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}},
               tmp_path / "wrapped.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for name in ("plain.pt", "wrapped.pth", "w.safetensors"):
        other = load_model("torchvision:resnet18(num_classes=3)", weights=tmp_path / name)
        assert torch.equal(other.fc.weight, model.fc.weight)


def test_masked_state_dict_is_folded(tmp_path):
    import torch.nn.utils.prune as tprune

    model = load_model("builtin:mnist-cnn")
    tprune.ln_structured(model.features[0], "weight", amount=0.5, n=2, dim=0)
    torch.save(model.state_dict(), tmp_path / "masked.pt")  # weight_orig + weight_mask keys
    fresh = load_model("builtin:mnist-cnn", weights=tmp_path / "masked.pt")
    zero = (fresh.features[0].weight.flatten(1).abs().sum(1) == 0).sum().item()
    assert zero == 16


def test_unsafe_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    with path.open("wb") as fh:
        pickle.dump({"state_dict": Evil()}, fh)
    with pytest.raises(UnsafeCheckpointError, match="refused without running it"):
        load_model("builtin:mnist-cnn", weights=path)
    assert not marker.exists()


def test_mismatched_and_missing_weights(tmp_path):
    torch.save(load_model("torchvision:resnet18(num_classes=3)").state_dict(),
               tmp_path / "r3.pt")
    with pytest.raises(CheckpointError, match=r"do not fit the model.*other shapes.*fc\.weight"):
        load_model("torchvision:resnet18(num_classes=10)", weights=tmp_path / "r3.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model("builtin:mnist-cnn", weights=tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_model("builtin:mnist-cnn", weights=tmp_path / "junk.pt")


def test_a_factory_that_raises_is_one_line_naming_the_spec(tmp_path, monkeypatch):
    src = tmp_path / "badnet.py"
    src.write_text("import torch.nn as nn\n"
                   "def boom():\n    raise ValueError('bad config')\n"
                   "def make(width=4):\n    return nn.Conv2d(1, width, 3)\n")
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{src}:boom")
    message = str(info.value)
    assert f"model factory '{src}:boom' raised ValueError: bad config" in message
    assert "EDGEPRUNE_DEBUG=1" in message and "\n" not in message
    assert isinstance(info.value.__cause__, ValueError)  # the traceback behind EDGEPRUNE_DEBUG
    with pytest.raises(ModelSpecError, match=r"raised TypeError: .*unexpected keyword"):
        load_model(f"{src}:make(depth=2)")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelSpecError, match="model factory 'badnet:boom' raised ValueError"):
        load_model("badnet:boom")


def test_refused_pickle_message_is_plain_text(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # the whole module object: needs its class
    with pytest.raises(UnsafeCheckpointError) as info:
        load_model("builtin:mnist-cnn", weights=path)
    message = str(info.value)
    assert "\x1b" not in message and "[1m" not in message  # torch's own text has ANSI bold
    assert "it references torch.nn.modules.linear.Linear" in message


def test_absolute_spec_and_the_spec_a_model_remembers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_spec("net.py:make(width=2)") == f"{tmp_path / 'net.py'}:make(width=2)"
    assert absolute_spec("../x/net.py:make") == f"{tmp_path.parent / 'x' / 'net.py'}:make"
    assert absolute_spec("net.py:make", base="/srv") == "/srv/net.py:make"
    for unchanged in ("/abs/net.py:make", "builtin:mnist-cnn", "pkg.mod:make", "resnet18"):
        assert absolute_spec(unchanged) == unchanged
    assert load_model("builtin:mnist-cnn").edgeprune_spec == "builtin:mnist-cnn"


def test_fold_mask_state_multiplies_orig_by_mask():
    from edgeprune.models.weights import fold_mask_state

    state = {"w_orig": torch.ones(2, 2), "w_mask": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
             "b": torch.zeros(2)}
    folded = fold_mask_state(state)
    assert set(folded) == {"w", "b"}
    assert torch.equal(folded["w"], torch.eye(2))


def test_models_imports_run_one_way():
    """spec/weights/build never import pruned_dir or load (pruned_dir builds through build)."""
    import ast
    from pathlib import Path

    import edgeprune.models

    root = Path(edgeprune.models.__file__).parent
    for name in ("spec", "weights", "build"):
        tree = ast.parse((root / f"{name}.py").read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    for alias in node.names} | {
            node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"pruned_dir", "load", "edgeprune.models.pruned_dir",
                               "edgeprune.models.load"}, name


def test_public_api_names_the_model_functions():
    import edgeprune
    from edgeprune.models import load, pruned_dir, spec

    assert edgeprune.load_model is load.load_model
    assert edgeprune.parse_model_spec is spec.parse_model_spec
    assert edgeprune.ModelSpec is spec.ModelSpec
    assert edgeprune.load is pruned_dir.load and edgeprune.save is pruned_dir.save
    assert edgeprune.parse_model_spec("builtin:mnist-cnn").kind == "builtin"
