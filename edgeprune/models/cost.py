"""Model statistics: parameters, multiply-accumulates, layer widths, size on disk.

What :func:`count_macs` counts (one MAC = one multiply plus one add):

- ``nn.Conv1d/2d/3d`` and their transposed forms: ``output elements × in_channels/groups ×
  kernel volume`` (grouped and depthwise convs included; the bias add is not counted);
- ``nn.Linear``: ``output elements × in_features`` (any number of leading dims);
- ``nn.MultiheadAttention``: the q/k/v and output projections plus the two attention matmuls
  (``Q·Kᵀ`` and ``A·V``); its ``out_proj`` child is not hooked twice;
- with ``include_norm=True``, ``BatchNorm``/``LayerNorm``/``GroupNorm``: one MAC per output
  element (an inference-time affine ``y = a·x + b``). Off by default, like most published
  figures, because these fold into the preceding conv at export.

Activations, pooling, element-wise adds and anything computed with ``torch.nn.functional`` or
raw ``torch.matmul`` outside these modules are *not* counted: the count is a guide to the
conv/linear work, not a latency model (latency is measured on the device). The count is for the
whole batch of ``example_inputs``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.errors import NotFoundError

__all__ = [
    "LayerWidth",
    "ModelInfo",
    "OnnxInfo",
    "OnnxTensor",
    "count_macs",
    "count_params",
    "layer_widths",
    "model_info",
    "onnx_external_files",
    "onnx_info",
    "onnx_macs",
    "size_on_disk",
    "state_dict_bytes",
]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)

Inputs = torch.Tensor | Sequence[torch.Tensor]


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def count_macs(model: nn.Module, example_inputs: Inputs, *, include_norm: bool = False) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (see the module docstring).

    The model runs once in eval mode under ``no_grad`` (BatchNorm statistics are not touched) and
    is returned to its previous mode.
    """
    total = [0]
    handles = []
    skip: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            skip.add(id(module.out_proj))
    for module in model.modules():
        if id(module) in skip:
            continue
        counter = _counter_for(module, include_norm)
        if counter is not None:
            hook = _hook(counter, total)
            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        _run(model, example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return int(total[0])


def _hook(counter: Callable[[nn.Module, tuple[Any, ...], Any], int], total: list[int]) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if isinstance(module, nn.MultiheadAttention):  # query/key/value may come as keywords
            names = ("query", "key", "value")
            args = tuple(args) + tuple(kwargs[n] for n in names[len(args) :] if n in kwargs)
        total[0] += counter(module, args, output)

    return hook


def _counter_for(
    module: nn.Module, include_norm: bool
) -> Callable[[nn.Module, tuple[Any, ...], Any], int] | None:
    if isinstance(module, _CONV):
        return _conv_macs
    if isinstance(module, _CONV_T):
        return _conv_transpose_macs
    if isinstance(module, nn.Linear):
        return _linear_macs
    if isinstance(module, nn.MultiheadAttention):
        return _mha_macs
    if include_norm and isinstance(module, _NORM):
        return _norm_macs
    return None


def _conv_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    kernel = math.prod(module.kernel_size)
    return output.numel() * (module.in_channels // module.groups) * kernel


def _conv_transpose_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    # every input element is multiplied into kernel volume × out_channels/groups outputs
    kernel = math.prod(module.kernel_size)
    return inputs[0].numel() * (module.out_channels // module.groups) * kernel


def _linear_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    return output.numel() * module.in_features


def _norm_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    return output.numel()


def _mha_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    query, key = inputs[0], inputs[1]
    embed = module.embed_dim
    seq_dim = 0 if query.dim() == 2 or not module.batch_first else 1
    batch = 1 if query.dim() == 2 else query.shape[1 - seq_dim]
    q_len, k_len = query.shape[seq_dim], key.shape[seq_dim]
    projections = q_len * embed * embed + k_len * (module.kdim + module.vdim) * embed
    out_proj = q_len * embed * embed
    attention = 2 * q_len * k_len * embed  # Q·Kᵀ and A·V over all heads
    return int(batch * (projections + out_proj + attention))


def as_input_tuple(example_inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """One tensor or a sequence of tensors, as the positional-argument tuple of ``forward``."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def _run(model: nn.Module, example_inputs: Inputs) -> Any:
    inputs = as_input_tuple(example_inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(*inputs)
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class LayerWidth:
    """One conv/linear/norm layer's widths; ``in_width``/``out_width`` are channels/features."""

    name: str
    kind: str
    in_width: int
    out_width: int
    groups: int = 1
    kernel_size: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kernel_size"] = list(self.kernel_size)
        return data


def layer_widths(model: nn.Module) -> list[LayerWidth]:
    """Widths of every conv, linear and norm layer, in module order (what pruning changes)."""
    widths: list[LayerWidth] = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, _CONV + _CONV_T):
            widths.append(
                LayerWidth(
                    name,
                    kind,
                    module.in_channels,
                    module.out_channels,
                    module.groups,
                    tuple(module.kernel_size),
                )
            )
        elif isinstance(module, nn.Linear):
            widths.append(LayerWidth(name, kind, module.in_features, module.out_features))
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            widths.append(LayerWidth(name, kind, module.num_features, module.num_features))
        elif isinstance(module, nn.GroupNorm):
            c = module.num_channels
            widths.append(LayerWidth(name, kind, c, c, module.num_groups))
        elif isinstance(module, nn.LayerNorm):
            n = math.prod(module.normalized_shape)
            widths.append(LayerWidth(name, kind, n, n))
    return widths


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the state dict saved as float32 (float tensors at 4 bytes, others as they are)."""
    total = 0
    seen: set[int] = set()
    for tensor in model.state_dict().values():
        key = id(tensor)
        if key in seen:
            continue
        seen.add(key)
        itemsize = 4 if tensor.is_floating_point() else tensor.element_size()
        total += tensor.numel() * itemsize
    return total


def size_on_disk(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of an artifact: a file, plus an ONNX file's external data files.

    A directory is the sum of every file under it. External data files are read from the ONNX
    model's initializers (``location`` entries), so ``model.onnx.data`` and any other names count.
    """
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{str(path)!r} does not exist", hint="check the path")
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    total = path.stat().st_size
    if path.suffix.lower() == ".onnx":
        for extra in onnx_external_files(path):
            total += extra.stat().st_size
    return total


def onnx_external_files(path: str | os.PathLike[str]) -> list[Path]:
    """External data files an ONNX model refers to (existing ones, deduplicated, in order)."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    files: list[Path] = []
    for tensor in _graph_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if location is None:
            continue
        candidate = path.parent / location
        if candidate not in files and candidate.is_file():
            files.append(candidate)
    return files


def _graph_tensors(graph: Any) -> list[Any]:
    """Initializers and tensor attributes of a graph and its subgraphs (If/Loop bodies)."""
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            tensors.extend(attr.tensors)
            if attr.HasField("g"):
                tensors.extend(_graph_tensors(attr.g))
            for sub in attr.graphs:
                tensors.extend(_graph_tensors(sub))
    return tensors


@dataclass(frozen=True)
class ModelInfo:
    """Static facts about a PyTorch model at one input shape (MACs are for the whole batch)."""

    params: int
    macs: int
    size_bytes: int
    input_shapes: tuple[tuple[int, ...], ...]
    widths: tuple[LayerWidth, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "macs": self.macs,
            "size_bytes": self.size_bytes,
            "input_shapes": [list(s) for s in self.input_shapes],
            "widths": [w.to_dict() for w in self.widths],
        }


def model_info(
    model: nn.Module, example_inputs: Inputs, *, include_norm: bool = False
) -> ModelInfo:
    """Parameters, MACs, float32 state-dict size and layer widths of ``model``."""
    inputs = as_input_tuple(example_inputs)
    return ModelInfo(
        params=count_params(model),
        macs=count_macs(model, inputs, include_norm=include_norm),
        size_bytes=state_dict_bytes(model),
        input_shapes=tuple(tuple(t.shape) for t in inputs),
        widths=tuple(layer_widths(model)),
    )


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
    """
    import onnx

    from edgeprune.errors import ExportError

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"ONNX file {str(path)!r} does not exist", hint="check the path")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(
            f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__})",
            hint="re-export it with edgeprune export",
        ) from exc
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
    return OnnxInfo(
        path=str(path),
        files=(str(path), *(str(p) for p in onnx_external_files(path))),
        size_bytes=size_on_disk(path),
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


def _onnx_tensor(value_info: Any) -> OnnxTensor:
    import onnx

    tensor_type = value_info.type.tensor_type
    dims = tensor_type.shape.dim
    shape = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in dims)
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


# --- TFLite ------------------------------------------------------------------------------------

# TFLite schema (schema.fbs) enums edgeprune names; other operator codes print as BUILTIN_<n>.
TFLITE_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string",
                6: "bool", 7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128",
                12: "uint64", 13: "resource", 14: "variant", 15: "uint32", 16: "uint16",
                17: "int4", 18: "bfloat16", 19: "int2", 20: "uint4", 21: "float8_e4m3fn",
                22: "float8_e5m2"}
TFLITE_OPS = {0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D",
              4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE", 9: "FULLY_CONNECTED",
              11: "L2_NORMALIZATION", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU",
              21: "RELU6", 22: "RESHAPE", 23: "RESIZE_BILINEAR", 25: "SOFTMAX", 28: "TANH",
              32: "CUSTOM", 34: "PAD", 36: "GATHER", 39: "TRANSPOSE", 40: "MEAN", 41: "SUB",
              42: "DIV", 43: "SQUEEZE", 45: "STRIDED_SLICE", 47: "EXP", 49: "SPLIT",
              50: "LOG_SOFTMAX", 53: "CAST", 54: "PRELU", 55: "MAXIMUM", 57: "MINIMUM",
              60: "PADV2", 65: "SLICE", 67: "TRANSPOSE_CONV", 70: "EXPAND_DIMS", 74: "SUM",
              75: "SQRT", 76: "RSQRT", 77: "SHAPE", 78: "POW", 82: "REDUCE_MAX", 83: "PACK",
              97: "RESIZE_NEAREST_NEIGHBOR", 98: "LEAKY_RELU", 99: "SQUARED_DIFFERENCE",
              102: "SPLIT_V", 114: "QUANTIZE", 117: "HARD_SWISH", 123: "SELECT_V2",
              126: "BATCH_MATMUL", 130: "BROADCAST_TO", 132: "CONV_3D", 150: "GELU",
              206: "STABLEHLO_COMPOSITE"}
# Constant tensors of these types are parameters (float weights, quantized weights); int32 only
# with quantization scales (quantized biases) — plain int32/int64 constants are shape operands.
_TFLITE_PARAM_TYPES = {"float32", "float16", "float64", "bfloat16", "int8", "uint8", "int16",
                       "int4", "uint4", "int2", "float8_e4m3fn", "float8_e5m2"}


@dataclass(frozen=True)
class TFLiteInfo:
    """Static facts about a .tflite flatbuffer, read from the file without a TFLite runtime."""

    path: str
    files: tuple[str, ...]
    size_bytes: int
    params: int
    schema_version: int
    description: str
    subgraphs: int
    nodes: int
    op_types: dict[str, int]
    inputs: tuple[OnnxTensor, ...]  # (name, dtype, shape); -1 in a shape = dynamic
    outputs: tuple[OnnxTensor, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "files": list(self.files),
            "size_bytes": self.size_bytes,
            "params": self.params,
            "schema_version": self.schema_version,
            "description": self.description,
            "subgraphs": self.subgraphs,
            "nodes": self.nodes,
            "op_types": dict(self.op_types),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


def tflite_info(path: str | os.PathLike[str]) -> TFLiteInfo:
    """Parameters, operators, inputs and outputs of a ``.tflite`` file.

    Parameters are the elements of the model's constant tensors (those whose buffer holds data)
    of float or quantized-weight types, each buffer counted once; int32/int64 constants count
    only when quantized (biases), not as shape operands. The file is read with the
    ``flatbuffers`` package (an onnxruntime dependency) following the TFLite schema, memory-mapped,
    so no TFLite runtime is needed on this machine. MACs are not derived.
    """
    import mmap

    from edgeprune.errors import ExportError

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"TFLite file {str(path)!r} does not exist", hint="check the path")
    hint = "check the file is a complete .tflite, or re-export it"
    size = path.stat().st_size
    if size < 8:
        raise ExportError(f"{str(path)!r} is not a TFLite model ({size} bytes)", hint=hint)
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[4:8] != b"TFL3":
            raise ExportError(f"{str(path)!r} is not a TFLite model (no TFL3 identifier)",
                              hint=hint)
        try:
            return _read_tflite(buf, path, size)
        except Exception as exc:  # struct.error, IndexError...: a truncated or corrupt file
            raise ExportError(f"{str(path)!r} is not a readable TFLite model (truncated or "
                              f"corrupt flatbuffer: {type(exc).__name__})", hint=hint) from None


def _read_tflite(buf: Any, path: Path, size: int) -> TFLiteInfo:
    from flatbuffers import encode, number_types
    from flatbuffers.table import Table

    def root() -> Table:
        return Table(buf, encode.Get(number_types.UOffsetTFlags.packer_type, buf, 0))

    def field(tab: Table, slot: int) -> int:
        return int(tab.Offset(4 + 2 * slot))

    def scalar(tab: Table, slot: int, flags: Any, default: int | float = 0) -> Any:
        o = field(tab, slot)
        return tab.Get(flags, o + tab.Pos) if o else default

    def tables(tab: Table, slot: int) -> list[Table]:
        o = field(tab, slot)
        if not o:
            return []
        start = tab.Vector(o)
        return [Table(buf, tab.Indirect(start + 4 * i)) for i in range(tab.VectorLen(o))]

    def ints(tab: Table, slot: int) -> list[int]:
        o = field(tab, slot)
        if not o:
            return []
        start = tab.Vector(o)
        return [int(tab.Get(number_types.Int32Flags, start + 4 * i))
                for i in range(tab.VectorLen(o))]

    def text(tab: Table, slot: int) -> str:
        o = field(tab, slot)
        return tab.String(o + tab.Pos).decode("utf-8", "replace") if o else ""

    def sub(tab: Table, slot: int) -> Table | None:
        o = field(tab, slot)
        return Table(buf, tab.Indirect(o + tab.Pos)) if o else None

    def vector_len(tab: Table, slot: int) -> int:
        o = field(tab, slot)
        return int(tab.VectorLen(o)) if o else 0

    model = root()
    version = int(scalar(model, 0, number_types.Uint32Flags))
    # Buffer: data [ubyte] (slot 0), or offset/size (slots 1, 2) for models over 2 GB
    has_data = [vector_len(b, 0) > 0 or int(scalar(b, 2, number_types.Uint64Flags)) > 0
                for b in tables(model, 4)]
    codes = []
    for code in tables(model, 1):
        builtin = max(int(scalar(code, 0, number_types.Int8Flags)),
                      int(scalar(code, 3, number_types.Int32Flags)))
        custom = text(code, 1)
        codes.append(custom if custom else TFLITE_OPS.get(builtin, f"BUILTIN_{builtin}"))
    counted: set[tuple[str, int]] = set()
    params = 0
    nodes = 0
    op_types: dict[str, int] = {}
    graphs = tables(model, 2)
    io: tuple[list[OnnxTensor], list[OnnxTensor]] = ([], [])
    for g, graph in enumerate(graphs):
        tensors = tables(graph, 0)
        for tensor in tensors:
            buffer = int(scalar(tensor, 2, number_types.Uint32Flags))
            external = int(scalar(tensor, 10, number_types.Uint32Flags))
            if buffer >= len(has_data):
                raise IndexError(f"tensor buffer {buffer} of {len(has_data)}")
            constant = (buffer > 0 and has_data[buffer]) or external > 0
            if not constant:
                continue
            dtype = TFLITE_TYPES.get(int(scalar(tensor, 1, number_types.Int8Flags)), "")
            quant = sub(tensor, 4)
            quantized = quant is not None and vector_len(quant, 2) > 0  # scale
            if dtype in _TFLITE_PARAM_TYPES or (dtype == "int32" and quantized):
                key = ("external", external) if external else ("buffer", buffer)
                if key not in counted:
                    counted.add(key)
                    params += math.prod(ints(tensor, 0))
        for op in tables(graph, 3):
            index = int(scalar(op, 0, number_types.Uint32Flags))
            name = codes[index] if index < len(codes) else f"OPCODE_{index}"
            op_types[name] = op_types.get(name, 0) + 1
            nodes += 1
        if g == 0:
            for which, slot in ((0, 1), (1, 2)):
                for i in ints(graph, slot):
                    t = tensors[i]
                    shape = ints(t, 7) or ints(t, 0)  # shape_signature has -1 for dynamic dims
                    dtype = TFLITE_TYPES.get(int(scalar(t, 1, number_types.Int8Flags)), "?")
                    io[which].append(OnnxTensor(text(t, 3), dtype, tuple(shape)))
    return TFLiteInfo(
        path=str(path), files=(str(path),), size_bytes=size, params=int(params),
        schema_version=version, description=text(model, 3), subgraphs=len(graphs), nodes=nodes,
        op_types=dict(sorted(op_types.items(), key=lambda kv: (-kv[1], kv[0]))),
        inputs=tuple(io[0]), outputs=tuple(io[1]))
