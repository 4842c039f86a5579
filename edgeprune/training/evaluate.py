"""Accuracy and loss of a classifier over a loader: the number every pruning decision is judged by.

Deterministic (fixed loader order, no dropout: the model is put in eval mode for the pass and
given back in the mode it came in), gradient-free (``torch.inference_mode``), and with integer
counts so the same model and data always give the same figures.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeprune._signals import raise_if_interrupted
from edgeprune.errors import EvaluationError
from edgeprune.training.threads import torch_threads

Progress = Callable[[dict[str, Any]], None]

PROGRESS_INTERVAL_S = 1.0



@dataclass(frozen=True)
class EvalResult:
    """Fractions in [0, 1]; ``top5`` is ``None`` unless the data has more than 5 classes (and
    the model more than 5 outputs). ``num_classes`` is the model's number of outputs;
    ``data_num_classes`` the data's classes, when known."""

    top1: float
    top5: float | None
    loss: float  # mean cross-entropy per sample
    n_samples: int
    n_batches: int
    num_classes: int
    data_num_classes: int | None = None

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
    num_classes: int | None = None,
) -> EvalResult:
    """Top-1 / top-5 accuracy and mean cross-entropy of ``model`` over ``loader``.

    ``num_classes`` is the data's number of classes (default: ``loader.dataset.num_classes``
    or ``len(loader.dataset.classes)`` when the loader's data set says, as a DataBundle's
    does). With fewer classes than the model has outputs a warning says so, and top-5 is only
    reported for data with more than 5 classes. Non-finite outputs or loss raise
    :class:`EvaluationError` instead of reaching the result.

    ``loader`` yields ``(images, labels)`` batches (a :class:`DataBundle`'s ``val`` or
    ``train``, or any DataLoader). The model is moved to ``device`` (``nn.Module.to`` works in
    place). ``num_threads`` sets torch's intra-op threads for the pass and restores them after;
    by default the caller's setting is left alone. ``progress`` receives ``{"stage":
    "evaluate", ...}`` events at the start, about once a second, and at the end.
    """
    device = torch.device(device)
    was_training = model.training
    if num_threads is not None and num_threads < 1:
        raise EvaluationError("num_threads must be at least 1", hint="pass e.g. 2")
    total = _len_or_none(loader, max_batches)
    if progress:
        progress({"stage": "evaluate", "event": "start", "n_batches": total,
                  "message": "evaluating" + (f" {total} batches" if total else "")})
    counts = _Counts(num_classes if num_classes is not None else data_classes(loader))
    try:
        model.to(device).eval()
        last = time.monotonic()
        with torch.inference_mode(), torch_threads(num_threads):
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
    if counts.n_samples == 0:
        raise EvaluationError("the loader yielded no images", hint="evaluate on a non-empty split")
    result = counts.result()
    _warn_unused_outputs(result)
    if progress:
        progress(counts.event("done", total) | {
            "message": f"top-1 {result.top1:.2%} on {result.n_samples} images"})
    return result


def data_classes(loader: Iterable[Any]) -> int | None:
    """The number of classes ``loader``'s data set declares (None when it does not say)."""
    dataset = getattr(loader, "dataset", None)
    declared = getattr(dataset, "num_classes", None)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
        return declared
    classes = getattr(dataset, "classes", None)
    return len(classes) if isinstance(classes, (list, tuple)) and classes else None


def _warn_unused_outputs(result: EvalResult) -> None:
    data, outputs = result.data_num_classes, result.num_classes
    if data is None or data >= outputs:
        return
    warnings.warn(
        f"the model has {outputs} outputs but the data has {data} classes: accuracy counts only "
        f"the data's classes, matched by index (class i = output i), and a prediction of outputs "
        f"{data}..{outputs - 1} as wrong — check that the data's classes are the model's first "
        f"{data}, in order" + ("" if data > 5 else "; top-5 is not reported"),
        UserWarning, stacklevel=2)


class _Counts:
    def __init__(self, data_classes: int | None = None) -> None:
        self.n_samples = 0
        self.n_batches = 0
        self.correct1 = 0
        self.correct5 = 0
        self.loss_sum = 0.0
        self.num_classes = 0
        self.data_classes = data_classes

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
        if not bool(torch.isfinite(logits).all()):
            raise EvaluationError(
                f"the model returned NaN or infinite outputs for batch {self.n_batches + 1}",
                hint="check the model's weights and the input normalisation (constant images "
                "normalised by their own std of 0 give NaN)")
        self.num_classes = classes
        self.loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        hit1 = logits.argmax(dim=1) == labels
        self.correct1 += int(hit1.sum())
        if self._with_top5():
            top5 = logits.topk(5, dim=1).indices
            # with tied logits topk may leave out argmax's pick: a top-1 hit is a top-5 hit
            self.correct5 += int(((top5 == labels[:, None]).any(dim=1) | hit1).sum())
        self.n_samples += labels.shape[0]
        self.n_batches += 1

    def _with_top5(self) -> bool:
        return self.num_classes > 5 and (self.data_classes is None or self.data_classes > 5)

    def result(self) -> EvalResult:
        n = self.n_samples
        loss = self.loss_sum / n
        if not math.isfinite(loss):
            raise EvaluationError(f"the mean cross-entropy over {n} images is {loss}",
                                  hint="check the model's weights and the input normalisation")
        return EvalResult(
            top1=self.correct1 / n,
            top5=self.correct5 / n if self._with_top5() else None,
            loss=loss,
            n_samples=n,
            n_batches=self.n_batches,
            num_classes=self.num_classes,
            data_num_classes=self.data_classes,
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


def first_batch(loader: Iterable[Any]) -> Tensor | None:
    """The images of ``loader``'s first batch (None when it yields nothing)."""
    for batch in loader:
        return _unpack(batch)[0]
    return None


def _forward(model: nn.Module, images: Tensor, index: int) -> Tensor:
    return model(images) if index > 0 else forward_checked(model, images)


def forward_checked(model: nn.Module, images: Tensor) -> Tensor:
    """``model(images)``; a model that rejects the images raises one line saying so."""
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
