"""Data specs, the shipped real data sets, image folders, CIFAR-10 batches and factories.

On-disk formats are written by the tests themselves in the real layouts: PNG class folders,
and CIFAR-10 python batches pickled the way the published files are (Python 2 ``str`` opcodes,
``numpy.core.multiarray._reconstruct`` arrays, bytes keys).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeprune.data import (
    DataSpec,
    DataSpecError,
    ForbiddenPickleError,
    calibration_batches,
    example_input,
    load_data,
    parse_data_spec,
)
from edgeprune.errors import UsageError

# --- helpers that write real formats ------------------------------------------------------------


class _Py2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes ``str`` and ``bytes`` as Python 2 ``str`` (BINSTRING), as cPickle did for CIFAR."""

    dispatch: ClassVar[dict[type, Any]] = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _save_str8(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_str8
    dispatch[str] = _save_str8


def py2_pickle(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    # numpy 1.x (which wrote the published files) names the reconstructor numpy.core.multiarray
    return buf.getvalue().replace(b"numpy._core.multiarray\n_reconstruct",
                                  b"numpy.core.multiarray\n_reconstruct")


def cifar_images(n: int, offset: int) -> np.ndarray:
    """N×3×32×32 uint8 whose R, G, B planes differ, so a layout mix-up shows."""
    rng = np.random.default_rng(offset)
    base = rng.integers(0, 200, size=(n, 1, 32, 32), dtype=np.uint8)
    return np.concatenate([base, base // 2 + 20, 255 - base], axis=1)


def write_cifar(root: Path, per_batch: int = 20, n_batches: int = 5) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    names = [f"batch_{i}" for i in range(1, n_batches + 1)] + ["test"]
    for i, name in enumerate(names):
        images = cifar_images(per_batch, i)
        labels = [(j + i) % 10 for j in range(per_batch)]
        batch = {"batch_label": f"{name} of 5", "labels": labels,
                 "data": images.reshape(per_batch, 3072),
                 "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)]}
        fname = "test_batch" if name == "test" else f"data_{name}"
        (root / fname).write_bytes(py2_pickle(batch))
        written[fname] = images
    meta = {"num_cases_per_batch": per_batch, "num_vis": 3072,
            "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                            "horse", "ship", "truck"]}
    (root / "batches.meta").write_bytes(py2_pickle(meta))
    return written


def write_pngs(folder: Path, images: np.ndarray, mode: str = "L") -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img, mode=mode).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def digit_pixels() -> tuple[np.ndarray, np.ndarray]:
    """Real digits as 16×16 uint8 images (upsampled from sklearn's 8×8) and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images[:120], dtype=torch.float32).unsqueeze(1) * (255 / 16)
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy(), bunch.target[:120]


@pytest.fixture()
def grey_folder(tmp_path: Path, digit_pixels: tuple[np.ndarray, np.ndarray]) -> Path:
    images, labels = digit_pixels
    root = tmp_path / "digits_folder"
    for split, part in (("train", slice(0, 90)), ("val", slice(90, 120))):
        for cls in (0, 1, 2):
            picked = images[part][labels[part] == cls]
            write_pngs(root / split / f"class_{cls}", picked)
    return root


def all_batches(loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*[(x, y) for x, y in loader], strict=True)
    return torch.cat(xs), torch.cat(ys)


# --- the grammar --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind", "target", "attr"), [
    ("builtin:digits", "builtin", "digits", None),
    ("builtin:MNIST5K", "builtin", "mnist5k", None),
    ("imagefolder:/data/pets", "imagefolder", "/data/pets", None),
    ("cifar10:~/cifar-10-batches-py", "cifar10", "~/cifar-10-batches-py", None),
    ("loaders/make.py:build", "pyfile", "loaders/make.py", "build"),
    ("my_pkg.data:make_loaders", "module", "my_pkg.data", "make_loaders"),
])
def test_parse_forms(text: str, kind: str, target: str, attr: str | None) -> None:
    spec = parse_data_spec(text)
    assert (spec.kind, spec.target, spec.attr) == (kind, target, attr)
    assert str(spec) == text
    assert spec.to_dict()["kind"] == kind


@pytest.mark.parametrize(("text", "needle"), [
    ("", "empty"),
    ("builtin:mnist", "builtin:mnist5k"),  # the fix lists the real names
    ("imagefolder:", "imagefolder:PATH"),
    ("loaders/make.py:2fast", "not a Python name"),
    ("/no/such/dir", "does not exist"),
    ("bultin:mnist5k", "did you mean 'builtin:'"),
    ("imagefoldr:/data", "did you mean 'imagefolder:'"),
])
def test_parse_errors_name_the_fix(text: str, needle: str) -> None:
    with pytest.raises(DataSpecError) as info:
        parse_data_spec(text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_bare_directories_are_recognised(tmp_path: Path, grey_folder: Path) -> None:
    assert parse_data_spec(str(grey_folder)) == DataSpec("imagefolder", str(grey_folder),
                                                         text=str(grey_folder))
    write_cifar(tmp_path / "cifar", per_batch=4, n_batches=1)
    assert parse_data_spec(str(tmp_path / "cifar")).kind == "cifar10"
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataSpecError, match="is a file"):
        parse_data_spec(str(tmp_path / "file.txt"))


# --- shipped real data --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "n", "shape"), [
    ("digits", 1797, (1, 8, 8)), ("mnist5k", 5000, (1, 28, 28)), ("animals", 10000, (1, 28, 28)),
])
def test_builtin_sizes_and_stratified_split(name: str, n: int, shape: tuple[int, ...]) -> None:
    bundle = load_data(f"builtin:{name}", batch_size=500)
    assert bundle.n_train + bundle.n_val == n
    assert bundle.input_shape == bundle.native_shape == shape
    assert bundle.num_classes == len(bundle.class_names) == 10
    x_val, y_val = all_batches(bundle.val)
    assert x_val.shape == (bundle.n_val, *shape)
    _, y_train = all_batches(bundle.train)
    counts_val = torch.bincount(y_val, minlength=10)
    counts_all = counts_val + torch.bincount(y_train, minlength=10)
    # every class goes 80/20 (to the nearest image)
    assert torch.all((counts_val.float() - 0.2 * counts_all.float()).abs() <= 0.5)
    # normalised with the documented statistics: roughly zero mean, unit spread
    assert abs(float(x_val.mean())) < 0.1
    assert 0.85 < float(x_val.std()) < 1.2


def test_digits_match_sklearn_load_digits() -> None:
    from sklearn.datasets import load_digits

    bundle = load_data("builtin:digits", normalization="none", batch_size=2000)
    x_val, y_val = all_batches(bundle.val)
    x_train, y_train = all_batches(bundle.train)
    ours = {(hashlib.sha1((x * 16).round().to(torch.uint8).numpy().tobytes()).hexdigest(), int(y))
            for x, y in zip(torch.cat([x_val, x_train]), torch.cat([y_val, y_train]), strict=True)}
    bunch = load_digits()
    theirs = {(hashlib.sha1(img.astype(np.uint8)[None].tobytes()).hexdigest(), int(t))
              for img, t in zip(bunch.images, bunch.target, strict=True)}
    assert ours == theirs


def test_mnist5k_label_is_the_last_column_and_values_are_pixels() -> None:
    bundle = load_data("builtin:mnist5k", normalization="none", batch_size=1000)
    x_val, y_val = all_batches(bundle.val)
    assert float(x_val.min()) == 0.0 and float(x_val.max()) == 1.0
    assert torch.bincount(y_val).tolist() == [100] * 10  # 500 per class in the file
    assert bundle.mean is None and bundle.std is None
    assert load_data("builtin:mnist5k").mean == (0.1307,)


def test_animals_classes_and_pixel_range() -> None:
    bundle = load_data("builtin:animals", normalization="none", batch_size=2000)
    assert bundle.class_names[:3] == ("bear", "bird", "cat") and bundle.class_names[-1] == "zebra"
    x_val, y_val = all_batches(bundle.val)
    assert torch.bincount(y_val).tolist() == [200] * 10
    assert float(x_val.min()) >= 0.0 and float(x_val.max()) <= 1.0
    # silhouettes: mostly background, but a sizeable white foreground
    assert 0.15 < float(x_val.mean()) < 0.4


def test_splits_are_deterministic_disjoint_and_seeded() -> None:
    def hashes(loader: Any) -> set[str]:
        x, _ = all_batches(loader)
        return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in x}

    a = load_data("builtin:mnist5k", seed=0, batch_size=1000)
    b = load_data("builtin:mnist5k", seed=0, batch_size=1000)
    c = load_data("builtin:mnist5k", seed=1, batch_size=1000)
    assert torch.equal(all_batches(a.val)[0], all_batches(b.val)[0])
    assert torch.equal(next(iter(a.train))[0], next(iter(b.train))[0])  # seeded shuffle
    val_a, train_a = hashes(a.val), hashes(a.train)
    assert not val_a & train_a
    assert val_a != hashes(c.val)
    assert "seed 0" in a.split and a.to_dict()["n_val"] == 1000


def test_resize_and_channel_replication_to_a_model_shape() -> None:
    native = load_data("builtin:mnist5k", normalization="none", batch_size=8)
    rgb = load_data("builtin:mnist5k", input_shape=(1, 3, 32, 32), normalization="none",
                    batch_size=8)
    assert rgb.input_shape == (3, 32, 32) and rgb.native_shape == (1, 28, 28)
    x_native, _ = next(iter(native.val))
    x_rgb, _ = next(iter(rgb.val))
    assert x_rgb.shape == (8, 3, 32, 32)
    assert torch.equal(x_rgb[:, 0], x_rgb[:, 2])
    expected = F.interpolate(x_native, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x_rgb[:, 1:2], expected)
    # grey statistics are replicated per channel
    assert load_data("builtin:mnist5k", input_shape=(3, 64, 64)).mean == (0.1307,) * 3
    small = load_data("builtin:digits", input_shape=(1, 4, None))
    assert small.input_shape == (1, 4, 8)


def test_normalization_choices() -> None:
    base = load_data("builtin:digits", normalization="none", batch_size=400)
    mine = load_data("builtin:digits", normalization=((0.5,), (0.25,)), batch_size=400)
    torch.testing.assert_close(next(iter(mine.val))[0], (next(iter(base.val))[0] - 0.5) / 0.25)
    stats = load_data("builtin:digits", normalization="dataset")
    assert stats.mean is not None and abs(stats.mean[0] - 0.3053) < 0.01
    with pytest.raises(UsageError, match="ImageNet"):
        load_data("builtin:digits", normalization="imagenet")
    with pytest.raises(UsageError, match="unknown normalization"):
        load_data("builtin:digits", normalization="zscore")
    with pytest.raises(UsageError, match="input shape"):
        load_data("builtin:digits", input_shape=(3, 0, 8))
    with pytest.raises(UsageError, match="batch size"):
        load_data("builtin:digits", batch_size=0)


def test_calibration_batches_are_real_deterministic_images() -> None:
    bundle = load_data("builtin:mnist5k", input_shape=(3, 32, 32))
    first = calibration_batches(bundle, 3, 16)
    again = calibration_batches(bundle, 3, 16)
    other = calibration_batches(bundle, 3, 16, seed=1)
    assert [b.shape for b in first] == [(16, 3, 32, 32)] * 3
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    val_x, _ = all_batches(bundle.val)
    val_set = {hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in val_x}
    assert all(hashlib.sha1(x.numpy().tobytes()).hexdigest() in val_set for x in first[0])
    train = calibration_batches(bundle, 2, 8, split="train")
    assert len(train) == 2
    # more than the split holds: fewer batches, never invented images
    assert sum(len(b) for b in calibration_batches(bundle, 100, 16)) == bundle.n_val
    example = example_input(bundle, 2)
    torch.testing.assert_close(example, val_x[:2])


# --- image folders ------------------------------------------------------------------------------


def test_imagefolder_reads_classes_labels_and_pixels(grey_folder: Path,
                                                     digit_pixels: Any) -> None:
    bundle = load_data(f"imagefolder:{grey_folder}", normalization="none", batch_size=100)
    assert bundle.class_names == ("class_0", "class_1", "class_2")
    assert bundle.input_shape == (1, 16, 16)
    x_val, y_val = all_batches(bundle.val)
    images, labels = digit_pixels
    expected = images[90:][np.isin(labels[90:], [0, 1, 2])]
    expected_labels = labels[90:][np.isin(labels[90:], [0, 1, 2])]
    order = np.argsort(expected_labels, kind="stable")  # folders are read class by class
    assert y_val.tolist() == expected_labels[order].tolist()
    assert torch.equal((x_val[:, 0] * 255).round().to(torch.uint8),
                       torch.from_numpy(expected[order]))
    auto = load_data(str(grey_folder))  # bare directory, grey: train-set statistics
    assert auto.mean is not None and auto.mean != (0.485,)
    assert "train/ and val/" in auto.split


def test_imagefolder_rgb_resizes_and_uses_imagenet_stats(tmp_path: Path,
                                                         digit_pixels: Any) -> None:
    images, _ = digit_pixels
    rgb = np.stack([images[:6], images[:6] // 2, 255 - images[:6]], axis=-1)
    for split in ("train", "val"):
        for cls in ("cat", "ant"):
            write_pngs(tmp_path / "rgb" / split / cls, rgb, mode="RGB")
    bundle = load_data(f"imagefolder:{tmp_path / 'rgb'}", input_shape=(3, 24, 20))
    assert bundle.class_names == ("ant", "cat")
    assert bundle.mean == (0.485, 0.456, 0.406)
    x, y = next(iter(bundle.val))
    assert x.shape == (12, 3, 24, 20) and sorted(set(y.tolist())) == [0, 1]
    grey = load_data(f"imagefolder:{tmp_path / 'rgb'}", input_shape=(1, 16, 16))
    assert grey.input_shape == (1, 16, 16)


def test_imagefolder_pool_without_train_val_is_split(tmp_path: Path, digit_pixels: Any) -> None:
    images, labels = digit_pixels
    for cls in (3, 4):
        write_pngs(tmp_path / "pool" / str(cls), images[labels == cls])
    bundle = load_data(f"imagefolder:{tmp_path / 'pool'}", seed=3)
    n = int(np.isin(labels, [3, 4]).sum())
    assert bundle.n_train + bundle.n_val == n and 0 < bundle.n_val < n
    assert "seed 3" in bundle.split


def test_imagefolder_errors(tmp_path: Path, grey_folder: Path, digit_pixels: Any) -> None:
    with pytest.raises(DataSpecError, match="does not exist"):
        load_data(f"imagefolder:{tmp_path / 'missing'}")
    (grey_folder / "train" / "class_9").mkdir()
    with pytest.raises(DataSpecError, match=r"class_9.*has no images"):
        load_data(f"imagefolder:{grey_folder}")
    (grey_folder / "train" / "class_9").rmdir()
    write_pngs(grey_folder / "val" / "zebra", digit_pixels[0][:1])
    with pytest.raises(DataSpecError, match="'zebra' that train/ lacks"):
        load_data(f"imagefolder:{grey_folder}")
    lonely = tmp_path / "lonely"
    write_pngs(lonely / "train" / "a", digit_pixels[0][:2])
    with pytest.raises(DataSpecError, match="no val/"):
        load_data(f"imagefolder:{lonely}")
    mixed = tmp_path / "mixed"
    write_pngs(mixed / "a", digit_pixels[0][:2])
    big = np.kron(digit_pixels[0][:1], np.ones((2, 2), dtype=np.uint8))
    write_pngs(mixed / "b", big)
    with pytest.raises(DataSpecError, match="different sizes.*--input-shape"):
        load_data(f"imagefolder:{mixed}")
    assert load_data(f"imagefolder:{mixed}", input_shape=(1, 16, 16)).input_shape == (1, 16, 16)
    (mixed / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataSpecError, match="broken.png"):
        load_data(f"imagefolder:{mixed}", input_shape=(1, 16, 16))


def test_blank_images_are_refused_instead_of_dividing_by_zero(tmp_path: Path) -> None:
    blank = np.zeros((3, 28, 28), dtype=np.uint8)  # all-black PNGs, one pool, no split
    for cls in ("a", "b"):
        write_pngs(tmp_path / "blank" / cls, blank)
    with pytest.raises(DataSpecError) as info:
        load_data(f"imagefolder:{tmp_path / 'blank'}", input_shape=(1, 28, 28))
    message = str(info.value)
    assert "zero variance" in message and "--normalization none" in message
    assert "\n" not in message
    rgb = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    for cls in ("a", "b"):
        write_pngs(tmp_path / "blank_rgb" / cls, rgb, mode="RGB")
    with pytest.raises(DataSpecError, match="zero variance"):
        load_data(f"imagefolder:{tmp_path / 'blank_rgb'}", normalization="dataset")
    plain = load_data(f"imagefolder:{tmp_path / 'blank'}", input_shape=(1, 28, 28),
                      normalization="none")
    assert plain.std is None and torch.equal(next(iter(plain.val))[0],
                                             torch.zeros(2, 1, 28, 28))


# --- evaluation against the data's classes ------------------------------------------------------


def test_fewer_classes_than_outputs_warns_and_drops_top5(grey_folder: Path) -> None:
    from edgeprune.models.load import load_model
    from edgeprune.training.evaluate import evaluate

    bundle = load_data(f"imagefolder:{grey_folder}", input_shape=(1, 28, 28))  # 3 real classes
    with pytest.warns(UserWarning, match="10 outputs but the data has 3 classes"):
        result = evaluate(load_model("builtin:mnist-cnn"), bundle.val)
    assert result.top5 is None and result.data_num_classes == 3 and result.num_classes == 10
    assert 0.0 < result.top1 <= 1.0
    digits = load_data("builtin:digits", input_shape=(1, 28, 28))  # 10 classes: no warning
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*outputs but the data has")
        full = evaluate(load_model("builtin:mnist-cnn"), digits.val)
    assert full.top5 is not None and full.data_num_classes == 10


def test_top5_is_never_below_top1_and_nan_never_reaches_a_result() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from edgeprune.errors import EvaluationError
    from edgeprune.models.load import load_model
    from edgeprune.training.evaluate import evaluate

    x, y = all_batches(load_data("builtin:digits", normalization="none").val)
    zeros = x[y == 0]
    dead = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.nn.init.zeros_(dead[1].weight)
    torch.nn.init.zeros_(dead[1].bias)  # every logit ties: argmax says 0, topk may not
    tied = evaluate(dead, DataLoader(TensorDataset(zeros, y[y == 0]), batch_size=16))
    assert tied.top1 == 1.0 and tied.top5 == 1.0
    # what a std of 0 used to do: (x - mean) / 0 gives NaN and inf pixels
    images = F.interpolate(x[:32], size=(28, 28), mode="bilinear", align_corners=False)
    broken = DataLoader(TensorDataset((images - images.mean()) / 0.0, y[:32]), batch_size=16)
    with pytest.raises(EvaluationError, match="NaN or infinite outputs"):
        evaluate(load_model("builtin:mnist-cnn"), broken)
    huge = torch.tensor([[3e38, -3e38]] * 6)  # finite logits whose cross-entropy is inf
    with pytest.raises(EvaluationError, match="cross-entropy"):
        evaluate(torch.nn.Identity(), DataLoader(TensorDataset(huge, torch.ones(6).long())))


# --- CIFAR-10 batches ---------------------------------------------------------------------------


def test_cifar10_real_layout(tmp_path: Path) -> None:
    written = write_cifar(tmp_path / "cifar-10-batches-py", per_batch=20)
    bundle = load_data(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", normalization="none",
                       batch_size=50)
    assert (bundle.n_train, bundle.n_val) == (100, 20)
    assert bundle.class_names[0] == "airplane" and bundle.num_classes == 10
    assert bundle.input_shape == (3, 32, 32)
    assert "test_batch" in bundle.split
    x_val, y_val = all_batches(bundle.val)
    assert torch.equal((x_val * 255).round().to(torch.uint8),
                       torch.from_numpy(written["test_batch"]))
    assert y_val.tolist() == [(j + 5) % 10 for j in range(20)]  # test_batch was written 6th
    x_train, _ = all_batches(calibration_loader(bundle))
    assert x_train.shape == (100, 3, 32, 32)
    auto = load_data(str(tmp_path / "cifar-10-batches-py"))  # train-set statistics
    assert auto.mean is not None and len(auto.mean) == 3
    x, _ = all_batches(auto.train)
    assert abs(float(x.mean())) < 1e-3


def calibration_loader(bundle: Any) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(bundle.train.dataset, batch_size=64)  # plain collate works too


def test_cifar10_written_by_python3_also_loads(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_cifar(root, per_batch=4, n_batches=1)
    images = cifar_images(4, 0).reshape(4, 3072)
    (root / "data_batch_1").write_bytes(pickle.dumps(
        {b"data": images, b"labels": [0, 1, 2, 3]}, protocol=2))  # bytes via _codecs.encode
    (root / "test_batch").write_bytes(pickle.dumps(
        {"data": images, "labels": np.arange(4)}, protocol=4))  # str keys, numpy labels
    bundle = load_data(f"cifar10:{root}", normalization="none")
    assert (bundle.n_train, bundle.n_val) == (4, 4)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_forbidden_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    root = tmp_path / "evil"
    write_cifar(root, per_batch=4, n_batches=1)
    marker = tmp_path / "pwned"
    (root / "data_batch_1").write_bytes(pickle.dumps(
        {b"data": _Evil(marker), b"labels": [0, 1, 2, 3]}, protocol=2))
    with pytest.raises(ForbiddenPickleError, match=r"(posix|os)\.system.*refused"):
        load_data(f"cifar10:{root}")
    assert not marker.exists()
    # a pickled class instance (not a function) is refused too
    (root / "data_batch_1").write_bytes(pickle.dumps({b"data": Path("/etc")}, protocol=2))
    with pytest.raises(DataSpecError, match="refused"):
        load_data(f"cifar10:{root}")


def test_cifar10_malformed_files(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    write_cifar(root, per_batch=4, n_batches=1)
    good = (root / "data_batch_1").read_bytes()
    (root / "data_batch_1").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataSpecError, match="data_batch_1.*not a valid pickle"):
        load_data(f"cifar10:{root}")
    (root / "data_batch_1").write_bytes(py2_pickle({"labels": [0]}))
    with pytest.raises(DataSpecError, match="uint8 array of shape N×3072"):
        load_data(f"cifar10:{root}")
    (root / "data_batch_1").write_bytes(py2_pickle(
        {"data": cifar_images(4, 0).reshape(4, 3072), "labels": [0, 1, 2, 42]}))
    with pytest.raises(DataSpecError, match="integers in 0..9"):
        load_data(f"cifar10:{root}")
    (root / "data_batch_1").write_bytes(py2_pickle(["not", "a", "dict"]))
    with pytest.raises(DataSpecError, match="not a dict"):
        load_data(f"cifar10:{root}")
    (root / "data_batch_1").unlink()
    with pytest.raises(DataSpecError, match="no data_batch_1..5"):
        load_data(f"cifar10:{root}")


# --- factories ----------------------------------------------------------------------------------

_FACTORY = '''
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

def _sets():
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(bunch.target)
    return TensorDataset(x[:1500], y[:1500]), TensorDataset(x[1500:], y[1500:])

def pair(batch_size):
    train, val = _sets()
    return (DataLoader(train, batch_size=batch_size, shuffle=True),
            DataLoader(val, batch_size=batch_size))

def rich(**kwargs):
    train, val = pair(kwargs["batch_size"])
    return {"train": train, "val": val, "class_names": [f"d{i}" for i in range(10)],
            "mean": [0.3], "std": [0.37]}

def broken():
    raise RuntimeError("disk on fire")

def wrong():
    return 42

def generator():
    train, val = pair(8)
    return iter(train), val
'''


@pytest.fixture()
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_loaders.py"
    path.write_text(textwrap.dedent(_FACTORY))
    return path


def test_file_factory_tuple_and_dict(factory_file: Path) -> None:
    bundle = load_data(f"{factory_file}:pair", batch_size=100)
    assert bundle.spec.kind == "pyfile"
    assert (bundle.n_train, bundle.n_val, bundle.num_classes) == (1500, 297, 10)
    assert bundle.input_shape == (1, 8, 8) and bundle.mean is None
    x, _ = next(iter(bundle.val))
    assert x.shape == (100, 1, 8, 8)
    rich = load_data(f"{factory_file}:rich", input_shape=(3, 16, 16))
    assert rich.class_names[0] == "d0" and rich.mean == (0.3,)
    x, _ = next(iter(rich.val))
    assert x.shape == (64, 3, 16, 16)
    assert calibration_batches(rich, 2, 5)[1].shape == (5, 3, 16, 16)
    assert example_input(rich).shape == (1, 3, 16, 16)


def test_module_factory(factory_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(factory_file.parent))
    try:
        bundle = load_data("my_loaders:pair", batch_size=32)
        assert bundle.spec.kind == "module" and bundle.n_val == 297
    finally:
        sys.modules.pop("my_loaders", None)


@pytest.mark.parametrize(("attr", "needle"), [
    ("broken", "raised RuntimeError: disk on fire"),
    ("wrong", "returned int"),
    ("generator", "not re-iterable"),
    ("missing", "no callable 'missing'"),
])
def test_factory_errors(factory_file: Path, attr: str, needle: str) -> None:
    with pytest.raises(DataSpecError, match=needle):
        load_data(f"{factory_file}:{attr}")


def test_factory_spec_errors(tmp_path: Path, factory_file: Path) -> None:
    with pytest.raises(DataSpecError, match="does not exist"):
        load_data(f"{tmp_path / 'nope.py'}:make")
    with pytest.raises(DataSpecError, match="cannot be imported"):
        load_data("no_such_module_xyz:make")
    with pytest.raises(UsageError, match="normalises its own"):
        load_data(f"{factory_file}:pair", normalization="dataset")
