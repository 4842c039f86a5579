"""The files an artifact is made of, and their size: the one place that reads ONNX external data.

An ONNX model exported with weights beside it (``model.onnx`` + ``model.onnx.data``, or any other
``location`` its initializers declare) is several files; copying it to a device, hashing it for
the result cache and gating its size must all see the same list. ``.tflite`` files and pruned model
directories are what they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgeprune.errors import ArtifactError, NotFoundError

__all__ = ["artifact_files", "declared_external_data", "size_on_disk"]


def declared_external_data(path: str | os.PathLike[str]) -> list[str]:
    """The external-data file names an ONNX model declares (in order, each once).

    Names must stay inside the model's folder (a relative path without ``..``): a model that
    points elsewhere is refused rather than followed.
    """
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(f"cannot read ONNX model {path.name}: {exc}".splitlines()[0],
                            hint="check the file is a complete .onnx export") from None
    names: list[str] = []
    for tensor in _graph_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if location is None or location in names:
            continue
        if Path(location).is_absolute() or ".." in Path(location).parts:
            raise ArtifactError(f"{path.name} declares external data outside its folder: "
                                f"{location}", hint="re-export with weights beside the model")
        names.append(location)
    return names


def artifact_files(path: str | os.PathLike[str]) -> list[Path]:
    """The artifact plus every external-data file it declares; a declared file that is missing
    is an error naming it (a device could not load the model without it)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"artifact {str(path)!r} does not exist", hint="check the path")
    files = [path]
    if path.suffix.lower() != ".onnx":
        return files
    for name in declared_external_data(path):
        data = path.parent / name
        if not data.is_file():
            raise NotFoundError(f"{path.name} needs its external data file {name!r}, not found "
                                f"beside it", hint="copy the .data file next to the .onnx file")
        files.append(data)
    return files


def size_on_disk(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of an artifact: its files (see :func:`artifact_files`); a directory is the
    sum of every file under it."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{str(path)!r} does not exist", hint="check the path")
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return sum(f.stat().st_size for f in artifact_files(path))


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
