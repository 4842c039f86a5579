"""Export PyTorch models to TFLite, checked against PyTorch in ai-edge-litert.

litert-torch (an optional extra, ~1.2 GB with jax and the MLIR converter) converts through
torch.export to a .tflite flatbuffer; no TensorFlow. The written model is re-run in
ai-edge-litert's ``Interpreter`` and compared with PyTorch by
:func:`edgeprune.artifacts.parity.compare_outputs`, as ONNX is, and written atomically once it
matches; see docs/tflite.md.

litert-torch is chatty on every channel: a rich console on sys.stdout, Python logging (torch,
absl, torchao), warnings, and C++ logs (absl, the MLIR converter, the XNNPACK delegate) written
straight to file descriptors 1 and 2. :func:`edgeprune.artifacts._quiet.quiet` contains all of
it for the duration of the conversion and of the check, then puts it back.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune._io import atomic_write_bytes, check_writable
from edgeprune.artifacts._quiet import first_line, quiet
from edgeprune.artifacts.files import size_on_disk
from edgeprune.artifacts.onnx_export import TORCH_EXPORT_LOCK, ExportResult, Progress
from edgeprune.artifacts.parity import (
    Batch,
    Comparison,
    check_batches,
    check_tolerances,
    compare_outputs,
    tiny_output_note,
)
from edgeprune.errors import ExportError, OutputExistsError, UsageError
from edgeprune.models.cost import Inputs, as_input_tuple

__all__ = ["TFLITE_EXTRA_HINT", "export_tflite", "require_tflite_extra"]

TFLITE_EXTRA_HINT = "pip install 'edgeprune[tflite]'"
_LOG_ROOTS = ("torch", "litert_torch", "absl", "torchao", "jax", "ai_edge_litert")
_SIGNATURE = "serving_default"
_QUIET_ENV = {"LITERT_TORCH_SHOW_PROGRESS": "0"}  # litert-torch's progress display, read per task


def export_tflite(
    model: nn.Module,
    example_inputs: Inputs,
    path: str | os.PathLike[str],
    *,
    check_inputs: Inputs | None = None,
    channels_last: bool = False,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    force: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Convert ``model`` to a .tflite file at ``path`` with litert-torch and check it.

    The optional extra ``pip install 'edgeprune[tflite]'`` (litert-torch, ai-edge-litert) must be
    installed. Shapes are static, those of ``example_inputs``; inputs stay NCHW (what the model
    takes) unless ``channels_last``, which makes every rank >= 3 input channel-last (NHWC) in
    the .tflite. ``check_inputs`` are real inputs in the same (NCHW) form whose batch is a
    multiple of the exported batch (default: ``example_inputs``); the written model is run in
    ai-edge-litert's ``Interpreter`` on them and must match PyTorch within
    ``atol + rtol·|output|``. The file is written atomically and only after the check passed.

    Raises :class:`ExportError` (extra missing, conversion failed), :class:`OutputExistsError`
    (exists, no ``force``) and :class:`ParityError` (outputs differ beyond tolerance).
    """
    require_tflite_extra()
    check_tolerances(rtol, atol)
    emit = progress or (lambda event: None)
    target = Path(path)
    inputs = as_input_tuple(example_inputs)
    batches = check_batches(inputs, check_inputs, dynamic_batch=False)
    if channels_last and not any(t.ndim >= 3 for t in inputs):
        raise UsageError(
            "channels_last needs an input of rank >= 3 (N, C, ...)",
            hint="drop channels_last for this model",
        )
    check_writable(target, force=force, what="TFLite output", kind="file")

    was_training = model.training
    model.eval()
    try:
        emit({"stage": "export", "message": "converting with litert-torch (7–15 s a model)"})
        content, notes = _convert(model, inputs, channels_last)
        emit({"stage": "verify", "message": "comparing ai-edge-litert with PyTorch"})
        with _quiet() as check:
            comparison, io_info = _compare(
                content, model, batches, channels_last, rtol=rtol, atol=atol
            )
        notes.extend(n for n in check.notes if n not in notes)
    finally:
        model.train(was_training)
    weak = tiny_output_note(comparison, atol)
    if weak:
        notes.append(weak)
    if target.exists() and not force:  # pragma: no cover - checked above; a race lands here
        raise OutputExistsError(f"TFLite output {str(target)!r} exists already")
    atomic_write_bytes(target, content)
    return ExportResult(
        path=str(target),
        files=(str(target),),
        opset=0,
        exporter="litert-torch",
        max_abs_diff=comparison.max_abs_diff,
        max_abs_output=comparison.max_abs_output,
        rtol=rtol,
        atol=atol,
        size_bytes=size_on_disk(target),
        input_names=io_info.input_names,
        output_names=io_info.output_names,
        input_shapes=io_info.input_shapes,
        output_shapes=io_info.output_shapes,
        onnxruntime_version="",
        torch_version=torch.__version__,
        checked_batches=len(batches),
        format="tflite",
        notes=tuple(notes),
        litert_torch_version=_dist_version("litert-torch"),
        ai_edge_litert_version=_dist_version("ai-edge-litert"),
        channels_last=channels_last,
    )


def _quiet() -> Any:
    """litert-torch's progress display off, Python output captured, fds 1 and 2 parked."""
    return quiet(_LOG_ROOTS, fds=True, env=_QUIET_ENV)


def require_tflite_extra() -> None:
    """Fail with the one-line install hint unless both packages of the extra are importable."""
    import importlib.util

    missing = [
        dist
        for module, dist in (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert"))
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ExportError(
            f"TFLite export needs the optional extra: {TFLITE_EXTRA_HINT} "
            f"({', '.join(missing)} not installed)",
            hint="or export ONNX with --format onnx",
        )


def _dist_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # pragma: no cover - imported, so installed
        return "unknown"


def _convert(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], channels_last: bool
) -> tuple[bytes, list[str]]:
    """The .tflite flatbuffer of ``model`` traced at ``inputs`` (NCHW) and litert-torch's notes."""
    try:
        with _quiet():  # importing it is noisy too (torchao, triton); not about this model
            import litert_torch
    except Exception as exc:  # installed but broken (a missing shared library, a bad pin)
        raise ExportError(
            f"litert-torch is installed but cannot be imported: {first_line(exc)}",
            hint=f"reinstall the extra: {TFLITE_EXTRA_HINT}",
        ) from exc
    with _quiet() as captured, TORCH_EXPORT_LOCK:  # litert-torch traces with torch.export
        try:
            module: nn.Module = model
            sample = inputs
            if channels_last:
                layout = [i for i, t in enumerate(inputs) if t.ndim >= 3]
                module = litert_torch.to_channel_last_io(model, args=layout).eval()
                sample = tuple(_nhwc(t) if t.ndim >= 3 else t for t in inputs)
            with torch.no_grad():
                edge_model = litert_torch.convert(module, sample)
            content = edge_model.model_content()
        except ExportError:
            raise
        except Exception as exc:  # any converter failure, reported in one line
            raise ExportError(
                f"TFLite conversion with litert-torch failed: {first_line(exc)}",
                hint="set EDGEPRUNE_DEBUG=1 for the traceback; data-dependent control flow and "
                "operators without a TFLite lowering are the usual causes (ONNX may still work)",
            ) from exc
    if not content:
        raise ExportError("litert-torch returned an empty model", hint="report it with the model")
    return bytes(content), captured.notes


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, *range(2, t.ndim), 1).contiguous()


@dataclass(frozen=True)
class _TFLiteIO:
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]


def _compare(
    content: bytes,
    model: nn.Module,
    batches: list[Batch],
    channels_last: bool,
    *,
    rtol: float,
    atol: float,
) -> tuple[Comparison, _TFLiteIO]:
    """Run the flatbuffer in ai-edge-litert's Interpreter (1 thread, default XNNPACK delegate,
    as a device runs it) and PyTorch on every batch; raise :class:`ParityError` on a mismatch."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=content, num_threads=1)
        runner = interpreter.get_signature_runner(_SIGNATURE)
    except Exception as exc:
        raise ExportError(
            f"ai-edge-litert cannot load the converted model: {first_line(exc)}",
            hint="the model uses an operator this runtime lacks; export ONNX instead",
        ) from exc
    in_details = runner.get_input_details()
    out_details = runner.get_output_details()
    in_names = sorted(in_details, key=_signature_order)
    out_names = sorted(out_details, key=_signature_order)

    def run(tensors: Batch) -> list[Any]:
        feed = {}
        for name, t in zip(in_names, tensors, strict=False):
            value = _nhwc(t) if channels_last and t.ndim >= 3 else t
            feed[name] = value.detach().cpu().numpy().astype(in_details[name]["dtype"])
        try:
            result = runner(**feed)
        except Exception as exc:
            raise ExportError(
                f"ai-edge-litert failed to run the converted model: {first_line(exc)}",
                hint="export ONNX instead and report the model",
            ) from exc
        return [np.asarray(result[name]) for name in out_names]

    comparison = compare_outputs(
        run, model, batches, rtol=rtol, atol=atol, fmt="TFLite", runtime="ai-edge-litert",
        shape_hint="outputs stay in PyTorch's layout; re-export the model",
    )
    io_info = _TFLiteIO(
        input_names=tuple(in_names),
        output_names=tuple(out_names),
        input_shapes=tuple(tuple(int(d) for d in in_details[n]["shape"]) for n in in_names),
        output_shapes=tuple(tuple(int(d) for d in out_details[n]["shape"]) for n in out_names),
    )
    return comparison, io_info


def _signature_order(name: str) -> tuple[int, str]:
    """litert-torch names signature tensors ``args_0``, ``args_1`` … and ``output_0`` …"""
    digits = re.search(r"(\d+)$", name)
    return (int(digits.group(1)) if digits else 0, name)
