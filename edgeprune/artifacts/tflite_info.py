"""Static facts about a .tflite flatbuffer, read with the ``flatbuffers`` package following the
TFLite schema: no TFLite runtime (and no torch) is needed on the machine reading it."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.artifacts.onnx_info import OnnxTensor
from edgeprune.errors import ExportError, NotFoundError

__all__ = ["TFLITE_OPS", "TFLITE_TYPES", "TFLiteInfo", "tflite_info"]

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
