"""Export PyTorch models to ONNX (and TFLite), each artifact checked against PyTorch.

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
- TFLite (``export_tflite``) goes through the optional extra litert-torch (no TensorFlow), is
  re-run in ai-edge-litert's ``Interpreter`` against PyTorch the same way, and is written
  atomically once it matches; see docs/tflite.md.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune._io import atomic_write_bytes, check_writable
from edgeprune.errors import ExportError, OutputExistsError, ParityError, UsageError
from edgeprune.models.cost import Inputs, as_input_tuple, onnx_external_files, size_on_disk

__all__ = [
    "EXPORTERS",
    "ExportResult",
    "export_onnx",
    "export_tflite",
    "load_onnx_session",
    "verify_onnx",
]

EXPORTERS = ("auto", "dynamo", "torchscript")
DYNAMO_MIN_OPSET = 18
# protobuf refuses messages of 2 GiB; keep headroom for the graph itself
_SINGLE_FILE_LIMIT_BYTES = 2**31 - 64 * 2**20
_LOG_ROOTS = ("torch", "onnxscript", "onnx_ir", "onnx")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

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
    batches = _check_batches(inputs, check_inputs, dynamic_batch)
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
        if comparison.max_abs_output < 100 * atol:
            notes.append(
                f"PyTorch outputs are tiny (max |output| {comparison.max_abs_output:.3g}), so "
                f"atol={atol:g} makes the parity check weak: use trained weights or real data"
            )
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
    if rtol < 0 or atol < 0:
        raise UsageError("tolerances must be >= 0", hint="pass rtol/atol such as 1e-3/1e-4")


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


def _check_batches(
    inputs: tuple[torch.Tensor, ...], check_inputs: Inputs | None, dynamic_batch: bool
) -> list[tuple[torch.Tensor, ...]]:
    """Split real inputs into batches the exported model accepts."""
    checks = inputs if check_inputs is None else as_input_tuple(check_inputs)
    if len(checks) != len(inputs):
        raise UsageError(
            f"check_inputs has {len(checks)} tensors but the model takes {len(inputs)}",
            hint="pass check inputs in the same form as example_inputs",
        )
    if dynamic_batch or all(c.shape == x.shape for c, x in zip(checks, inputs, strict=True)):
        return [checks]
    batch, total = inputs[0].shape[0], checks[0].shape[0]
    same_rest = all(c.shape[1:] == x.shape[1:] for c, x in zip(checks, inputs, strict=True))
    if not same_rest or total % batch or any(c.shape[0] != total for c in checks):
        raise UsageError(
            f"check inputs of shape {tuple(checks[0].shape)} do not fit the exported shape "
            f"{tuple(inputs[0].shape)}",
            hint="use the same shape except for a batch that is a multiple of the exported "
            "batch, or export with dynamic_batch",
        )
    return [tuple(c[i : i + batch] for c in checks) for i in range(0, total, batch)]


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
                notes.append(f"{name} exporter failed ({_first_line(exc)}); fell back")
            continue
        notes.extend(captured)
        return name, notes
    assert failure is not None
    if isinstance(failure, ExportError):
        raise failure
    raise ExportError(
        f"ONNX export with the {order[-1]} exporter failed: {_first_line(failure)}",
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
        n_outputs = len(_flatten(model(*inputs)))
    kwargs: dict[str, Any] = {
        "input_names": input_names,
        "output_names": _io_names("output", n_outputs),
        "verbose": False,
    }
    if opset is not None:
        kwargs["opset_version"] = opset
    with _captured_output() as captured:
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
    return captured


def _io_names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


@contextlib.contextmanager
def _captured_output(roots: tuple[str, ...] = _LOG_ROOTS) -> Iterator[list[str]]:
    """Keep the exporters quiet (library functions never print); yield their warnings as notes.

    torch and onnxscript log to their own stderr handlers and print progress to stdout; both
    are redirected for the duration. ``roots`` are the logger hierarchies taken over. Not
    thread-safe (logging and stdio are process-wide).
    """
    notes: list[str] = []
    handler = _ListHandler(notes)
    saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    names = {n for n in logging.root.manager.loggerDict if n.split(".")[0] in roots}
    for name in sorted(names | set(roots)):
        logger = logging.getLogger(name)
        if logger.handlers or name in roots:
            saved.append((logger, list(logger.handlers), logger.propagate))
            logger.handlers = [handler]
            logger.propagate = False
    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("always")
            yield notes
        for w in caught:
            if issubclass(w.category, (DeprecationWarning, FutureWarning)):
                continue
            _add_note(notes, f"{w.category.__name__}: {w.message}")
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate


class _ListHandler(logging.Handler):
    def __init__(self, notes: list[str]) -> None:
        super().__init__(level=logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            _add_note(self.notes, record.getMessage())


def _add_note(notes: list[str], text: str) -> None:
    line = _first_line(text)
    if line and line not in notes and len(notes) < 10:
        notes.append(line)


def _first_line(obj: object) -> str:
    text = _ANSI.sub("", str(obj)).strip()
    line = text.splitlines()[0] if text else type(obj).__name__
    return line[:300]


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
            f"the exported model fails onnx.checker: {_first_line(exc)}",
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
            old = onnx_external_files(target)
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
    comparison: _Comparison,
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
            f"onnxruntime cannot load {str(path)!r}: {_first_line(exc)}",
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


@dataclass(frozen=True)
class _Comparison:
    max_abs_diff: float
    max_abs_output: float  # scale of PyTorch's outputs: tiny outputs make atol meaningless


def _compare(
    path: str | os.PathLike[str],
    model: nn.Module,
    check_inputs: Inputs | Sequence[Inputs],
    *,
    rtol: float,
    atol: float,
) -> _Comparison:
    import numpy as np

    sets = check_inputs if isinstance(check_inputs, list) else [check_inputs]
    session = load_onnx_session(path)
    names = [i.name for i in session.get_inputs()]
    max_diff, max_ref, failed = 0.0, 0.0, False
    was_training = model.training
    model.eval()
    try:
        for item in sets:
            tensors = as_input_tuple(item)
            with torch.no_grad():
                reference = _flatten(model(*tensors))
            feed = {n: t.detach().cpu().numpy() for n, t in zip(names, tensors, strict=False)}
            outputs = session.run(None, feed)
            if len(outputs) != len(reference):
                raise ParityError(
                    f"the ONNX model returns {len(outputs)} outputs, PyTorch {len(reference)}",
                    hint="re-export the model",
                )
            for got, want in zip(outputs, reference, strict=True):
                want_np = want.detach().cpu().numpy().astype(np.float64)
                if got.shape != want_np.shape:
                    raise ParityError(
                        f"ONNX output shape {got.shape} differs from PyTorch {want_np.shape}",
                        hint="re-export the model with the shapes you run it with",
                    )
                if not want_np.size:
                    continue
                diff = np.abs(got.astype(np.float64) - want_np)
                bad = ~(diff <= atol + rtol * np.abs(want_np))  # NaN counts as bad
                failed = failed or bool(bad.any())
                finite = np.isfinite(diff).all()
                max_diff = max(max_diff, float(diff.max()) if finite else float("inf"))
                max_ref = max(max_ref, float(np.nanmax(np.abs(want_np))))
    finally:
        model.train(was_training)
    if failed:
        raise ParityError(
            f"onnxruntime output differs from PyTorch by up to {max_diff:.3g} "
            f"(tolerance atol={atol:g} + rtol={rtol:g}·|output|; outputs up to {max_ref:.3g})",
            hint="check the model for export-time-only behaviour, or loosen --atol/--rtol "
            "if the difference is numerical noise",
        )
    return _Comparison(max_diff, max_ref)


def _flatten(output: Any) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]


# --- TFLite ------------------------------------------------------------------------------------
#
# litert-torch (an optional extra, ~1.2 GB with jax and the MLIR converter) converts through
# torch.export to a .tflite flatbuffer; no TensorFlow. It is chatty on every channel: a rich
# console on sys.stdout, Python logging (torch, absl, torchao), warnings, and C++ logs (absl,
# the MLIR converter, the XNNPACK delegate) written straight to file descriptors 1 and 2. All
# of it is contained for the duration of the conversion and of the check, then put back.

TFLITE_EXTRA_HINT = "pip install 'edgeprune[tflite]'"
_TFLITE_LOG_ROOTS = ("torch", "litert_torch", "absl", "torchao", "jax", "ai_edge_litert")
_TFLITE_SIGNATURE = "serving_default"


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
    _require_tflite_extra()
    _validate(None, "auto", rtol, atol)
    emit = progress or (lambda event: None)
    target = Path(path)
    inputs = as_input_tuple(example_inputs)
    batches = _check_batches(inputs, check_inputs, dynamic_batch=False)
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
        content, notes = _convert_tflite(model, inputs, channels_last)
        emit({"stage": "verify", "message": "comparing ai-edge-litert with PyTorch"})
        with _quiet_tflite() as check_notes:
            comparison, io_info = _compare_tflite(
                content, model, batches, channels_last, rtol=rtol, atol=atol
            )
        notes.extend(n for n in check_notes if n not in notes)
    finally:
        model.train(was_training)
    if comparison.max_abs_output < 100 * atol:
        notes.append(
            f"PyTorch outputs are tiny (max |output| {comparison.max_abs_output:.3g}), so "
            f"atol={atol:g} makes the parity check weak: use trained weights or real data"
        )
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


def _require_tflite_extra() -> None:
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


def _convert_tflite(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], channels_last: bool
) -> tuple[bytes, list[str]]:
    """The .tflite flatbuffer of ``model`` traced at ``inputs`` (NCHW) and litert-torch's notes."""
    try:
        with _quiet_tflite():  # importing it is noisy too (torchao, triton); not about this model
            import litert_torch
    except Exception as exc:  # installed but broken (a missing shared library, a bad pin)
        raise ExportError(
            f"litert-torch is installed but cannot be imported: {_first_line(exc)}",
            hint=f"reinstall the extra: {TFLITE_EXTRA_HINT}",
        ) from exc
    with _quiet_tflite() as notes:
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
                f"TFLite conversion with litert-torch failed: {_first_line(exc)}",
                hint="set EDGEPRUNE_DEBUG=1 for the traceback; data-dependent control flow and "
                "operators without a TFLite lowering are the usual causes (ONNX may still work)",
            ) from exc
    if not content:
        raise ExportError("litert-torch returned an empty model", hint="report it with the model")
    return bytes(content), notes


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, *range(2, t.ndim), 1).contiguous()


@contextlib.contextmanager
def _quiet_tflite() -> Iterator[list[str]]:
    """litert-torch's progress display off, Python output captured, fds 1 and 2 parked."""
    key = "LITERT_TORCH_SHOW_PROGRESS"  # read on every task; restored afterwards
    saved = os.environ.get(key)
    os.environ[key] = "0"
    try:
        with _parked_fds(), _captured_output(_TFLITE_LOG_ROOTS) as notes:
            yield notes
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


@contextlib.contextmanager
def _parked_fds() -> Iterator[None]:
    """Point file descriptors 1 and 2 at a scratch file (C++ logging bypasses sys.stdout), then
    restore them exactly, whatever happens. A no-op when they cannot be duplicated."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:
        yield
        return
    try:
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), 1)
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                _flush_c_stdio()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers so that nothing written while parked leaks out later."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@dataclass(frozen=True)
class _TFLiteIO:
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]


def _compare_tflite(
    content: bytes,
    model: nn.Module,
    batches: list[tuple[torch.Tensor, ...]],
    channels_last: bool,
    *,
    rtol: float,
    atol: float,
) -> tuple[_Comparison, _TFLiteIO]:
    """Run the flatbuffer in ai-edge-litert's Interpreter (1 thread, default XNNPACK delegate,
    as a device runs it) and PyTorch on every batch; raise :class:`ParityError` on a mismatch."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=content, num_threads=1)
        runner = interpreter.get_signature_runner(_TFLITE_SIGNATURE)
    except Exception as exc:
        raise ExportError(
            f"ai-edge-litert cannot load the converted model: {_first_line(exc)}",
            hint="the model uses an operator this runtime lacks; export ONNX instead",
        ) from exc
    in_details = runner.get_input_details()
    out_details = runner.get_output_details()
    in_names = sorted(in_details, key=_signature_order)
    out_names = sorted(out_details, key=_signature_order)
    max_diff, max_ref, failed = 0.0, 0.0, False
    for tensors in batches:
        with torch.no_grad():
            reference = _flatten(model(*tensors))
        feed = {}
        for name, t in zip(in_names, tensors, strict=False):
            value = _nhwc(t) if channels_last and t.ndim >= 3 else t
            feed[name] = value.detach().cpu().numpy().astype(in_details[name]["dtype"])
        try:
            result = runner(**feed)
        except Exception as exc:
            raise ExportError(
                f"ai-edge-litert failed to run the converted model: {_first_line(exc)}",
                hint="export ONNX instead and report the model",
            ) from exc
        outputs = [np.asarray(result[name]) for name in out_names]
        if len(outputs) != len(reference):
            raise ParityError(
                f"the TFLite model returns {len(outputs)} outputs, PyTorch {len(reference)}",
                hint="re-export the model",
            )
        for got, want in zip(outputs, reference, strict=True):
            want_np = want.detach().cpu().numpy().astype(np.float64)
            if got.shape != want_np.shape:
                raise ParityError(
                    f"TFLite output shape {got.shape} differs from PyTorch {want_np.shape}",
                    hint="outputs stay in PyTorch's layout; re-export the model",
                )
            if not want_np.size:
                continue
            diff = np.abs(got.astype(np.float64) - want_np)
            bad = ~(diff <= atol + rtol * np.abs(want_np))  # NaN counts as bad
            failed = failed or bool(bad.any())
            max_diff = max(max_diff, float(diff.max()) if np.isfinite(diff).all() else float("inf"))
            max_ref = max(max_ref, float(np.nanmax(np.abs(want_np))))
    if failed:
        raise ParityError(
            f"ai-edge-litert output differs from PyTorch by up to {max_diff:.3g} "
            f"(tolerance atol={atol:g} + rtol={rtol:g}·|output|; outputs up to {max_ref:.3g})",
            hint="check the model for export-time-only behaviour, or loosen --atol/--rtol "
            "if the difference is numerical noise",
        )
    io_info = _TFLiteIO(
        input_names=tuple(in_names),
        output_names=tuple(out_names),
        input_shapes=tuple(tuple(int(d) for d in in_details[n]["shape"]) for n in in_names),
        output_shapes=tuple(tuple(int(d) for d in out_details[n]["shape"]) for n in out_names),
    )
    return _Comparison(max_diff, max_ref), io_info


def _signature_order(name: str) -> tuple[int, str]:
    """litert-torch names signature tensors ``args_0``, ``args_1`` … and ``output_0`` …"""
    digits = re.search(r"(\d+)$", name)
    return (int(digits.group(1)) if digits else 0, name)
