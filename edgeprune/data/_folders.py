"""Users' own data on disk: image folders and CIFAR-10 python batches.

Both are read whole into memory as ``uint8`` N×C×H×W arrays; they are meant for the few
thousand to few tens of thousands of images a pruning run fine-tunes and evaluates on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.data._safe_pickle import safe_load
from edgeprune.errors import DataSpecError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                  ".pgm")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RawSplits:
    """Images at a common native size, before normalisation."""

    train_images: np.ndarray  # N×C×H×W uint8
    train_labels: np.ndarray  # N int64
    val_images: np.ndarray | None  # None: the caller splits train itself
    val_labels: np.ndarray | None
    class_names: tuple[str, ...]
    split: str  # how train and val were formed, for reports


# --- image folders ------------------------------------------------------------------------------


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.name)


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and not f.name.startswith(".")
                  and f.suffix.lower() in IMAGE_SUFFIXES)


def _scan(root: Path, classes: Sequence[str] | None) -> tuple[list[str], list[tuple[Path, int]]]:
    dirs = _class_dirs(root)
    if not dirs:
        raise DataSpecError(f"{str(root)!r} has no class folders",
                            hint="lay images out as DIR/<class name>/<image>.png")
    names = [d.name for d in dirs]
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise DataSpecError(f"{str(root)!r} has class folder {unknown[0]!r} that train/ lacks",
                                hint="give train/ and val/ the same class folders")
    index = {n: i for i, n in enumerate(classes if classes is not None else names)}
    items: list[tuple[Path, int]] = []
    for d in dirs:
        files = _image_files(d)
        if not files:
            raise DataSpecError(
                f"class folder {str(d)!r} has no images ({', '.join(IMAGE_SUFFIXES[:4])}, …)",
                hint="add images to it or remove the folder")
        items.extend((f, index[d.name]) for f in files)
    return names, items


def _open(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataSpecError(f"image {str(path)!r} cannot be read ({exc})",
                            hint="remove or replace the file") from None


def _decide_format(items: list[tuple[Path, int]], channels: int | None,
                   size: tuple[int | None, int | None]) -> tuple[str, tuple[int, int]]:
    """PIL mode and (H, W) to load every image at, from the request or the headers."""
    modes: set[str] = set()
    sizes: set[tuple[int, int]] = set()
    if channels is None or None in size:
        for path, _ in items:
            with _open(path) as img:  # headers only: PIL decodes lazily
                modes.add(img.mode)
                sizes.add((img.height, img.width))
    if channels is None:
        channels = 1 if modes <= set(_GREY_MODES) else 3
    if channels not in (1, 3):
        raise DataSpecError(f"image folders load as 1 or 3 channels, not {channels}",
                            hint="pass an input shape with 1 or 3 channels")
    if None in size:
        if len(sizes) != 1:
            a, b = sorted(sizes)[:2]
            raise DataSpecError(
                f"images have different sizes (e.g. {a[0]}×{a[1]} and {b[0]}×{b[1]})",
                hint="pass input_shape=(C, H, W) (CLI: --input-shape 3,224,224) to resize them")
        only = next(iter(sizes))
        size = (size[0] or only[0], size[1] or only[1])
    return ("L" if channels == 1 else "RGB"), (int(size[0]), int(size[1]))  # type: ignore[arg-type]


def _read_images(items: list[tuple[Path, int]], mode: str, hw: tuple[int, int],
                 progress: Progress | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    c = 1 if mode == "L" else 3
    out = np.empty((len(items), c, *hw), dtype=np.uint8)
    labels = np.empty(len(items), dtype=np.int64)
    for i, (path, label) in enumerate(items):
        with _open(path) as img:
            try:
                img = img.convert(mode)
                if (img.height, img.width) != hw:
                    img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(img, dtype=np.uint8)
            except (OSError, ValueError) as exc:
                raise DataSpecError(f"image {str(path)!r} cannot be decoded ({exc})",
                                    hint="remove or replace the file") from None
        out[i] = pixels[None] if c == 1 else pixels.transpose(2, 0, 1)
        labels[i] = label
        if progress and (i + 1) % 500 == 0:
            progress({"stage": "data", "done": i + 1, "total": len(items),
                      "message": f"{what}: read {i + 1}/{len(items)} images"})
    return out, labels


def read_imagefolder(root: Path, *, channels: int | None, size: tuple[int | None, int | None],
                     progress: Progress | None = None) -> RawSplits:
    """``root/train`` + ``root/val`` class folders, or one pool of class folders to split."""
    if not root.is_dir():
        raise DataSpecError(f"image folder {str(root)!r} does not exist",
                            hint="check the path; it should hold train/ and val/ class folders")
    train_dir, val_dir = root / "train", root / "val"
    if train_dir.is_dir() != val_dir.is_dir():
        have, lack = ("train", "val") if train_dir.is_dir() else ("val", "train")
        raise DataSpecError(f"image folder {str(root)!r} has {have}/ but no {lack}/",
                            hint=f"add {lack}/ with the same class folders, or drop {have}/ "
                            "and put the class folders in the root to split them automatically")
    if train_dir.is_dir():
        names, train_items = _scan(train_dir, None)
        _, val_items = _scan(val_dir, names)
        mode, hw = _decide_format(train_items + val_items, channels, size)
        x_train, y_train = _read_images(train_items, mode, hw, progress, "train")
        x_val, y_val = _read_images(val_items, mode, hw, progress, "val")
        return RawSplits(x_train, y_train, x_val, y_val, tuple(names), "train/ and val/ folders")
    names, items = _scan(root, None)
    mode, hw = _decide_format(items, channels, size)
    x, y = _read_images(items, mode, hw, progress, "images")
    return RawSplits(x, y, None, None, tuple(names), "")


# --- CIFAR-10 python batches --------------------------------------------------------------------


def _field(batch: dict[Any, Any], key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    return None


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    what = f"CIFAR batch {str(path)!r}"
    batch = safe_load(path, what=what)
    if not isinstance(batch, dict):
        raise DataSpecError(f"{what} holds a {type(batch).__name__}, not a dict",
                            hint="CIFAR-10 python batches are dicts with b'data' and b'labels'")
    data, labels = _field(batch, "data"), _field(batch, "labels")
    if labels is None and _field(batch, "fine_labels") is not None:
        raise DataSpecError(f"{what} looks like CIFAR-100 (fine_labels)",
                            hint="only CIFAR-10 batches are supported; use a factory for others")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataSpecError(f"{what}: b'data' must be a uint8 array of shape N×3072, got {got}",
                            hint="re-create the batch in the CIFAR-10 python format")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        y = np.empty(0)
    if labels is None or y.shape != (len(data),) or (len(y) and (y.min() < 0 or
                                                                  y.max() >= num_classes)):
        raise DataSpecError(
            f"{what}: b'labels' must be {len(data)} integers in 0..{num_classes - 1}",
            hint="re-create the batch in the CIFAR-10 python format")
    return data.reshape(-1, 3, 32, 32), y


def _batch_number(path: Path) -> int:
    match = re.fullmatch(r"data_batch_(\d+)", path.name)
    return int(match.group(1)) if match else -1


def read_cifar10(root: Path, progress: Progress | None = None) -> RawSplits:
    """``data_batch_*`` are the training set, ``test_batch`` is val; names from batches.meta."""
    if not root.is_dir():
        raise DataSpecError(f"CIFAR-10 folder {str(root)!r} does not exist",
                            hint="point at the extracted cifar-10-batches-py folder")
    train_files = sorted((p for p in root.glob("data_batch_*") if _batch_number(p) >= 0),
                         key=_batch_number)
    test_file = root / "test_batch"
    if not train_files or not test_file.is_file():
        missing = "data_batch_1..5" if not train_files else "test_batch"
        raise DataSpecError(f"CIFAR-10 folder {str(root)!r} has no {missing}",
                            hint="point at the extracted cifar-10-batches-py folder")
    names = CIFAR10_CLASSES
    meta_file = root / "batches.meta"
    if meta_file.is_file():
        meta = safe_load(meta_file, what=f"CIFAR meta file {str(meta_file)!r}")
        raw_names = _field(meta, "label_names") if isinstance(meta, dict) else None
        if not isinstance(raw_names, list) or not raw_names or not all(
                isinstance(n, (bytes, str)) for n in raw_names):
            raise DataSpecError(f"{str(meta_file)!r} has no b'label_names' list",
                                hint="re-create batches.meta or remove it to use the "
                                "CIFAR-10 class names")
        names = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n
                      for n in raw_names)
    parts = []
    for path in train_files:
        parts.append(_read_batch(path, len(names)))
        if progress:
            progress({"stage": "data", "message": f"read {path.name}"})
    x_val, y_val = _read_batch(test_file, len(names))
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    split = f"train: {', '.join(p.name for p in train_files)}; val: test_batch"
    return RawSplits(x_train, y_train, x_val, y_val, names, split)
