"""evaluate(): exact figures on known logits, real trained networks on real MNIST, the CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgeprune.data import load_data
from edgeprune.errors import EvaluationError
from edgeprune.training.evaluate import EvalResult, evaluate

# --- trained networks that ship in packages (test-local architectures) --------------------------


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / relative


class _Net(nn.Module):
    def __init__(self, features: nn.Sequential, head: nn.Sequential, names: tuple[str, str]):
        super().__init__()
        self.names = names
        self.add_module(names[0], features)
        self.add_module(names[1], head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, self.names[0])(x)
        return getattr(self, self.names[1])(x.flatten(1))


def ccexam_mnist_cnn() -> nn.Module:
    """ccexam 1.0.0's MNISTNet: keys features.0/3.*, classifier.0/2.*; trained on CUDA."""
    net = _Net(
        nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)),
        ("features", "classifier"),
    )
    path = _package_file("ccexam", "weights/mnist.pth")
    net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return net.eval()


def digit_recognizer_cnn() -> nn.Module:
    """digit-recognizer-py 0.1.0's CNN: conv 1→32→64→128 with max-pools, fc 1152→256→10."""
    convs: list[nn.Module] = []
    for cin, cout in ((1, 32), (32, 64), (64, 128)):
        convs += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    net = _Net(nn.Sequential(*convs),
               nn.Sequential(nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, 10)),
               ("conv_layers", "fc_layers"))
    path = _package_file("digit_recognizer", "models/handwriting_model.pth")
    net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return net.eval()


@pytest.fixture(scope="module")
def mnist5k() -> Any:
    return load_data("builtin:mnist5k", batch_size=500)


def test_ccexam_mnist_cnn_on_mnist5k(mnist5k: Any) -> None:
    model = ccexam_mnist_cnn()
    val = evaluate(model, mnist5k.val)
    train = evaluate(model, mnist5k.train)
    assert val.n_samples == 1000 and train.n_samples == 4000
    assert val.top1 >= 0.98
    full = (val.top1 * val.n_samples + train.top1 * train.n_samples) / 5000
    assert full >= 0.98
    assert val.top5 is not None and val.top5 >= val.top1
    assert val.loss < 0.1


def test_digit_recognizer_cnn_on_mnist5k(mnist5k: Any) -> None:
    result = evaluate(digit_recognizer_cnn(), mnist5k.val)
    assert result.top1 >= 0.98


def test_a_wrongly_normalised_input_costs_accuracy(mnist5k: Any) -> None:
    # the check above can fail: the same net on un-normalised pixels does measurably worse
    raw = load_data("builtin:mnist5k", normalization="none", batch_size=500)
    model = ccexam_mnist_cnn()
    assert evaluate(model, raw.val).top1 < evaluate(model, mnist5k.val).top1 - 0.02


# --- exact figures --------------------------------------------------------------------------------


def _logit_loader(logits: torch.Tensor, labels: torch.Tensor, batch_size: int) -> DataLoader:
    return DataLoader(TensorDataset(logits, labels), batch_size=batch_size)


def test_figures_match_a_hand_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(103, 12, generator=gen)
    labels = torch.randint(0, 12, (103,), generator=gen)
    result = evaluate(nn.Identity(), _logit_loader(logits, labels, 10))
    top5 = logits.topk(5, dim=1).indices
    assert result.n_samples == 103 and result.n_batches == 11 and result.num_classes == 12
    assert result.top1 == (logits.argmax(1) == labels).sum().item() / 103
    assert result.top5 == (top5 == labels[:, None]).any(1).sum().item() / 103
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    other = evaluate(nn.Identity(), _logit_loader(logits, labels, 7))  # batching is irrelevant
    assert (other.top1, other.top5, other.n_samples) == (result.top1, result.top5, 103)
    assert other.loss == pytest.approx(result.loss, rel=1e-6)
    assert json.loads(json.dumps(result.to_dict()))["top1"] == result.top1


def test_no_top5_for_five_classes_or_fewer() -> None:
    logits = torch.eye(5)
    result = evaluate(nn.Identity(), _logit_loader(logits, torch.arange(5), 2))
    assert result.top1 == 1.0 and result.top5 is None


def test_deterministic_restores_mode_and_threads(mnist5k: Any) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(784, 10))
    torch.manual_seed(0)
    model.train()
    threads = torch.get_num_threads()
    a = evaluate(model, mnist5k.val, num_threads=1)
    b = evaluate(model, mnist5k.val)
    assert a == b  # dropout is off during evaluation
    assert model.training
    assert torch.get_num_threads() == threads


def test_progress_events(mnist5k: Any) -> None:
    events: list[dict[str, Any]] = []
    result = evaluate(ccexam_mnist_cnn(), mnist5k.val, progress=events.append, max_batches=1)
    assert events[0]["event"] == "start" and events[0]["n_batches"] == 1
    assert events[-1]["event"] == "done" and events[-1]["n_samples"] == 500
    assert all(e["stage"] == "evaluate" and e["message"] for e in events)
    assert result.n_samples == 500


def test_mismatches_are_one_line_errors(mnist5k: Any) -> None:
    with pytest.raises(EvaluationError, match=r"shape \(3, 32, 32\).*--input-shape"):
        evaluate(ccexam_mnist_cnn(), load_data("builtin:mnist5k", input_shape=(3, 32, 32)).val)
    with pytest.raises(EvaluationError, match=r"label \d+ but the model has 4 outputs"):
        evaluate(nn.Sequential(nn.Flatten(), nn.Linear(784, 4)), mnist5k.val)
    with pytest.raises(EvaluationError, match="no images"):
        evaluate(nn.Identity(), [])
    with pytest.raises(EvaluationError, match=r"\(images, labels\)"):
        evaluate(nn.Identity(), [torch.zeros(2, 3)])
    assert issubclass(EvaluationError, ValueError)
    assert isinstance(EvalResult(1.0, None, 0.0, 1, 1, 2).to_dict(), dict)


# --- the command --------------------------------------------------------------------------------


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from edgeprune.cli.main import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_module_imports_nothing_heavy() -> None:
    code = ("import sys, edgeprune.cli.evaluate; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_cli_evaluate_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("edgeprune.models.load")
    code, out, err = _cli(["evaluate", "--model", "builtin:mnist-cnn", "--data", "builtin:mnist5k",
                           "--format", "json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["top1"] >= 0.98 and data["n_samples"] == 1000 and data["split"] == "val"
    assert data["input_shape"] == [1, 28, 28]
    code, out, _ = _cli(["evaluate", "--model", "builtin:mnist-cnn", "--data", "builtin:digits",
                         "--input-shape", "1,28,28", "--split", "train", "--batch-size", "512"],
                        capsys)
    assert code == 0 and "top-1" in out and "1438 images at 1×28×28" in out


def test_cli_data_error_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("edgeprune.models.load")
    code, _, err = _cli(["evaluate", "--model", "builtin:mnist-cnn", "--data",
                           f"imagefolder:{tmp_path / 'none'}"], capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("edgeprune: error:")]
    assert len(errors) == 1 and "does not exist" in errors[0] and "Traceback" not in err


def test_thread_counts_from_two_threads_are_restored() -> None:
    """torch's thread count is process-wide: two threads that set it for a block, ending in the
    'wrong' order, still leave the count that was there before."""
    import threading

    from edgeprune.training.threads import torch_threads

    before = torch.get_num_threads()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def a() -> None:
        with torch_threads(1) as n:
            seen["a"] = n
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b() -> None:
        a_in.wait(5)
        with torch_threads(3) as n:  # cannot be honoured while a holds 1: reported, not set
            seen["b"] = n
            b_in.set()
            a_out.wait(5)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": 1, "b": 1}
    assert torch.get_num_threads() == before
    with torch_threads(1):
        with torch_threads(2) as inner:  # nested in one thread: set and restored in order
            assert inner == torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
