"""``edgeprune export``: write a model as ONNX (TFLite with the optional extra), checked.

The artifact is re-run in onnxruntime (a .tflite in ai-edge-litert) and compared with PyTorch
before it is moved into place; pass ``--data`` to compare on real images (otherwise on seeded
random inputs, which the result says). Exit codes: 0 written and checked; 1 export, parity or
model error; 2 usage.

``_resolve_model`` and ``_input_shape`` here are the one place the export/info commands turn a
model spec or pruned directory into a module and an input shape.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeprune.cli._common import add_data, add_force, add_model_args, positive_int, resolve_model
from edgeprune.cli._output import Output
from edgeprune.errors import UsageError

ARTIFACT_FORMATS = ("onnx", "tflite")
EXPORTERS = ("auto", "dynamo", "torchscript")  # mirrors artifacts.onnx_export.EXPORTERS
CHECK_CHUNKS = 4  # real-image batches compared when --data is given


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX (or TFLite), checked against PyTorch",
        description="Export a model spec or pruned directory to ONNX and compare onnxruntime's "
        "outputs with PyTorch's. Static shapes unless --dynamic-batch. One self-contained file "
        "when the model fits in 2 GB (easy to copy to a device), unless --external-data.",
        epilog="Exit codes: 0 ok, 1 export/parity/model error, 2 usage. "
        "--format names the artifact (onnx|tflite, same as --to) and/or the output (text|json).",
    )
    add_model_args(parser)
    parser.add_argument("--out", required=True, metavar="FILE", help="artifact to write")
    parser.add_argument(
        "--to",
        choices=ARTIFACT_FORMATS,
        help="artifact format (default: from the --out suffix, else onnx)",
    )
    parser.add_argument("--opset", type=positive_int, metavar="N", help="ONNX opset")
    parser.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="auto",
        help="torch exporter: auto tries dynamo, then TorchScript (default: auto)",
    )
    parser.add_argument(
        "--dynamic-batch", action="store_true", help="make the batch dimension dynamic"
    )
    parser.add_argument(
        "--external-data",
        action="store_true",
        help="always write the weights to FILE.data beside the .onnx",
    )
    add_data(parser, required=False,
             help="compare on real images from this data spec, e.g. builtin:digits")
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="TFLite only: NHWC inputs in the .tflite (default: NCHW, what the model takes)",
    )
    parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (1e-3)")
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (1e-4)")
    add_force(parser)
    return parser


def run(args: argparse.Namespace, out: Output) -> int:
    fmt = (args.to or getattr(args, "artifact_format", None)
           or ("tflite" if Path(args.out).suffix.lower() == ".tflite" else "onnx"))
    if fmt == "onnx" and Path(args.out).suffix.lower() == ".tflite":
        raise UsageError(f"an ONNX export named {args.out!r}",
                         hint="name the output FILE.onnx, or export to TFLite with --format "
                         "tflite")
    _check_flags(args, fmt)
    from edgeprune._io import check_writable

    check_writable(args.out, force=args.force, kind="file", inputs=(args.model, args.weights))
    model, shape = resolve_model(args.model, args.weights, args.input_shape)
    example, check, source = _inputs(args.data, shape)

    from edgeprune.artifacts import onnx_export, tflite

    if fmt == "tflite":
        result = tflite.export_tflite(
            model,
            example,
            args.out,
            check_inputs=check,
            channels_last=args.channels_last,
            rtol=args.rtol,
            atol=args.atol,
            force=args.force,
            progress=out.progress,
        )
    else:
        result = onnx_export.export_onnx(
            model,
            example,
            args.out,
            opset=args.opset,
            dynamic_batch=args.dynamic_batch,
            external_data=True if args.external_data else None,
            exporter=args.exporter,
            check_inputs=check,
            rtol=args.rtol,
            atol=args.atol,
            force=args.force,
            progress=out.progress,
        )
    out.result({"model": args.model, "check_inputs": source, **result.to_dict()}, _render)
    return 0


def _check_flags(args: argparse.Namespace, fmt: str) -> None:
    """Refuse flags that do not apply to the chosen artifact format instead of ignoring them."""
    if fmt == "tflite":
        onnx_only = [
            flag
            for flag, given in (
                ("--opset", args.opset is not None),
                ("--exporter", args.exporter != "auto"),
                ("--dynamic-batch", args.dynamic_batch),
                ("--external-data", args.external_data),
            )
            if given
        ]
        if onnx_only:
            raise UsageError(
                f"{', '.join(onnx_only)} {'applies' if len(onnx_only) == 1 else 'apply'} "
                "only to ONNX export",
                hint="drop it for a .tflite output, or write FILE.onnx",
            )
    elif args.channels_last:
        raise UsageError("--channels-last only applies to TFLite export", hint="drop it")


def _inputs(data: str | None, shape: tuple[int, ...]) -> tuple[Any, Any, str]:
    """Example inputs and check inputs: real images from ``data``, else seeded noise."""
    import torch

    if data is None:
        generator = torch.Generator().manual_seed(0)
        example = torch.randn(*shape, generator=generator)
        return example, None, "random normal, seed 0 (pass --data SPEC for real images)"
    if len(shape) != 4:
        raise UsageError(
            f"--data needs an image input shape N,C,H,W, not {shape}",
            hint="drop --data or pass --input-shape N,C,H,W",
        )
    from edgeprune.data import calibration_batches, load_data

    batch = shape[0]
    bundle = load_data(data, input_shape=shape[1:], batch_size=batch)
    images = calibration_batches(bundle, n_batches=1, batch_size=batch * CHECK_CHUNKS)[0]
    images = images[: len(images) - len(images) % batch]
    if len(images) == 0:
        raise UsageError(f"{data} has fewer than {batch} images", hint="use a smaller batch")
    return images[:batch], images, f"{len(images)} real images from {data}"


def _render(data: dict[str, Any]) -> str:
    if data.get("format") == "tflite":
        return _render_tflite(data)
    lines = [
        f"wrote {data['path']} ({data.get('format', 'onnx')}, opset {data['opset']}, "
        f"{data['exporter']} exporter, {data['size_bytes'] / 1e6:.2f} MB)",
    ]
    if len(data["files"]) > 1:
        lines.append("files (copy all of them): " + ", ".join(data["files"]))
    shapes = ", ".join("×".join(str(d) for d in s) for s in data["input_shapes"])
    lines.append(f"inputs: {shapes}")
    lines.append(
        f"parity: max |onnxruntime − PyTorch| = {data['max_abs_diff']:.3g} "
        f"(atol {data['atol']:g}, rtol {data['rtol']:g}) on {data['check_inputs']}"
    )
    lines.extend(f"note: {note}" for note in data.get("notes", []))
    return "\n".join(lines)


def _render_tflite(data: dict[str, Any]) -> str:
    layout = "NHWC" if data["channels_last"] else "NCHW"
    shapes = ", ".join("×".join(str(d) for d in s) for s in data["input_shapes"])
    lines = [
        f"wrote {data['path']} (tflite, litert-torch {data['litert_torch_version']}, "
        f"{data['size_bytes'] / 1e6:.2f} MB)",
        f"inputs: {shapes} ({layout})",
        f"parity: max |ai-edge-litert {data['ai_edge_litert_version']} − PyTorch| = "
        f"{data['max_abs_diff']:.3g} (atol {data['atol']:g}, rtol {data['rtol']:g}) "
        f"on {data['check_inputs']}",
    ]
    lines.extend(f"note: {note}" for note in data.get("notes", []))
    return "\n".join(lines)
