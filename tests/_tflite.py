"""A small, real TFLite model for tests, built without TensorFlow or a converter.

This is a CONSTRUCTED SAMPLE, not a converted model: the file is assembled by hand with the
``flatbuffers`` package, field by field, following the published TFLite schema
(``tensorflow/compiler/mlir/lite/schema/schema.fbs``: ``Model`` / ``SubGraph`` / ``Tensor`` /
``Buffer`` / ``Operator`` / ``OperatorCode``, file identifier ``TFL3``). The converter
(litert-torch) is a 1.2 GB optional extra kept out of CI; a hand-built flatbuffer is enough to
drive the real TFLite interpreter (``ai_edge_litert`` / ``tflite_runtime``) through edgeprune's
measuring path.

The graph: ``FULLY_CONNECTED(x, W, b)`` (float32 weights ``W`` of shape [out, in] and bias ``b``
stored in the file's buffers), optionally followed by ``SOFTMAX`` (beta 1). Its output is
``x @ W.T + b`` (then softmax) — :func:`reference` computes that with numpy, and the tests check
the interpreter agrees, so a malformed file cannot pass as a working one.

Field slot numbers below are the field order of the schema tables (slot i = i-th field);
``tests/test_tflite.py`` re-reads the file with the schema's generated Python reader to check
them independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["TFLiteSample", "make_fc_model", "reference"]

# schema.fbs enums
TENSOR_FLOAT32 = 0  # TensorType.FLOAT32
OP_FULLY_CONNECTED = 9  # BuiltinOperator.FULLY_CONNECTED
OP_SOFTMAX = 25  # BuiltinOperator.SOFTMAX
OPTIONS_FULLY_CONNECTED = 8  # BuiltinOptions.FullyConnectedOptions
OPTIONS_SOFTMAX = 9  # BuiltinOptions.SoftmaxOptions
SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class TFLiteSample:
    path: Path
    weight: np.ndarray  # [out_features, in_features] float32
    bias: np.ndarray  # [out_features] float32
    softmax: bool
    input_shape: tuple[int, ...]

    @property
    def param_count(self) -> int:
        return int(self.weight.size + self.bias.size)


def reference(sample: TFLiteSample, x: np.ndarray) -> np.ndarray:
    """What the model computes, in numpy (float64 accumulate, float32 result)."""
    y = x.astype(np.float64) @ sample.weight.T.astype(np.float64) + sample.bias
    if sample.softmax:
        y = np.exp(y - y.max(axis=-1, keepdims=True))
        y = y / y.sum(axis=-1, keepdims=True)
    return y.astype(np.float32)


def make_fc_model(path: Path, *, in_features: int = 64, out_features: int = 10,
                  softmax: bool = True, batch: int = 1, dynamic_batch: bool = False,
                  seed: int = 0) -> TFLiteSample:
    """Write the sample model to ``path``; ``dynamic_batch`` records batch -1 in the input's
    ``shape_signature`` (the interpreter still allocates ``batch`` until resized)."""
    import flatbuffers

    rng = np.random.RandomState(seed)
    weight = (rng.standard_normal((out_features, in_features)) / np.sqrt(in_features)).astype(
        np.float32)
    bias = (0.1 * rng.standard_normal(out_features)).astype(np.float32)
    b = flatbuffers.Builder(1024)

    def end_vector(n: int) -> int:
        try:
            return b.EndVector()
        except TypeError:  # flatbuffers < 2 wants the length
            return b.EndVector(n)

    def int32_vector(values: list[int]) -> int:
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependInt32(v)
        return end_vector(len(values))

    def offset_vector(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return end_vector(len(offsets))

    def data_vector(data: bytes) -> int:
        # Buffer.data is [ubyte] (force_align: 16): constant tensors are read in place.
        b.StartVector(1, len(data), 16)
        b.head = b.head - len(data)
        b.Bytes[b.head:b.head + len(data)] = data
        return end_vector(len(data))

    # Buffers: 0 is the empty sentinel every non-constant tensor points at; 1 weights; 2 bias.
    buffers = []
    for payload in (None, weight.tobytes(), bias.tobytes()):
        data = data_vector(payload) if payload else None
        b.StartObject(3)  # Buffer: data, offset, size
        if data is not None:
            b.PrependUOffsetTRelativeSlot(0, data, 0)
        buffers.append(b.EndObject())

    # Tensors: (name, shape, buffer index, shape_signature or None)
    specs = [("x", [batch, in_features], 0, [-1, in_features] if dynamic_batch else None),
             ("fc.weight", [out_features, in_features], 1, None),
             ("fc.bias", [out_features], 2, None),
             ("logits", [batch, out_features], 0, [-1, out_features] if dynamic_batch else None)]
    if softmax:
        specs.append(("probs", [batch, out_features], 0,
                      [-1, out_features] if dynamic_batch else None))
    tensors = []
    for name, shape, buffer, signature in specs:
        name_off = b.CreateString(name)
        shape_off = int32_vector(shape)
        sig_off = int32_vector(signature) if signature is not None else None
        b.StartObject(11)  # Tensor
        b.PrependUOffsetTRelativeSlot(0, shape_off, 0)  # shape
        b.PrependInt8Slot(1, TENSOR_FLOAT32, 0)  # type
        b.PrependUint32Slot(2, buffer, 0)  # buffer
        b.PrependUOffsetTRelativeSlot(3, name_off, 0)  # name
        if sig_off is not None:
            b.PrependUOffsetTRelativeSlot(7, sig_off, 0)  # shape_signature
        tensors.append(b.EndObject())

    # Operator codes: FULLY_CONNECTED (and SOFTMAX), version 1.
    codes = [OP_FULLY_CONNECTED] + ([OP_SOFTMAX] if softmax else [])
    code_offs = []
    for code in codes:
        b.StartObject(4)  # OperatorCode
        b.PrependInt8Slot(0, code, 0)  # deprecated_builtin_code (codes < 127 live here too)
        b.PrependInt32Slot(2, 1, 1)  # version
        b.PrependInt32Slot(3, code, 0)  # builtin_code
        code_offs.append(b.EndObject())

    # Operators.
    b.StartObject(6)  # FullyConnectedOptions: fused_activation_function NONE, DEFAULT weights
    fc_options = b.EndObject()
    fc_inputs, fc_outputs = int32_vector([0, 1, 2]), int32_vector([3])
    b.StartObject(14)  # Operator
    b.PrependUint32Slot(0, 0, 0)  # opcode_index
    b.PrependUOffsetTRelativeSlot(1, fc_inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, fc_outputs, 0)
    b.PrependUint8Slot(3, OPTIONS_FULLY_CONNECTED, 0)  # builtin_options_type
    b.PrependUOffsetTRelativeSlot(4, fc_options, 0)  # builtin_options
    operators = [b.EndObject()]
    if softmax:
        b.StartObject(1)  # SoftmaxOptions
        b.PrependFloat32Slot(0, 1.0, 0.0)  # beta (the schema's default is 0: set it)
        sm_options = b.EndObject()
        sm_inputs, sm_outputs = int32_vector([3]), int32_vector([4])
        b.StartObject(14)
        b.PrependUint32Slot(0, 1, 0)
        b.PrependUOffsetTRelativeSlot(1, sm_inputs, 0)
        b.PrependUOffsetTRelativeSlot(2, sm_outputs, 0)
        b.PrependUint8Slot(3, OPTIONS_SOFTMAX, 0)
        b.PrependUOffsetTRelativeSlot(4, sm_options, 0)
        operators.append(b.EndObject())

    tensors_off = offset_vector(tensors)
    sg_inputs = int32_vector([0])
    sg_outputs = int32_vector([len(specs) - 1])
    operators_off = offset_vector(operators)
    sg_name = b.CreateString("main")
    b.StartObject(6)  # SubGraph
    b.PrependUOffsetTRelativeSlot(0, tensors_off, 0)
    b.PrependUOffsetTRelativeSlot(1, sg_inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, sg_outputs, 0)
    b.PrependUOffsetTRelativeSlot(3, operators_off, 0)
    b.PrependUOffsetTRelativeSlot(4, sg_name, 0)
    subgraph = b.EndObject()

    codes_off = offset_vector(code_offs)
    subgraphs_off = offset_vector([subgraph])
    buffers_off = offset_vector(buffers)
    description = b.CreateString("edgeprune test sample (hand-built from schema.fbs)")
    b.StartObject(10)  # Model
    b.PrependUint32Slot(0, SCHEMA_VERSION, 0)  # version
    b.PrependUOffsetTRelativeSlot(1, codes_off, 0)  # operator_codes
    b.PrependUOffsetTRelativeSlot(2, subgraphs_off, 0)  # subgraphs
    b.PrependUOffsetTRelativeSlot(3, description, 0)  # description
    b.PrependUOffsetTRelativeSlot(4, buffers_off, 0)  # buffers
    model = b.EndObject()
    b.Finish(model, file_identifier=FILE_IDENTIFIER)

    path = Path(path)
    path.write_bytes(bytes(b.Output()))
    return TFLiteSample(path=path, weight=weight, bias=bias, softmax=softmax,
                        input_shape=(batch, in_features))
