"""``edgeprune info``: parameters, MACs, size on disk and layer widths of a model.

MODEL is an ``.onnx`` file (parameters from its initializers, MACs from the graph as ``gate``
counts them, size with external data, inputs and outputs), a ``.tflite`` file (parameters from
its constant tensors, read without a TFLite runtime; no MACs), a model spec or a pruned model
directory. Exit codes: 0 ok; 1 model error; 2 usage.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeprune.cli._common import add_model_args, resolve_model
from edgeprune.cli._output import Output, table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info",
        help="parameters, MACs, size on disk and layer widths of a model",
        description="Show static facts about a model: a model spec, a pruned directory, an "
        ".onnx or a .tflite file. MACs are multiply-accumulates of conv/linear layers for one "
        "forward pass at the input shape (whole batch); for an .onnx file they are read from "
        "the graph, dynamic dims filled from --input-shape (else 1).",
        epilog="Exit codes: 0 ok, 1 model error, 2 usage.",
    )
    add_model_args(parser, positional=True)
    parser.add_argument(
        "--all-layers",
        action="store_true",
        help="list norm layers too in the text output (JSON always has every layer)",
    )
    return parser


def run(args: argparse.Namespace, out: Output) -> int:
    if Path(args.model).suffix.lower() == ".onnx":  # read from the graph: no torch imported
        from edgeprune.artifacts.onnx_info import onnx_info

        info = onnx_info(args.model, input_shape=args.input_shape)
        out.result({"kind": "onnx", "model": args.model, **info.to_dict()}, _render_onnx)
        return 0
    if Path(args.model).suffix.lower() == ".tflite":
        from edgeprune.artifacts.tflite_info import tflite_info

        tfl = tflite_info(args.model)
        out.result({"kind": "tflite", "model": args.model, **tfl.to_dict(), "macs": None,
                    "macs_note": "not computed for TFLite"}, _render_onnx)
        return 0
    model, shape = resolve_model(args.model, args.weights, args.input_shape)
    import torch

    from edgeprune.artifacts.files import size_on_disk
    from edgeprune.models import cost

    model_info = cost.model_info(model, torch.zeros(*shape))
    disk = _files_on_disk(args.model, args.weights)
    data = {
        "kind": "pytorch",
        "model": args.model,
        "weights": args.weights,
        **model_info.to_dict(),
        "size_on_disk_bytes": size_on_disk(disk) if disk else None,
        "show_all_layers": args.all_layers,
    }
    out.result(data, _render_model)
    return 0


def _files_on_disk(spec: str, weights: str | None) -> Path | None:
    """What the model occupies on disk: a pruned directory or a weights file, if any."""
    from edgeprune.models import pruned_dir

    if pruned_dir.is_pruned_dir(spec):
        return Path(spec)
    return Path(weights) if weights else None


def _render_model(data: dict[str, Any]) -> str:
    shapes = ", ".join("×".join(str(d) for d in s) for s in data["input_shapes"])
    disk = data["size_on_disk_bytes"]
    lines = [
        f"model:        {data['model']}",
        f"params:       {data['params']:,}",
        f"MACs:         {data['macs']:,} ({data['macs'] / 1e9:.3f} G) at {shapes}",
        f"weights:      {data['size_bytes'] / 1e6:.2f} MB as float32",
        f"size on disk: {disk / 1e6:.2f} MB" if disk is not None else "size on disk: (no file)",
        "",
    ]
    rows = [
        (w["name"], w["kind"], w["in_width"], w["out_width"], w["groups"], _kernel(w))
        for w in data["widths"]
        if data["show_all_layers"] or "Norm" not in w["kind"]
    ]
    lines.append(table(("layer", "type", "in", "out", "groups", "kernel"), rows))
    return "\n".join(lines)


def _kernel(width: dict[str, Any]) -> str:
    return "×".join(str(k) for k in width["kernel_size"])


def _render_onnx(data: dict[str, Any]) -> str:
    if data["kind"] == "tflite":
        head = [f"model:        {data['path']} (TFLite schema {data['schema_version']}"
                + (f", {data['description']})" if data["description"] else ")"),
                f"params:       {data['params']:,} (constant tensors)"]
    else:
        head = [f"model:        {data['path']} (opset {data['opset']}, {data['producer']})",
                f"params:       {data['params']:,} (initializers; BatchNorm is usually folded)"]
    lines = [
        *head,
        _macs_line(data),
        f"size on disk: {data['size_bytes'] / 1e6:.2f} MB in {len(data['files'])} file(s)",
    ]
    if len(data["files"]) > 1:
        lines.append("files:        " + ", ".join(data["files"]))
    for kind in ("inputs", "outputs"):
        for t in data[kind]:
            shape = "×".join(str(d) for d in t["shape"])
            lines.append(f"{kind[:-1]:<13} {t['name']}: {t['dtype']} {shape}")
    ops = ", ".join(f"{op} {n}" for op, n in data["op_types"].items())
    lines.append(f"nodes:        {data['nodes']} ({ops})")
    return "\n".join(lines)


def _macs_line(data: dict[str, Any]) -> str:
    """MACs of an ONNX/TFLite file, or why there are none; what the count leaves out, if any."""
    macs, note = data.get("macs"), data.get("macs_note") or ""
    if macs is None:
        return f"MACs:         unknown ({note})" if note else "MACs:         unknown"
    shapes = ", ".join("×".join(str(d) for d in s) for s in data.get("macs_input_shapes") or [])
    at = f" at {shapes}" if shapes else ""
    return f"MACs:         {macs:,} ({macs / 1e9:.3f} G){at}" + (f"; {note}" if note else "")
