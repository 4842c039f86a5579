"""Export PyTorch models to ONNX, each artifact checked against PyTorch.

The only module that calls ``torch.onnx.export``. What torch 2.13 does, and what we do about it:

- The default exporter is *dynamo* (``torch.export`` → ONNX, opset 18+, default 20). It cannot
  export data-dependent Python control flow, and for a requested opset below 18 it silently
  keeps 18 after a failed down-conversion. ``exporter="auto"`` therefore tries dynamo and falls
  back to the legacy TorchScript exporter (recording why in ``notes``); it goes straight to
  TorchScript for opsets below 18. The opset in the written file is always read back and must
  be the one requested.
- Dynamo writes weights to ``<name>.data`` beside the ``.onnx`` by default; TorchScript writes one
  file (and per-tensor files above 2 GB). We choose the layout ourselves: one self-contained
  file when it fits under protobuf's 2 GB limit (easiest to copy to a device), else one
  ``<name>.data`` file. ``ExportResult.files`` lists every file of the artifact either way.
- Every export is checked by ``onnx.checker`` (path form, so external data is seen) and re-run
  in onnxruntime on real inputs; outputs must match PyTorch within ``atol + rtol·|ref|``.
- Writes are atomic: the artifact is built in a temporary directory beside the target and only
  moved into place once it passed every check; the ``.onnx`` file is moved last.
- The exporters' output (progress prints, their loggers, warnings) is captured by
  :mod:`edgeprune.artifacts._quiet` and kept as notes, safely when several threads export.

TFLite is :mod:`edgeprune.artifacts.tflite`; the comparison both use is
:mod:`edgeprune.artifacts.parity`; ``ExportResult`` describes either artifact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune._io import check_writable
from edgeprune.artifacts._quiet import first_line, quiet
from edgeprune.artifacts.files import declared_external_data, size_on_disk
from edgeprune.artifacts.parity import (
    Comparison,
    check_batches,
    check_tolerances,
    compare_outputs,
    flatten_outputs,
    tiny_output_note,
)
from edgeprune.errors import ExportError, OutputExistsError, UsageError
from edgeprune.models.cost import Inputs, as_input_tuple

__all__ = [
    "EXPORTERS",
    "TORCH_EXPORT_LOCK",
    "ExportResult",
    "Progress",
    "export_onnx",
    "load_onnx_session",
    "verify_onnx",
]

EXPORTERS = ("auto", "dynamo", "torchscript")
DYNAMO_MIN_OPSET = 18
# protobuf refuses messages of 2 GiB; keep headroom for the graph itself
_SINGLE_FILE_LIMIT_BYTES = 2**31 - 64 * 2**20
_LOG_ROOTS = ("torch", "onnxscript", "onnx_ir", "onnx")
# torch.export / dynamo tracing is not thread-safe (two threads tracing at once see each other's
# side effects): exporters run one at a time, everything around them (checks, parity) in parallel
TORCH_EXPORT_LOCK = threading.Lock()

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ExportResult:
    """What was written and how well it matches PyTorch. Shapes hold ints or symbolic names."""

    path: str
    files: tuple[str, ...]
    opset: int
    exporter: str
    max_abs_diff: float
    max_abs_output: float
    rtol: float
    atol: float
    size_bytes: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_shapes: tuple[tuple[int | str, ...], ...]
    output_shapes: tuple[tuple[int | str, ...], ...]
    onnxruntime_version: str
    torch_version: str
    checked_batches: int
    format: str = "onnx"
    notes: tuple[str, ...] = field(default_factory=tuple)
    # TFLite only (format "tflite"; there opset is 0 and onnxruntime_version empty)
    litert_torch_version: str = ""
    ai_edge_litert_version: str = ""
    channels_last: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = self._common_dict()
        if self.format == "tflite":
            for key in ("opset", "onnxruntime_version"):
                del data[key]
            data["channels_last"] = self.channels_last
            data["litert_torch_version"] = self.litert_torch_version
            data["ai_edge_litert_version"] = self.ai_edge_litert_version
        return data

    def _common_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": self.path,
            "files": list(self.files),
            "size_bytes": self.size_bytes,
            "opset": self.opset,
            "exporter": self.exporter,
            "max_abs_diff": self.max_abs_diff,
            "max_abs_output": self.max_abs_output,
            "rtol": self.rtol,
            "atol": self.atol,
            "checked_batches": self.checked_batches,
            "input_names": list(self.input_names),
            "output_names": list(self.output_names),
            "input_shapes": [list(s) for s in self.input_shapes],
            "output_shapes": [list(s) for s in self.output_shapes],
            "onnxruntime_version": self.onnxruntime_version,
            "torch_version": self.torch_version,
            "notes": list(self.notes),
        }


def export_onnx(
    model: nn.Module,
    example_inputs: Inputs,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    dynamic_batch: bool = False,
    external_data: bool | None = None,
    exporter: str = "auto",
    check_inputs: Inputs | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    force: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Export ``model`` to ONNX at ``path``, check it, and compare onnxruntime with PyTorch.

    ``example_inputs`` fix the traced shapes (static unless ``dynamic_batch``). ``check_inputs``
    are real inputs in the same form (default: ``example_inputs``); with static shapes their batch
    may be any multiple of the exported batch and is run in chunks. ``external_data``: ``None``
    writes one self-contained file when the model fits in 2 GB, else ``<name>.data`` beside it;
    ``True`` always writes ``<name>.data``; ``False`` insists on one file.

    Raises :class:`OutputExistsError` (exists, no ``force``), :class:`ExportError` (no exporter
    produced a valid model) and :class:`ParityError` (outputs differ beyond tolerance).
    """
    _validate(opset, exporter, rtol, atol)
    emit = progress or (lambda event: None)
    target = Path(path)
    inputs = as_input_tuple(example_inputs)
    batches = check_batches(inputs, check_inputs, dynamic_batch)
    single = _want_single_file(model, external_data)
    companion = target.with_name(target.name + ".data")
    check_writable(target, force=force, what="ONNX output", kind="file")
    if not single:
        check_writable(companion, force=force, what="ONNX external data file")
    target.parent.mkdir(parents=True, exist_ok=True)

    was_training = model.training
    model.eval()
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        tmp_path = tmpdir / target.name
        used, notes = _export_any(
            model, inputs, tmp_path, opset, dynamic_batch, single, exporter, emit
        )
        emit({"stage": "verify", "message": f"comparing onnxruntime with PyTorch ({used})"})
        comparison = _compare(tmp_path, model, batches, rtol=rtol, atol=atol)
        weak = tiny_output_note(comparison, atol)
        if weak:
            notes.append(weak)
        files = _move_into_place(tmpdir, target, force=force)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        model.train(was_training)
    return _result(target, files, used, comparison, rtol, atol, len(batches), notes)


def _validate(opset: int | None, exporter: str, rtol: float, atol: float) -> None:
    if exporter not in EXPORTERS:
        raise UsageError(
            f"unknown exporter {exporter!r}", hint=f"choose one of {', '.join(EXPORTERS)}"
        )
    if opset is not None and (not isinstance(opset, int) or opset < 7):
        raise UsageError(f"opset {opset!r} is not supported", hint="pass an opset >= 7, e.g. 17")
    if exporter == "dynamo" and opset is not None and opset < DYNAMO_MIN_OPSET:
        raise UsageError(
            f"the dynamo exporter cannot write opset {opset}",
            hint=f"use opset >= {DYNAMO_MIN_OPSET} or exporter='torchscript' (or 'auto')",
        )
    check_tolerances(rtol, atol)


def _want_single_file(model: nn.Module, external_data: bool | None) -> bool:
    if external_data:
        return False
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    fits = weights < _SINGLE_FILE_LIMIT_BYTES
    if external_data is False and not fits:
        raise ExportError(
            f"the model's weights ({weights / 2**30:.2f} GiB) do not fit in one ONNX file",
            hint="allow external data (external_data=True or None)",
        )
    return fits


# --- running the exporters ---------------------------------------------------------------------


def _export_any(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    tmp_path: Path,
    opset: int | None,
    dynamic_batch: bool,
    single: bool,
    exporter: str,
    emit: Progress,
) -> tuple[str, list[str]]:
    """Export with the requested exporter, or dynamo then TorchScript for ``auto``."""
    if exporter != "auto":
        order = [exporter]
    elif opset is not None and opset < DYNAMO_MIN_OPSET:
        order = ["torchscript"]
    else:
        order = ["dynamo", "torchscript"]
    notes: list[str] = []
    if order == ["torchscript"] and exporter == "auto":
        notes.append(f"opset {opset} < {DYNAMO_MIN_OPSET}: used the TorchScript exporter")
    failure: Exception | None = None
    for name in order:
        _clear_dir(tmp_path.parent)
        emit({"stage": "export", "message": f"exporting with the {name} exporter"})
        try:
            captured = _run_exporter(name, model, inputs, tmp_path, opset, dynamic_batch, single)
            _normalise_layout(tmp_path, single)
            _check_model(tmp_path, opset)
        except Exception as exc:  # any exporter failure: try the next one or report it
            failure = exc
            if name != order[-1]:
                notes.append(f"{name} exporter failed ({first_line(exc)}); fell back")
            continue
        notes.extend(captured)
        return name, notes
    assert failure is not None
    if isinstance(failure, ExportError):
        raise failure
    raise ExportError(
        f"ONNX export with the {order[-1]} exporter failed: {first_line(failure)}",
        hint="set EDGEPRUNE_DEBUG=1 for the traceback; data-dependent control flow and "
        "unsupported operators are the usual causes",
    ) from failure


def _run_exporter(
    name: str,
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    tmp_path: Path,
    opset: int | None,
    dynamic_batch: bool,
    single: bool,
) -> list[str]:
    input_names = _io_names("input", len(inputs))
    with torch.no_grad():
        n_outputs = len(flatten_outputs(model(*inputs)))
    kwargs: dict[str, Any] = {
        "input_names": input_names,
        "output_names": _io_names("output", n_outputs),
        "verbose": False,
    }
    if opset is not None:
        kwargs["opset_version"] = opset
    with quiet(_LOG_ROOTS) as captured, TORCH_EXPORT_LOCK:
        if name == "dynamo":
            if dynamic_batch:
                batch = torch.export.Dim("batch", min=1)
                kwargs["dynamic_shapes"] = tuple({0: batch} for _ in inputs)
            program = torch.onnx.export(model, inputs, None, dynamo=True, **kwargs)
            if program is None:  # pragma: no cover - torch returns the program when f is None
                raise ExportError("the dynamo exporter returned nothing")
            program.save(str(tmp_path), external_data=not single)
        else:
            if dynamic_batch:
                kwargs["dynamic_axes"] = {n: {0: "batch"} for n in input_names}
            torch.onnx.export(model, inputs, str(tmp_path), dynamo=False, **kwargs)
    return captured.notes


def _io_names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


def _clear_dir(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# --- layout, checking, moving ------------------------------------------------------------------


def _normalise_layout(tmp_path: Path, single: bool) -> None:
    """Rewrite the exported files as one file, or as ``<name>`` + ``<name>.data``."""
    import onnx

    files = sorted(p.name for p in tmp_path.parent.iterdir())
    wanted = [tmp_path.name] if single else sorted([tmp_path.name, tmp_path.name + ".data"])
    if files == wanted:
        return
    proto = onnx.load(str(tmp_path), load_external_data=True)
    _clear_dir(tmp_path.parent)
    if single:
        onnx.save_model(proto, str(tmp_path), save_as_external_data=False)
    else:
        onnx.save_model(
            proto,
            str(tmp_path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=tmp_path.name + ".data",
            size_threshold=0,
        )


def _check_model(tmp_path: Path, opset: int | None) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(tmp_path))
    except onnx.checker.ValidationError as exc:
        raise ExportError(
            f"the exported model fails onnx.checker: {first_line(exc)}",
            hint="try another exporter or opset (--opset)",
        ) from exc
    written = _read_opset(tmp_path)
    if opset is not None and written != opset:
        raise ExportError(
            f"opset {opset} was requested but the exporter wrote opset {written}",
            hint="use another opset or exporter",
        )


def _read_opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _move_into_place(tmpdir: Path, target: Path, *, force: bool) -> list[Path]:
    """Move the artifact's files beside ``target`` (the .onnx last) and drop stale companions."""
    new = sorted((p for p in tmpdir.iterdir() if p.is_file()), key=lambda p: p.name == target.name)
    destinations = [target.with_name(p.name) for p in new]
    stale: list[Path] = []
    if target.exists():
        if not force:  # pragma: no cover - checked before exporting; a race would land here
            raise OutputExistsError(f"ONNX output {str(target)!r} exists already")
        with contextlib.suppress(Exception):
            old = [target.parent / name for name in declared_external_data(target)]
            # only the replaced artifact's own companions: same directory, not rewritten now
            stale = [p for p in old if p.parent == target.parent and p not in destinations]
    for src, dst in zip(new, destinations, strict=True):
        os.replace(src, dst)
    for path in stale:
        path.unlink(missing_ok=True)
    return destinations[::-1]  # the .onnx first


def _shape(value_info: Any) -> tuple[int | str, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in dims)


def _result(
    target: Path,
    files: list[Path],
    exporter: str,
    comparison: Comparison,
    rtol: float,
    atol: float,
    checked: int,
    notes: list[str],
) -> ExportResult:
    import onnx
    import onnxruntime

    proto = onnx.load(str(target), load_external_data=False)
    initializers = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    return ExportResult(
        path=str(target),
        files=tuple(str(f) for f in files),
        opset=_read_opset(target),
        exporter=exporter,
        max_abs_diff=comparison.max_abs_diff,
        max_abs_output=comparison.max_abs_output,
        rtol=rtol,
        atol=atol,
        size_bytes=size_on_disk(target),
        input_names=tuple(i.name for i in graph_inputs),
        output_names=tuple(o.name for o in proto.graph.output),
        input_shapes=tuple(_shape(i) for i in graph_inputs),
        output_shapes=tuple(_shape(o) for o in proto.graph.output),
        onnxruntime_version=onnxruntime.__version__,
        torch_version=torch.__version__,
        checked_batches=checked,
        notes=tuple(notes),
    )


# --- running and comparing ---------------------------------------------------------------------


def load_onnx_session(path: str | os.PathLike[str], threads: int = 1) -> Any:
    """An onnxruntime CPU session with fixed thread counts (external data is found by path)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ExportError(
            f"onnxruntime cannot load {str(path)!r}: {first_line(exc)}",
            hint="re-export the model; check that its .data file sits beside it",
        ) from exc


def verify_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    check_inputs: Inputs | Sequence[Inputs],
    *,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> float:
    """Run ``path`` in onnxruntime and ``model`` in PyTorch on the same inputs.

    ``check_inputs`` is one set of inputs (a tensor or a tuple of tensors) or a list of such
    sets. Returns the largest absolute difference over every output; raises
    :class:`ParityError` when any element differs by more than ``atol + rtol·|pytorch|``.
    """
    return _compare(path, model, check_inputs, rtol=rtol, atol=atol).max_abs_diff


def _compare(
    path: str | os.PathLike[str],
    model: nn.Module,
    check_inputs: Inputs | Sequence[Inputs],
    *,
    rtol: float,
    atol: float,
) -> Comparison:
    sets = check_inputs if isinstance(check_inputs, list) else [check_inputs]
    session = load_onnx_session(path)
    names = [i.name for i in session.get_inputs()]

    def run(tensors: tuple[torch.Tensor, ...]) -> list[Any]:
        feed = {n: t.detach().cpu().numpy() for n, t in zip(names, tensors, strict=False)}
        return list(session.run(None, feed))

    return compare_outputs(run, model, sets, rtol=rtol, atol=atol, fmt="ONNX",
                           runtime="onnxruntime")
