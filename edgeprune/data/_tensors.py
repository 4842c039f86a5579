"""In-memory image tensors: adaptation to a model's input shape, splits, stats and loaders.

Images are held at their native size as ``uint8`` (small and exact); each access turns them into
float, converts channels, resizes with bilinear interpolation and normalises. When the adapted
data set is small (under ``CACHE_LIMIT_BYTES``) it is computed once, on first use, and indexed
from then on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from edgeprune.errors import DataSpecError

CACHE_LIMIT_BYTES = 128 * 2**20
# ITU-R BT.601 luma weights: the usual RGB -> grey conversion (PIL's "L" mode uses them too)
_LUMA = (0.299, 0.587, 0.114)

Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class Pipeline:
    """raw (uint8 or float) N×C×H×W → float N×C'×H'×W', normalised when mean/std are set."""

    scale: float
    in_shape: Shape3
    out_shape: Shape3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __call__(self, raw: Tensor) -> Tensor:
        x = raw.to(torch.float32)
        if self.scale != 1.0:
            x = x * self.scale
        c_in, c_out = x.shape[1], self.out_shape[0]
        if c_out <= c_in:  # shrink channels first, then resize (fewer pixels to move)
            x = resize(convert_channels(x, c_out), self.out_shape[1:])
        else:
            x = resize(x, self.out_shape[1:])
        if self.mean is None or self.std is None:
            return convert_channels(x, c_out).contiguous()
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        shift = -torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1) / std
        if c_in == 1 and c_out > 1:  # broadcasting replicates grey while normalising: one pass
            return torch.addcmul(shift, x, 1.0 / std)
        return torch.addcmul(shift, convert_channels(x, c_out), 1.0 / std)


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of an N×C×H×W float batch; antialiased when shrinking."""
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (h, w):
        return x
    shrink = h < x.shape[-2] or w < x.shape[-1]
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)


def convert_channels(x: Tensor, channels: int) -> Tensor:
    """Grey → C channels by replication; RGB → grey by BT.601 luma; identity otherwise."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return x.expand(-1, channels, -1, -1)
    if c == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    raise DataSpecError(
        f"cannot turn {c}-channel images into {channels} channels",
        hint="pass an input shape with 1 or 3 channels, or bring data with matching channels",
    )


def resolve_shape(native: Shape3, requested: Sequence[int | None] | None) -> Shape3:
    """The model's input shape, with any ``None`` (or a missing request) kept from the data."""
    if requested is None:
        return native
    return tuple(int(r) if r is not None else n for r, n in zip(requested, native, strict=True))  # type: ignore[return-value]


class CachedImageDataset(Dataset):
    """Images and labels in memory; items are ``(image C×H×W float, label int64 scalar)``.

    ``__getitems__`` lets a :class:`DataLoader` fetch a whole batch with one adaptation pass.
    ``num_classes`` is the whole data set's (a split may lack a class); evaluation reads it.
    """

    def __init__(self, raw: Tensor, labels: Tensor, pipeline: Pipeline,
                 num_classes: int | None = None) -> None:
        self.raw = raw
        self.labels = labels.to(torch.int64)
        self.pipeline = pipeline
        self.num_classes = num_classes
        self._ready: Tensor | None = None
        self._cacheable = len(raw) * math.prod(pipeline.out_shape) * 4 <= CACHE_LIMIT_BYTES

    def _adapted(self) -> Tensor | None:
        """All images adapted once, on first use, when they fit the cache budget."""
        if self._ready is None and self._cacheable:
            chunks = [self.pipeline(chunk) for chunk in self.raw.split(4096)]
            self._ready = torch.cat(chunks) if chunks else torch.empty(0, *self.pipeline.out_shape)
        return self._ready

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        ready = self._adapted()
        images = ready[idx] if ready is not None else self.pipeline(self.raw[idx])
        return images, self.labels[idx]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        images, labels = self.batch([int(index)])
        return images[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        images, labels = self.batch(indices)
        return _Batch(images, labels)


class _Batch(list):  # type: ignore[type-arg]
    """Per-sample pairs for any collate function, plus the batch itself for ``collate``."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        super().__init__(zip(images.unbind(0), labels.unbind(0), strict=True))
        self.images = images
        self.labels = labels


def collate(samples: list[Any]) -> Any:
    """Skip re-stacking a batch the dataset built whole (stacking big images is not free)."""
    if isinstance(samples, _Batch):
        return samples.images, samples.labels
    return default_collate(samples)


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int,
                num_workers: int = 0) -> DataLoader:
    """A loader whose shuffle order depends only on ``seed`` (a private generator)."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      generator=generator if shuffle else None, num_workers=num_workers)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded permutation; the first ``round(n * val_fraction)`` go to val.

    Both index arrays come back sorted, so the split is a pure function of labels and seed.
    """
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = round(len(members) * val_fraction)
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def channel_stats(raw: Tensor, scale: float, channels: int | None = None
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``raw * scale``, accumulated in float64.

    ``channels`` converts first (grey → replicated, RGB → luma), at the native resolution:
    the statistics of the images a model sees, without paying for a resize.
    """
    c = channels or raw.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    count = 0
    for chunk in raw.split(2048):
        x = convert_channels(chunk.to(torch.float64) * scale, c)
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if count == 0:
        raise DataSpecError("cannot compute normalisation statistics of an empty training set",
                            hint="add training images")
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def iterate_images(loader: Any) -> Iterator[Tensor]:
    """Images of each batch of any loader yielding ``(images, labels)`` or images."""
    for batch in loader:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch
