"""ONNX facts (``artifacts.onnx_info``: ``onnx_macs`` / ``onnx_info``): real exports against the
PyTorch count, and hand-built graphs for what the count cannot tell or leaves out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeprune.artifacts.onnx_info import declared_inputs, onnx_info, onnx_macs
from edgeprune.errors import NotFoundError
from edgeprune.models.cost import count_macs
from tests.test_cost import HAND_MACS, small_net


def _save(nodes: list, inputs: list, path: Path, initializers: list | None = None) -> Path:
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", inputs, [out], initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    import onnxruntime as ort

    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # a model it runs
    return path


def test_exported_model_macs_match_the_pytorch_count(tmp_path: Path) -> None:
    from edgeprune.artifacts.onnx_export import export_onnx

    net = small_net().eval()
    path = tmp_path / "small.onnx"
    export_onnx(net, torch.randn(1, 3, 16, 16), path, dynamic_batch=True)
    info = onnx_info(path)
    assert (info.macs, info.macs_note) == (HAND_MACS, "")
    assert info.macs_input_shapes == ((1, 3, 16, 16),)
    batch4 = onnx_info(path, input_shape=(4, 3, 16, 16))  # the dynamic batch filled from it
    assert batch4.macs == 4 * HAND_MACS == count_macs(net, torch.zeros(4, 3, 16, 16))
    assert batch4.macs_input_shapes == ((4, 3, 16, 16),)
    assert batch4.to_dict()["macs"] == 4 * HAND_MACS


def test_what_the_count_leaves_out_is_named(tmp_path: Path) -> None:
    """A MatMulInteger (quantized) and the MatMuls inside an If's branches are not counted,
    and the note says so; the top-level MatMul is."""
    w = numpy_helper.from_array(np.ones((4, 5), np.float32), "w")
    wq = numpy_helper.from_array(np.ones((4, 5), np.int8), "wq")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    xq = helper.make_tensor_value_info("xq", TensorProto.INT8, [2, 4])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])

    def branch(name: str) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)
        return helper.make_graph([helper.make_node("MatMul", ["x", "w"], [f"{name}_out"])],
                                 name, [], [out])

    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]),
             helper.make_node("MatMulInteger", ["xq", "wq"], ["q"]),
             helper.make_node("Cast", ["q"], ["qf"], to=TensorProto.FLOAT),
             helper.make_node("If", ["cond"], ["b"], then_branch=branch("then"),
                              else_branch=branch("else")),
             helper.make_node("Sum", ["a", "qf", "b"], ["out"])]
    path = _save(nodes, [x, xq, cond], tmp_path / "mixed.onnx", [w, wq])

    info = onnx_info(path)
    assert info.macs == 2 * 5 * 4  # the top-level MatMul only
    assert info.macs_note == "not counted: 1 MatMulInteger, 2 MatMul inside If bodies"
    assert onnx_macs(onnx.load(str(path))) == (info.macs, info.macs_note)


def test_unknown_shapes_give_no_count_and_say_why(tmp_path: Path) -> None:
    """A Conv whose weight is a graph input of unknown shape: no number rather than a wrong one."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, None)
    path = _save([helper.make_node("Conv", ["x", "w"], ["out"])], [x, w], tmp_path / "u.onnx")
    info = onnx_info(path)
    assert info.macs is None and info.macs_input_shapes == ()
    assert info.macs_note == ("shapes of 1 Conv/Gemm/MatMul node(s) are unknown to ONNX shape "
                              "inference")  # the input is fixed: --input-shape would not help


def test_unknown_because_of_a_missing_input_shape_names_the_flag(tmp_path: Path) -> None:
    """A dynamic input of another rank than --input-shape is set to 1s; a flatten then cannot
    meet the weights it feeds, and the note names the flag that fixes it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", "h", "w"])
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    w = numpy_helper.from_array(np.ones((48, 5), np.float32), "w")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["out"])]
    path = _save(nodes, [x], tmp_path / "r.onnx", [shape, w])
    assert onnx_info(path, input_shape=(1, 3, 4, 4)).macs == 48 * 5
    macs, note = onnx_macs(onnx.load(str(path)), (3, 4, 4))  # rank 3 for a rank-4 input
    assert (macs, note) == (None, "shapes of 1 Conv/Gemm/MatMul node(s) are unknown: pass "
                                  "--input-shape")


@pytest.mark.parametrize("dims, expected", [([0, 4], 0), ([-1, 4], 5 * 4), (["n", 4], 5 * 4)])
def test_only_dynamic_dims_are_filled(tmp_path: Path, dims: list, expected: int) -> None:
    """Dynamic as onnxruntime sees it (symbolic, unset or negative) takes the batch of 1; a 0 is
    a fixed size of zero there, and counts zero work."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    w = numpy_helper.from_array(np.ones((4, 5), np.float32), "w")
    path = _save([helper.make_node("MatMul", ["x", "w"], ["out"])], [x], tmp_path / "d.onnx", [w])
    assert onnx_info(path).macs == expected


def test_declared_inputs_reads_shapes_only(tmp_path: Path) -> None:
    """Fixed dims as ints, symbolic ones by name, unset or negative ones as ``?``; a scalar is
    ``[]``, an input that declares no shape None; an initializer listed as an input is no input.
    Only the graph is read: a missing external data file does not matter here (it does to
    onnx_info, which lists the files)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "n", None, -1])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [])
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, None)
    w_in = helper.make_tensor_value_info("w", TensorProto.FLOAT, [64])
    w = numpy_helper.from_array(np.ones(64, np.float32), "w")
    nodes = [helper.make_node("Mul", ["x", "s"], ["a"]), helper.make_node("Add", ["a", "q"], ["b"]),
             helper.make_node("ReduceSum", ["w"], ["c"], keepdims=0),
             helper.make_node("Add", ["b", "c"], ["out"])]
    path = _save(nodes, [x, s, q, w_in], tmp_path / "in.onnx", [w])
    expected = {"x": [2, "n", "?", "?"], "s": [], "q": None}
    assert declared_inputs(path) == expected

    ext = tmp_path / "ext.onnx"
    onnx.save_model(onnx.load(str(path)), str(ext), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.bin", size_threshold=0)
    (tmp_path / "ext.bin").unlink()
    assert declared_inputs(ext) == expected
    with pytest.raises(NotFoundError, match="ext.bin"):
        onnx_info(ext)
    with pytest.raises(NotFoundError, match="does not exist"):
        declared_inputs(tmp_path / "missing.onnx")
