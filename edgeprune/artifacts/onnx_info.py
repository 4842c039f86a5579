"""Static facts about an ONNX artifact, read from the graph without loading its weights.

:func:`onnx_info` gives what ``edgeprune info`` and ``gate`` show about an ``.onnx`` file
(parameters, MACs, files with external data, size, opset, inputs/outputs);
:func:`declared_inputs` reads only the input shapes a graph declares (for checking
``--input-shape`` before a measurement); :func:`onnx_macs` counts the graph's
multiply-accumulates the way :func:`edgeprune.models.cost.count_macs` counts a PyTorch model's.
Importing this module (and reading a graph) never imports torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.artifacts.files import artifact_files
from edgeprune.errors import ExportError, NotFoundError

__all__ = ["OnnxInfo", "OnnxTensor", "declared_inputs", "onnx_info", "onnx_macs"]


@dataclass(frozen=True)
class OnnxTensor:
    """One graph input or output: name, element type and shape (ints or symbolic names)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class OnnxInfo:
    """Static facts about an ONNX artifact, read without loading its weights into memory."""

    path: str
    files: tuple[str, ...]
    size_bytes: int
    params: int
    opset: int
    producer: str
    nodes: int
    op_types: dict[str, int]
    inputs: tuple[OnnxTensor, ...]
    outputs: tuple[OnnxTensor, ...]
    macs: int | None = None  # see onnx_macs; None when it cannot tell (macs_note says why)
    macs_note: str = ""  # why there is no count, or what the count leaves out; "" = nothing
    macs_input_shapes: tuple[tuple[int, ...], ...] = ()  # the input shapes ``macs`` is for

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "files": list(self.files),
            "size_bytes": self.size_bytes,
            "params": self.params,
            "macs": self.macs,
            "macs_note": self.macs_note,
            "macs_input_shapes": [list(s) for s in self.macs_input_shapes],
            "opset": self.opset,
            "producer": self.producer,
            "nodes": self.nodes,
            "op_types": dict(self.op_types),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


def onnx_info(
    path: str | os.PathLike[str], *, input_shape: Sequence[int] | None = None
) -> OnnxInfo:
    """Parameters (elements of floating-point initializers), MACs, files, size, opset,
    inputs/outputs.

    MACs are :func:`onnx_macs` of the graph, its dynamic input dims filled from ``input_shape``
    (same rank) or set to 1; ``macs_note`` says when they cannot be told or what they leave out.
    Files and size are :func:`edgeprune.artifacts.files.artifact_files`: an external data file
    the model declares but that is missing is a :class:`NotFoundError` naming it.
    """
    import onnx

    path = Path(path)
    proto = _load_graph(path)
    floats = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.DOUBLE,
    }
    params = sum(math.prod(t.dims) for t in proto.graph.initializer if t.data_type in floats)
    initializer_names = {t.name for t in proto.graph.initializer}
    op_types: dict[str, int] = {}
    for node in proto.graph.node:
        op_types[node.op_type] = op_types.get(node.op_type, 0) + 1
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    macs, macs_note = onnx_macs(proto, input_shape)
    graph_inputs = [v for v in proto.graph.input if v.name not in initializer_names]
    filled = tuple(
        tuple(_fill_dims(v.type.tensor_type.shape.dim, input_shape)) for v in graph_inputs
    )
    files = artifact_files(path)  # a declared external data file that is missing is an error
    return OnnxInfo(
        path=str(path),
        files=tuple(str(f) for f in files),
        size_bytes=sum(f.stat().st_size for f in files),
        params=int(params),
        opset=int(opset),
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        nodes=len(proto.graph.node),
        op_types=dict(sorted(op_types.items(), key=lambda kv: (-kv[1], kv[0]))),
        inputs=tuple(_onnx_tensor(v) for v in graph_inputs),
        outputs=tuple(_onnx_tensor(v) for v in proto.graph.output),
        macs=macs,
        macs_note=macs_note,
        macs_input_shapes=filled if macs is not None else (),
    )


def declared_inputs(path: str | os.PathLike[str]) -> dict[str, list[int | str] | None]:
    """Each graph input's declared dims, by name, in graph order: an int for a fixed size (a
    ``dim_value`` >= 0; 0 is a fixed size of zero), the ``dim_param`` name for a symbolic one,
    ``?`` for an unset or negative one (all three dynamic, as onnxruntime reads them); ``[]`` for
    a scalar; None when the input declares no shape at all (any rank).

    Reads the graph only: no shape inference, no external data, no file listing (unlike
    :func:`onnx_info`). Initializers listed as graph inputs are left out. A missing file is a
    :class:`NotFoundError`, an unreadable one an :class:`ExportError`.
    """
    proto = _load_graph(Path(path))
    init_names = {t.name for t in proto.graph.initializer}
    declared: dict[str, list[int | str] | None] = {}
    for value in proto.graph.input:
        if value.name in init_names:
            continue
        tensor = value.type.tensor_type
        declared[value.name] = ([int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0
                                 else (d.dim_param or "?") for d in tensor.shape.dim]
                                if tensor.HasField("shape") else None)
    return declared


def _load_graph(path: Path) -> Any:
    """The ModelProto at ``path``, its external data left on disk."""
    import onnx

    if not path.is_file():
        raise NotFoundError(f"ONNX file {str(path)!r} does not exist", hint="check the path")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(
            f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__})",
            hint="re-export it with edgeprune export",
        ) from exc


def _onnx_tensor(value_info: Any) -> OnnxTensor:
    import onnx

    tensor_type = value_info.type.tensor_type
    dims = tensor_type.shape.dim
    # dynamic is what onnxruntime treats as dynamic: a named dim, an unset one (shown "?") or a
    # negative one; a dim_value of 0 is a fixed size of zero
    shape = tuple(d.dim_param if d.dim_param else
                  int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else "?"
                  for d in dims)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    return OnnxTensor(value_info.name, dtype, shape)


# --- ONNX MACs ---------------------------------------------------------------------------------

_MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# op types that multiply-accumulate but onnx_macs does not count (quantized and fused forms,
# attention, recurrent cells, einsum): matched by substring, so the note can name what it left out
_UNCOUNTED_MAC_WORDS = ("Conv", "Gemm", "MatMul", "Einsum", "Attention", "LSTM", "GRU", "RNN")


def _fill_dims(dims: Any, shape: Sequence[int] | None) -> list[int]:
    """Concrete input dims: fixed ones as they are, dynamic ones from ``shape`` when it has the
    same rank, else 1. Dynamic as onnxruntime reads a graph: symbolic, unset or negative (a 0 is
    a fixed size of zero)."""
    same_rank = shape is not None and len(shape) == len(dims)
    return [int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0
            else int(shape[i]) if same_rank and shape is not None else 1
            for i, d in enumerate(dims)]


def onnx_macs(proto: Any, shape: Sequence[int] | None = None) -> tuple[int | None, str]:
    """Multiply-accumulates of the Conv/ConvTranspose/Gemm/MatMul nodes of an ONNX graph.

    Counted like :func:`count_macs` (bias adds not counted), for the whole batch. Dynamic input
    dims are filled from ``shape`` (same rank) or set to 1; shapes of intermediate tensors come
    from ``onnx.shape_inference``. Returns ``(None, why)`` when a counted node's shapes stay
    unknown, else ``(count, note)`` where ``note`` names what the count leaves out ("" when
    nothing): nodes inside If/Loop/Scan bodies and other multiply-accumulating operators
    (QLinearConv, MatMulInteger, fused or contrib ops, attention, LSTM/GRU, Einsum).
    """
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    init_names = {t.name for t in model.graph.initializer}
    guessed = False  # a dynamic dim set to 1 for want of a same-rank ``shape``
    for value in model.graph.input:
        if value.name in init_names or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, _fill_dims(dims, shape), strict=True):
            if not (dim.HasField("dim_value") and dim.dim_value >= 0):
                guessed = guessed or shape is None or len(shape) != len(dims)
                dim.Clear()
                dim.dim_value = size
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises several types for graphs it cannot type
        why = f"shape inference failed: {str(exc).splitlines()[0][:120]}"
        return None, f"{why}; pass --input-shape" if guessed else why
    shapes: dict[str, tuple[int, ...] | None] = {}
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    for value in values:
        dims = value.type.tensor_type.shape.dim
        known = all(d.HasField("dim_value") for d in dims) and value.type.tensor_type.HasField(
            "shape")
        shapes[value.name] = tuple(int(d.dim_value) for d in dims) if known else None
    for tensor in inferred.graph.initializer:
        shapes[tensor.name] = tuple(int(d) for d in tensor.dims)
    total, unknown = 0, 0
    skipped: dict[str, int] = {}
    for node in inferred.graph.node:
        if node.op_type not in _MAC_OPS or node.domain not in ("", "ai.onnx"):
            _note_uncounted(node, skipped)
            continue
        count = _node_macs(node, shapes)
        if count is None:
            unknown += 1
        else:
            total += count
    if unknown:
        why = f"shapes of {unknown} Conv/Gemm/MatMul node(s) are unknown"
        return None, (f"{why}: pass --input-shape" if guessed
                      else f"{why} to ONNX shape inference")
    if not skipped:
        return total, ""
    return total, "not counted: " + ", ".join(f"{n} {what}" for what, n in skipped.items())


def _note_uncounted(node: Any, skipped: dict[str, int]) -> None:
    """Tally a node onnx_macs does not count if it does multiply-accumulates, and the counted
    kinds inside its subgraphs (If/Loop/Scan bodies)."""
    default = node.domain in ("", "ai.onnx")
    if any(word in node.op_type for word in _UNCOUNTED_MAC_WORDS):
        name = node.op_type if default else f"{node.domain}.{node.op_type}"
        skipped[name] = skipped.get(name, 0) + 1
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            inner: dict[str, int] = {}
            for child in sub.node:
                _note_uncounted(child, inner)
            for what, n in inner.items():
                key = f"{what} inside {node.op_type} bodies"
                skipped[key] = skipped.get(key, 0) + n


def _node_macs(node: Any, shapes: Mapping[str, tuple[int, ...] | None]) -> int | None:
    ins = [shapes.get(name) for name in node.input]
    out = shapes.get(node.output[0])
    if node.op_type == "Conv":  # W: [C_out, C_in/groups, k...]
        if out is None or len(ins) < 2 or ins[1] is None:
            return None
        return math.prod(out) * math.prod(ins[1][1:])
    if node.op_type == "ConvTranspose":  # W: [C_in, C_out/groups, k...]
        if ins[0] is None or len(ins) < 2 or ins[1] is None:
            return None
        return math.prod(ins[0]) * math.prod(ins[1][1:])
    if node.op_type == "Gemm":
        a = ins[0]
        if out is None or a is None or len(a) != 2:
            return None
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        return math.prod(out) * (a[0] if trans_a else a[1])
    a = ins[0]  # MatMul
    if out is None or a is None or not a:
        return None
    return math.prod(out) * a[-1]


