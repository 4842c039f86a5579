"""Accuracy and loss of a classifier over a loader: the number every pruning decision is judged by.

Deterministic (fixed loader order, no dropout: the model is put in eval mode for the pass and
given back in the mode it came in), gradient-free (``torch.inference_mode``), and with integer
counts so the same model and data always give the same figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeprune._signals import raise_if_interrupted
from edgeprune.errors import EdgepruneError

Progress = Callable[[dict[str, Any]], None]

PROGRESS_INTERVAL_S = 1.0


class EvaluationError(EdgepruneError, ValueError):
    """The model and the data do not fit together (shapes, number of classes)."""


@dataclass(frozen=True)
class EvalResult:
    """Fractions in [0, 1]; ``top5`` is ``None`` when the model has 5 or fewer classes."""

    top1: float
    top5: float | None
    loss: float  # mean cross-entropy per sample
    n_samples: int
    n_batches: int
    num_classes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    num_threads: int | None = None,
    max_batches: int | None = None,
) -> EvalResult:
    """Top-1 / top-5 accuracy and mean cross-entropy of ``model`` over ``loader``.

    ``loader`` yields ``(images, labels)`` batches (a :class:`DataBundle`'s ``val`` or
    ``train``, or any DataLoader). The model is moved to ``device`` (``nn.Module.to`` works in
    place). ``num_threads`` sets torch's intra-op threads for the pass and restores them after;
    by default the caller's setting is left alone. ``progress`` receives ``{"stage":
    "evaluate", ...}`` events at the start, about once a second, and at the end.
    """
    device = torch.device(device)
    was_training = model.training
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        if num_threads < 1:
            raise EvaluationError("num_threads must be at least 1", hint="pass e.g. 2")
        torch.set_num_threads(num_threads)
    total = _len_or_none(loader, max_batches)
    if progress:
        progress({"stage": "evaluate", "event": "start", "n_batches": total,
                  "message": "evaluating" + (f" {total} batches" if total else "")})
    counts = _Counts()
    try:
        model.to(device).eval()
        last = time.monotonic()
        with torch.inference_mode():
            for index, batch in enumerate(loader):
                if max_batches is not None and index >= max_batches:
                    break
                raise_if_interrupted()
                images, labels = _unpack(batch)
                logits = _forward(model, images.to(device), index)
                counts.add(logits, labels.to(device))
                if progress and time.monotonic() - last >= PROGRESS_INTERVAL_S:
                    last = time.monotonic()
                    progress(counts.event("batch", total))
    finally:
        model.train(was_training)
        if num_threads is not None:
            torch.set_num_threads(previous_threads)
    if counts.n_samples == 0:
        raise EvaluationError("the loader yielded no images", hint="evaluate on a non-empty split")
    result = counts.result()
    if progress:
        progress(counts.event("done", total) | {
            "message": f"top-1 {result.top1:.2%} on {result.n_samples} images"})
    return result


class _Counts:
    def __init__(self) -> None:
        self.n_samples = 0
        self.n_batches = 0
        self.correct1 = 0
        self.correct5 = 0
        self.loss_sum = 0.0
        self.num_classes = 0

    def add(self, logits: Tensor, labels: Tensor) -> None:
        if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
            raise EvaluationError(
                f"the model returned shape {tuple(logits.shape)} for a batch of "
                f"{labels.shape[0]} images; expected (batch, classes)",
                hint="evaluate a classifier that returns one row of logits per image")
        classes = logits.shape[1]
        labels = labels.to(torch.int64)
        if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
            raise EvaluationError(
                f"the data has label {int(labels.max())} but the model has {classes} outputs",
                hint="pair the model with data that has as many classes as the model outputs")
        self.num_classes = classes
        self.loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        self.correct1 += int((logits.argmax(dim=1) == labels).sum())
        if classes > 5:
            top5 = logits.topk(5, dim=1).indices
            self.correct5 += int((top5 == labels[:, None]).any(dim=1).sum())
        self.n_samples += labels.shape[0]
        self.n_batches += 1

    def result(self) -> EvalResult:
        n = self.n_samples
        return EvalResult(
            top1=self.correct1 / n,
            top5=self.correct5 / n if self.num_classes > 5 else None,
            loss=self.loss_sum / n,
            n_samples=n,
            n_batches=self.n_batches,
            num_classes=self.num_classes,
        )

    def event(self, kind: str, total: int | None) -> dict[str, Any]:
        top1 = self.correct1 / self.n_samples if self.n_samples else 0.0
        of = f"/{total}" if total else ""
        return {"stage": "evaluate", "event": kind, "batch": self.n_batches, "n_batches": total,
                "n_samples": self.n_samples, "top1": top1,
                "message": f"evaluated {self.n_batches}{of} batches, top-1 so far {top1:.2%}"}


def _unpack(batch: Any) -> tuple[Tensor, Tensor]:
    if (isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], Tensor)
            and isinstance(batch[1], Tensor)):
        return batch[0], batch[1]
    raise EvaluationError("the loader must yield (images, labels) tensor pairs",
                          hint="use a DataBundle's loader or a DataLoader over (image, label)")


def _forward(model: nn.Module, images: Tensor, index: int) -> Tensor:
    if index > 0:
        return model(images)
    try:  # the first batch tells whether model and data fit; say so in one line
        return model(images)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvaluationError(
            f"the model rejects images of shape {tuple(images.shape[1:])}: {first}",
            hint="load the data at the model's input shape (input_shape=(C, H, W); "
            "CLI: --input-shape C,H,W)") from exc


def _len_or_none(loader: Iterable[Any], max_batches: int | None) -> int | None:
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return max_batches
    return min(n, max_batches) if max_batches is not None else n
