"""Torch-side model costs: parameters, multiply-accumulates (the one MAC counter), layer widths,
state-dict size. Facts about exported files are in :mod:`edgeprune.artifacts` (``onnx_info``,
``tflite_info``, ``files.size_on_disk``).

What :func:`count_macs` and :func:`layer_macs` count (one MAC = one multiply plus one add):

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
whole batch of ``example_inputs``. :func:`layer_macs` gives the same count per layer (by module
name); :func:`count_macs` is its sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "Inputs",
    "LayerWidth",
    "ModelInfo",
    "as_input_tuple",
    "count_macs",
    "count_params",
    "layer_macs",
    "layer_widths",
    "model_info",
    "state_dict_bytes",
    "width_table",
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
    return sum(layer_macs(model, example_inputs, include_norm=include_norm).values())


def layer_macs(
    model: nn.Module, example_inputs: Inputs, *, include_norm: bool = False
) -> dict[str, int]:
    """:func:`count_macs` per layer: module name -> its MACs for the whole batch, in the order the
    layers ran (a layer called twice counts twice). Only counted layers appear; their sum is
    :func:`count_macs`."""
    found: dict[str, int] = {}
    handles = []
    skip: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            skip.add(id(module.out_proj))
    for name, module in model.named_modules():
        if id(module) in skip:
            continue
        counter = _counter_for(module, include_norm)
        if counter is not None:
            hook = _hook(name, counter, found)
            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        _run(model, example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return found


def _hook(
    name: str, counter: Callable[[nn.Module, tuple[Any, ...], Any], int], found: dict[str, int]
) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if isinstance(module, nn.MultiheadAttention):  # query/key/value may come as keywords
            names = ("query", "key", "value")
            args = tuple(args) + tuple(kwargs[n] for n in names[len(args) :] if n in kwargs)
        found[name] = found.get(name, 0) + int(counter(module, args, output))

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


def width_table(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per conv/linear/norm layer its widths as plain data (``in``/``out``/``groups`` or
    ``features``): what a prune result records before and after."""
    widths: dict[str, dict[str, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            widths[name] = {
                "in": int(module.in_channels),
                "out": int(module.out_channels),
                "groups": int(module.groups),
            }
        elif isinstance(module, nn.Linear):
            widths[name] = {"in": int(module.in_features), "out": int(module.out_features)}
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            widths[name] = {"features": int(module.num_features)}
        elif isinstance(module, nn.LayerNorm):
            widths[name] = {"features": int(module.normalized_shape[-1])}
        elif isinstance(module, nn.GroupNorm):
            widths[name] = {"features": int(module.num_channels), "groups": int(module.num_groups)}
        elif isinstance(module, nn.modules.instancenorm._InstanceNorm):
            widths[name] = {"features": int(module.num_features)}
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
