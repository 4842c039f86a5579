"""The CLI options shared by commands, declared once, and model resolution (nothing heavy at
import). A command adds an option with the helper here rather than its own ``add_argument``, so
a flag reads and parses the same in every command; a command may word the help for its case."""

from __future__ import annotations

import argparse
from typing import Any

MODEL_HELP = ("torchvision:NAME[(k=v)], builtin:NAME, file.py:factory, package.module:factory, "
              "or a pruned model directory")


DATA_HELP = "builtin:mnist5k|digits|animals, imagefolder:PATH, cifar10:PATH, ..."
WEIGHTS_HELP = "state dict (.pt/.pth read with weights_only, or .safetensors)"
INPUT_SHAPE_HELP = ("input shape, batch 1 if omitted (default: what the model spec knows, e.g. "
                    "1,3,224,224)")


def add_model_args(parser: argparse.ArgumentParser, *, positional: bool = False,
                   input_shape_help: str = INPUT_SHAPE_HELP) -> None:
    """``--model SPEC`` (or a positional MODEL), ``--weights FILE``, ``--input-shape``."""
    if positional:
        parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    else:
        parser.add_argument("--model", required=True, metavar="SPEC", help=MODEL_HELP)
    parser.add_argument("--weights", metavar="FILE", help=WEIGHTS_HELP)
    parser.add_argument("--input-shape", metavar="[N,]C,H,W", type=parse_shape,
                        help=input_shape_help)


def add_data(parser: argparse.ArgumentParser, *, required: bool = True,
             help: str = DATA_HELP) -> None:
    """``--data SPEC``: a data spec (docs/data.md)."""
    parser.add_argument("--data", required=required, metavar="SPEC", help=help)


def add_batch_size(parser: argparse.ArgumentParser, *, default: int,
                   help: str | None = None) -> None:
    """``--batch-size N`` (at least 1)."""
    parser.add_argument("--batch-size", type=positive_int, default=default, metavar="N",
                        help=help)


def add_threads(parser: argparse.ArgumentParser, *,
                help: str = "torch threads (default: the cores available)") -> None:
    """``--threads N``: torch intra-op threads of this process (at least 1)."""
    parser.add_argument("--threads", type=positive_int, metavar="N", help=help)


def add_force(parser: argparse.ArgumentParser,
              help: str = "overwrite an existing output") -> None:
    parser.add_argument("--force", action="store_true", help=help)


def parse_shape(text: str) -> tuple[int, ...]:
    """An input shape with its batch: ``N,C,H,W``, or ``C,H,W`` for batch 1 (an image's
    channels, height and width); ``x`` separates as well as ``,`` (``1x3x224x224``)."""
    try:
        shape = tuple(int(p) for p in text.lower().replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,224,224 or "
                                         "3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,224,224 or 3,224,224")
    from edgeprune.pipeline import with_batch

    return with_batch(shape)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def resolve_model(spec: str, weights: str | None,
                  input_shape: tuple[int, ...] | None) -> tuple[Any, tuple[int, ...]]:
    """A model spec or pruned directory → (module in eval mode, input shape with batch)."""
    from edgeprune.pipeline import ModelSource, load_source

    loaded = load_source(ModelSource(spec, weights, input_shape))
    return loaded.model, loaded.input_shape
