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
from collections.abc import Callable, Sequence
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "files": list(self.files),
            "size_bytes": self.size_bytes,
            "params": self.params,
            "opset": self.opset,
            "producer": self.producer,
            "nodes": self.nodes,
            "op_types": dict(self.op_types),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


def onnx_info(path: str | os.PathLike[str]) -> OnnxInfo:
    """Parameters (elements of floating-point initializers), files, size, opset, inputs/outputs.

    MACs are not derived from ONNX graphs; count them on the PyTorch model.
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
    return OnnxInfo(
        path=str(path),
        files=(str(path), *(str(p) for p in onnx_external_files(path))),
        size_bytes=size_on_disk(path),
        params=int(params),
        opset=int(opset),
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        nodes=len(proto.graph.node),
        op_types=dict(sorted(op_types.items(), key=lambda kv: (-kv[1], kv[0]))),
        inputs=tuple(_onnx_tensor(v) for v in proto.graph.input if v.name not in initializer_names),
        outputs=tuple(_onnx_tensor(v) for v in proto.graph.output),
    )


def _onnx_tensor(value_info: Any) -> OnnxTensor:
    import onnx

    tensor_type = value_info.type.tensor_type
    dims = tensor_type.shape.dim
    shape = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in dims)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    return OnnxTensor(value_info.name, dtype, shape)
