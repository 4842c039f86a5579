"""The one path from a model to the artifact a device measures.

``fit`` (every candidate), ``gate`` (a pruned directory) and ``measure`` (a spec or directory)
all measure an ONNX export checked against PyTorch; they get it here, so an exporter option or a
check added once applies to every measurement.
"""

from __future__ import annotations

import os
from typing import Any

from edgeprune.pipeline.sources import Progress

__all__ = ["export_for_measuring"]


def export_for_measuring(model: Any, example_inputs: Any, out: str | os.PathLike[str], *,
                         exporter: str = "auto", progress: Progress | None = None) -> Any:
    """Export ``model`` at ``example_inputs``' shape to ONNX at ``out`` (replacing a previous
    export there: these files are edgeprune's own), checked against PyTorch; returns the
    :class:`~edgeprune.artifacts.onnx_export.ExportResult`."""
    from edgeprune.artifacts.onnx_export import export_onnx

    return export_onnx(model, example_inputs, out, exporter=exporter, force=True,
                       progress=progress)
