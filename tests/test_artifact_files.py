"""The files an artifact is made of and their size on disk (``artifacts.files``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeprune.artifacts.files import artifact_files, size_on_disk
from edgeprune.errors import ArtifactError, NotFoundError


def test_size_on_disk_counts_onnx_external_data(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(torch.rand(64, 64).numpy(), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [weight],
    )
    path = tmp_path / "m.onnx"
    onnx.save_model(
        helper.make_model(graph),
        str(path),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    data = tmp_path / "weights.bin"
    assert data.stat().st_size >= 64 * 64 * 4
    assert size_on_disk(path) == path.stat().st_size + data.stat().st_size
    (tmp_path / "other.txt").write_text("x")
    assert size_on_disk(tmp_path) == size_on_disk(path) + 1
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"12345")
    assert size_on_disk(plain) == 5


def test_size_on_disk_missing_path(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        size_on_disk(tmp_path / "nope.onnx")


def _external(tmp_path: Path, location: str) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(torch.rand(8, 8).numpy(), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [weight])
    path = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(graph), str(path), save_as_external_data=True,
                    location=location, size_threshold=0)
    return path


def test_artifact_files_name_a_missing_external_data_file(tmp_path: Path) -> None:
    path = _external(tmp_path, "m.onnx.data")
    assert artifact_files(path) == [path, tmp_path / "m.onnx.data"]
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(NotFoundError, match="'m.onnx.data', not found"):
        artifact_files(path)
    with pytest.raises(NotFoundError):
        size_on_disk(path)


def test_external_data_outside_the_folder_is_refused(tmp_path: Path) -> None:
    import onnx

    path = _external(tmp_path, "w.bin")
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../w.bin"  # onnx itself refuses to write this; a crafted file can
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ArtifactError, match="outside its folder"):
        artifact_files(path)
