"""Flags and resolution shared by commands that take a model (nothing heavy at import)."""

from __future__ import annotations

import argparse
from typing import Any

from edgeprune.errors import UsageError


def add_model_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--model", required=required, metavar="SPEC",
                        help="torchvision:NAME[(k=v)], builtin:NAME, file.py:factory, "
                        "package.module:factory, or a pruned model directory")
    parser.add_argument("--weights", metavar="FILE",
                        help="state dict (.pt/.pth read with weights_only, or .safetensors)")
    parser.add_argument("--input-shape", metavar="N,C,H,W", type=parse_shape,
                        help="input shape (default: what the model spec knows, e.g. 1,3,224,224)")


def add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,224,224")
    return shape


def resolve_model(spec: str, weights: str | None,
                  input_shape: tuple[int, ...] | None) -> tuple[Any, tuple[int, ...]]:
    """Build the model and settle its input shape (flag, else what the spec/model knows)."""
    from edgeprune import models

    model = models.load_model(spec, weights=weights)
    shape = input_shape or models.default_input_shape(model) or models.default_input_shape(spec)
    if shape is None:
        raise UsageError(f"cannot tell the input shape of {spec!r}",
                         hint="pass --input-shape N,C,H,W (e.g. 1,3,224,224)")
    return model, tuple(shape)


def example_inputs(shape: tuple[int, ...], seed: int = 0) -> Any:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen)
