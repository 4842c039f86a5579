"""``edgeprune export``: write a model as ONNX (TFLite with the optional extra), checked.

The artifact is re-run in onnxruntime and compared with PyTorch before it is moved into place;
pass ``--data`` to compare on real images (otherwise on seeded random inputs, which the result
says). Exit codes: 0 written and checked; 1 export, parity or model error; 2 usage.

``_resolve_model`` and ``_input_shape`` here are the one place the export/info commands turn a
model spec or pruned directory into a module and an input shape.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeprune.cli._output import Output
from edgeprune.errors import UsageError

ARTIFACT_FORMATS = ("onnx", "tflite")
EXPORTERS = ("auto", "dynamo", "torchscript")  # mirrors edgeprune.export.EXPORTERS (kept light)
CHECK_CHUNKS = 4  # real-image batches compared when --data is given


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX (or TFLite), checked against PyTorch",
        description="Export a model spec or pruned directory to ONNX and compare onnxruntime's "
        "outputs with PyTorch's. Static shapes unless --dynamic-batch. One self-contained file "
        "when the model fits in 2 GB (easy to copy to a device), unless --external-data.",
        epilog="Exit codes: 0 ok, 1 export/parity/model error, 2 usage. "
        "(--format is the output format, text or json; the artifact format is --to.)",
    )
    add_model_args(parser)
    parser.add_argument("--out", required=True, metavar="FILE", help="artifact to write")
    parser.add_argument(
        "--to",
        choices=ARTIFACT_FORMATS,
        help="artifact format (default: from the --out suffix, else onnx)",
    )
    parser.add_argument("--opset", type=_positive_int, metavar="N", help="ONNX opset")
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
    parser.add_argument(
        "--data",
        metavar="SPEC",
        help="compare on real images from this data spec, e.g. builtin:digits",
    )
    parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (1e-3)")
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (1e-4)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    return parser


def add_model_args(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    if positional:
        parser.add_argument("model", metavar="MODEL", help=_MODEL_HELP)
    else:
        parser.add_argument("--model", required=True, metavar="SPEC", help=_MODEL_HELP)
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="state dict (.pt/.pth read with weights_only, or .safetensors)",
    )
    parser.add_argument(
        "--input-shape",
        type=parse_shape,
        metavar="N,C,H,W",
        help="input shape (default: what the model spec knows, e.g. 1,3,224,224)",
    )


_MODEL_HELP = (
    "torchvision:NAME, builtin:NAME, file.py:factory, package.module:factory, "
    "or a pruned model directory"
)


def run(args: argparse.Namespace, out: Output) -> int:
    fmt = args.to or ("tflite" if Path(args.out).suffix.lower() == ".tflite" else "onnx")
    if fmt == "onnx" and Path(args.out).suffix.lower() == ".tflite":
        raise UsageError("--to onnx with a .tflite output", hint="name the output FILE.onnx")
    model, shape = _resolve_model(args.model, args.weights, args.input_shape)
    example, check, source = _inputs(args.data, shape)

    from edgeprune import export

    if fmt == "tflite":
        result = export.export_tflite(model, example, args.out, force=args.force)
    else:
        result = export.export_onnx(
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


def _resolve_model(
    spec: str, weights: str | None, input_shape: tuple[int, ...] | None
) -> tuple[Any, tuple[int, ...]]:
    """A model spec or pruned directory → (module in eval mode, input shape with batch)."""
    from edgeprune import models, saving

    if saving.is_pruned_dir(spec):
        if weights:
            raise UsageError(
                "--weights cannot be combined with a pruned model directory",
                hint="the directory holds its own weights; drop --weights",
            )
        model = saving.load(spec)
    else:
        model = models.load_model(spec, weights=weights)
    model.eval()
    return model, _input_shape(spec, model, input_shape)


def _input_shape(spec: str, model: Any, given: tuple[int, ...] | None) -> tuple[int, ...]:
    if given:
        return given
    from edgeprune import models

    known = getattr(models, "default_input_shape", None)
    shape = (known(model) or known(spec)) if known else None
    if not shape:
        raise UsageError(
            f"cannot tell the input shape of {spec!r}",
            hint="pass --input-shape N,C,H,W (e.g. 1,3,224,224)",
        )
    return tuple(int(d) for d in shape)


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


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,224,224")
    return shape


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _render(data: dict[str, Any]) -> str:
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
