"""``load_data``: a data spec in, train/val loaders and the facts about them out."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from edgeprune.data import _tensors as T
from edgeprune.data._builtin import BUILTINS, read_builtin
from edgeprune.data._factory import call_factory
from edgeprune.data._folders import RawSplits, read_cifar10, read_imagefolder
from edgeprune.data._spec import DataSpec, parse_data_spec
from edgeprune.errors import DataSpecError, UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Normalization = str | tuple[Sequence[float], Sequence[float]]
Progress = Callable[[dict[str, Any]], None]
Split = Literal["train", "val"]


@dataclass(frozen=True, eq=False)
class DataBundle:
    """Loaders and the facts a pruning run needs about its data.

    ``train`` shuffles (seeded), ``val`` keeps a fixed order. Both yield ``(images, labels)``
    with images already at ``input_shape`` and normalised with ``mean``/``std`` (per channel
    of ``input_shape``; ``None`` when a factory does its own normalisation and does not say).
    """

    spec: DataSpec
    train: Any  # DataLoader for built-in and on-disk data; the factory's own loaders otherwise
    val: Any
    num_classes: int
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # C, H, W of the images the loaders yield
    native_shape: tuple[int, int, int]  # C, H, W of the data as stored
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    n_train: int | None
    n_val: int | None
    split: str  # how train and val were formed
    batch_size: int
    seed: int

    def loader(self, split: Split) -> Any:
        if split not in ("train", "val"):
            raise UsageError(f"unknown split {split!r}", hint="use 'train' or 'val'")
        return self.train if split == "train" else self.val

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": str(self.spec),
            "kind": self.spec.kind,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input_shape": list(self.input_shape),
            "native_shape": list(self.native_shape),
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "split": self.split,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }


def load_data(
    spec: str | DataSpec,
    *,
    input_shape: Sequence[int | None] | None = None,
    batch_size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.2,
    normalization: Normalization = "auto",
    num_workers: int = 0,
    progress: Progress | None = None,
) -> DataBundle:
    """Resolve a data spec into a :class:`DataBundle`.

    ``input_shape`` is the model's ``(C, H, W)`` (a leading batch dimension is dropped; ``None``
    entries keep the data's own size): images are resized bilinearly and grey is replicated to
    3 channels (RGB → grey uses BT.601 luma). ``seed`` fixes the train/val split of data that
    has no split of its own (``val_fraction`` of each class goes to val) and the train shuffle.
    ``normalization``: ``"auto"`` (per data set, see docs/data.md), ``"dataset"`` (train-set
    statistics), ``"imagenet"``, ``"none"`` or an explicit ``(mean, std)``.
    """
    parsed = parse_data_spec(spec) if isinstance(spec, str) else spec
    requested = _check_args(input_shape, batch_size, val_fraction, num_workers, normalization)
    if progress:
        progress({"stage": "data", "message": f"loading data {parsed}"})
    if parsed.kind in ("pyfile", "module"):
        if normalization != "auto":
            raise UsageError("a data factory normalises its own images",
                             hint="drop the normalization option, or normalise in the factory")
        return _from_factory(parsed, requested, batch_size, seed, num_workers)
    if parsed.kind == "builtin":
        entry = BUILTINS.get(parsed.target)
        if entry is None:
            raise DataSpecError(f"unknown built-in data set {parsed.target!r}",
                                hint="choose one of " + ", ".join(f"builtin:{n}" for n in BUILTINS))
        images, labels = read_builtin(parsed.target)
        raw = RawSplits(images, labels, None, None, entry.class_names, "")
        scale, auto_stats = entry.scale, (entry.mean, entry.std)
    elif parsed.kind == "imagefolder":
        channels = requested[0] if requested else None
        size = (requested[1], requested[2]) if requested else (None, None)
        raw = read_imagefolder(Path(parsed.target).expanduser(), channels=channels, size=size,
                               progress=progress)
        scale, auto_stats = 1 / 255, None
    else:
        raw = read_cifar10(Path(parsed.target).expanduser(), progress=progress)
        scale, auto_stats = 1 / 255, None
    return _from_arrays(parsed, raw, scale, auto_stats, requested, batch_size=batch_size,
                        seed=seed, val_fraction=val_fraction, normalization=normalization,
                        num_workers=num_workers)


def _check_args(input_shape: Sequence[int | None] | None, batch_size: int, val_fraction: float,
                num_workers: int, normalization: Normalization
                ) -> tuple[int | None, int | None, int | None] | None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch size must be a positive integer, not {batch_size!r}",
                         hint="pass e.g. batch_size=64")
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"val_fraction must be between 0 and 1, not {val_fraction!r}",
                         hint="pass e.g. val_fraction=0.2")
    if num_workers < 0:
        raise UsageError("num_workers cannot be negative", hint="pass 0 to load in-process")
    if isinstance(normalization, str) and normalization not in (
            "auto", "dataset", "imagenet", "none"):
        raise UsageError(f"unknown normalization {normalization!r}",
                         hint="use auto, dataset, imagenet, none or a (mean, std) pair")
    if input_shape is None:
        return None
    dims = [d if d is None or not isinstance(d, numbers.Integral) else int(d) for d in input_shape]
    if len(dims) == 4:
        dims = dims[1:]
    if len(dims) != 3 or any(d is not None and (not isinstance(d, int) or d < 1) for d in dims):
        raise UsageError(f"input shape must be (C, H, W) with positive sizes, not {input_shape!r}",
                         hint="pass e.g. (3, 224, 224); CLI: --input-shape 3,224,224")
    return dims[0], dims[1], dims[2]


def _normalization(normalization: Normalization, auto: tuple[Any, Any] | None, kind: str,
                   train: Tensor, scale: float, channels: int
                   ) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    choice: Any = normalization
    if choice == "auto":
        if auto is not None:
            choice = auto
        else:
            choice = "imagenet" if kind == "imagefolder" and channels == 3 else "dataset"
    if choice == "none":
        return None, None
    if choice == "dataset":
        return T.channel_stats(train, scale, channels)
    if choice == "imagenet":
        if channels != 3:
            raise UsageError(f"ImageNet statistics are for 3 channels, the model takes {channels}",
                             hint="use normalization 'dataset' for grey images")
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        mean, std = (tuple(float(v) for v in part) for part in choice)
    except (TypeError, ValueError):
        raise UsageError(f"normalization {choice!r} is not a (mean, std) pair",
                         hint="pass e.g. ((0.5,), (0.5,))") from None
    if len(mean) == 1 and len(std) == 1 and channels > 1:  # one grey statistic, replicated
        mean, std = mean * channels, std * channels
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise UsageError(f"normalization needs {channels} means and {channels} positive stds",
                         hint="give one value per input channel")
    return mean, std


def _check_spread(spec: DataSpec, std: tuple[float, ...] | None) -> None:
    """Statistics of constant images have std 0: normalising by them would make every pixel NaN."""
    if std is None or min(std) > 0:
        return
    channel = std.index(min(std))
    raise DataSpecError(
        f"the training images of {spec} have zero variance (channel {channel} is the same value "
        "in every pixel of every image), so normalising by their std would divide by zero",
        hint="check that the images are not blank; to use them anyway, load them with "
        "normalization 'none' (edgeprune evaluate --normalization none; load_data(..., "
        "normalization='none')) or an explicit (mean, std)")


def _from_arrays(spec: DataSpec, raw: RawSplits, scale: float, auto_stats: tuple[Any, Any] | None,
                 requested: tuple[int | None, int | None, int | None] | None, *,
                 batch_size: int, seed: int, val_fraction: float, normalization: Normalization,
                 num_workers: int) -> DataBundle:
    if raw.val_images is None:
        train_idx, val_idx = T.stratified_split(raw.train_labels, val_fraction, seed)
        x_train, y_train = raw.train_images[train_idx], raw.train_labels[train_idx]
        x_val, y_val = raw.train_images[val_idx], raw.train_labels[val_idx]
        split = (f"stratified {round((1 - val_fraction) * 100)}/{round(val_fraction * 100)} "
                 f"split of {len(raw.train_labels)} images, seed {seed}")
    else:
        x_train, y_train = raw.train_images, raw.train_labels
        x_val, y_val = raw.val_images, np.asarray(raw.val_labels)
        split = raw.split
    native = tuple(int(d) for d in x_train.shape[1:])
    out = T.resolve_shape(native, requested)  # type: ignore[arg-type]
    train_raw = torch.from_numpy(np.ascontiguousarray(x_train))
    mean, std = _normalization(normalization, auto_stats, spec.kind, train_raw, scale, out[0])
    _check_spread(spec, std)
    pipeline = T.Pipeline(scale, native, out, mean, std)  # type: ignore[arg-type]
    classes = len(raw.class_names)
    train_ds = T.CachedImageDataset(train_raw, torch.from_numpy(y_train), pipeline, classes)
    val_ds = T.CachedImageDataset(torch.from_numpy(np.ascontiguousarray(x_val)),
                                  torch.from_numpy(y_val), pipeline, classes)
    return DataBundle(
        spec=spec,
        train=T.make_loader(train_ds, batch_size=batch_size, shuffle=True, seed=seed,
                            num_workers=num_workers),
        val=T.make_loader(val_ds, batch_size=batch_size, shuffle=False, seed=seed,
                          num_workers=num_workers),
        num_classes=len(raw.class_names), class_names=raw.class_names, input_shape=out,
        native_shape=native, mean=mean, std=std,  # type: ignore[arg-type]
        n_train=len(train_ds), n_val=len(val_ds), split=split, batch_size=batch_size, seed=seed,
    )


# --- factories ----------------------------------------------------------------------------------


class AdaptedLoader:
    """A factory's loader whose batches are resized / channel-converted to the model's shape."""

    def __init__(self, loader: Any, out_shape: tuple[int, int, int]) -> None:
        self.loader = loader
        self.out_shape = out_shape

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels, *_ in self.loader:
            pipeline = T.Pipeline(1.0, tuple(images.shape[1:]), self.out_shape)
            yield pipeline(images), labels

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def dataset(self) -> Any:
        return getattr(self.loader, "dataset", None)


def _first_batch(name: str, loader: Any) -> tuple[Tensor, Tensor]:
    for batch in loader:
        if (isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], Tensor)
                and batch[0].ndim == 4 and isinstance(batch[1], Tensor)):
            return batch[0], batch[1]
        raise DataSpecError(f"data factory {name!r}: batches must be (images N×C×H×W, labels N)",
                            hint="yield (image tensor, label tensor) pairs, as DataLoader does")
    raise DataSpecError(f"data factory {name!r}: its val loader is empty",
                        hint="return a val loader with at least one batch")


def _from_factory(spec: DataSpec, requested: tuple[int | None, int | None, int | None] | None,
                  batch_size: int, seed: int, num_workers: int) -> DataBundle:
    out_request = None if requested is None else tuple(requested)
    made = call_factory(spec, batch_size=batch_size, seed=seed, input_shape=out_request,
                        num_workers=num_workers)
    name = spec.canonical()
    images, _ = _first_batch(name, made.val)
    native = tuple(int(d) for d in images.shape[1:])
    out = T.resolve_shape(native, requested)  # type: ignore[arg-type]
    train, val = made.train, made.val
    if out != native:
        train, val = AdaptedLoader(train, out), AdaptedLoader(val, out)
    num_classes = made.num_classes or (len(made.class_names) if made.class_names else None)
    classes = getattr(getattr(made.val, "dataset", None), "classes", None)
    if num_classes is None and isinstance(classes, (list, tuple)) and classes:
        num_classes = len(classes)
    if num_classes is None:  # documented fallback: one pass over the val labels
        num_classes = 1 + max(int(batch[1].max()) for batch in made.val)
    names = made.class_names or (tuple(str(c) for c in classes) if classes else
                                 tuple(str(i) for i in range(num_classes)))
    if len(names) != num_classes:
        raise DataSpecError(f"data factory {name!r}: {len(names)} class names for "
                            f"{num_classes} classes", hint="make them agree")
    return DataBundle(
        spec=spec, train=train, val=val, num_classes=num_classes, class_names=names,
        input_shape=out, native_shape=native, mean=made.mean, std=made.std,  # type: ignore[arg-type]
        n_train=_len_dataset(made.train), n_val=_len_dataset(made.val),
        split=f"loaders from {name}", batch_size=batch_size, seed=seed,
    )


def _len_dataset(loader: Any) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


# --- real images for calibration and export -----------------------------------------------------


def calibration_batches(bundle: DataBundle, n_batches: int = 8, batch_size: int = 32, *,
                        split: Split = "val", seed: int = 0) -> list[Tensor]:
    """``n_batches`` batches of real images (fewer if the split is smaller), chosen by ``seed``.

    For activation-based importance and export checks: real data, never random noise. With
    built-in and on-disk data the choice is a seeded permutation of the split; with a factory
    it is the first images its loader yields.
    """
    if n_batches < 1 or batch_size < 1:
        raise UsageError("calibration needs at least one batch of at least one image",
                         hint="pass n_batches >= 1 and batch_size >= 1")
    wanted = n_batches * batch_size
    dataset = getattr(bundle.loader(split), "dataset", None)
    if isinstance(dataset, T.CachedImageDataset):
        generator = torch.Generator()
        generator.manual_seed(seed)
        order = torch.randperm(len(dataset), generator=generator)[:wanted]
        batches = [dataset.batch(chunk)[0] for chunk in order.split(batch_size)]
    else:
        images = _take_images(bundle.loader(split), wanted)
        batches = list(images.split(batch_size))
    if not batches:
        raise DataSpecError(f"the {split} split of {bundle.spec} has no images",
                            hint="use the other split or add images")
    return batches


def example_input(bundle: DataBundle, batch_size: int = 1, *, split: Split = "val") -> Tensor:
    """The first ``batch_size`` images of ``split``, as the model sees them (deterministic)."""
    dataset = getattr(bundle.loader(split), "dataset", None)
    if isinstance(dataset, T.CachedImageDataset):
        images = dataset.batch(list(range(min(batch_size, len(dataset)))))[0]
    else:
        images = _take_images(bundle.loader(split), batch_size)
    if len(images) < batch_size:
        raise DataSpecError(f"the {split} split of {bundle.spec} has only {len(images)} images, "
                            f"fewer than the {batch_size} asked for",
                            hint="ask for a smaller batch")
    return images


def _take_images(loader: Any, n: int) -> Tensor:
    taken: list[Tensor] = []
    count = 0
    for images in T.iterate_images(loader):
        taken.append(images[: n - count])
        count += len(taken[-1])
        if count >= n:
            break
    return torch.cat(taken) if taken else torch.empty(0)


