"""The CLI options shared by commands, declared once, and model resolution (nothing heavy at
import). A command adds an option with the helper here rather than its own ``add_argument``, so
a flag reads and parses the same in every command; a command may word the help for its case."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Protocol

MODEL_HELP = ("torchvision:NAME[(k=v)], builtin:NAME, file.py:factory, package.module:factory, "
              "or a pruned model directory")


DATA_HELP = "builtin:mnist5k|digits|animals, imagefolder:PATH, cifar10:PATH, ..."
WEIGHTS_HELP = "state dict (.pt/.pth read with weights_only, or .safetensors)"
INPUT_SHAPE_HELP = ("input shape, batch 1 if omitted (default: what the model spec knows, e.g. "
                    "1,3,224,224)")


class Options(Protocol):
    """What a helper adds its flag to: a parser, or one of its argument groups (a command that
    shows the flag under a heading passes the group)."""

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action: ...


def add_model_args(parser: Options, *, positional: bool = False,
                   input_shape_help: str = INPUT_SHAPE_HELP) -> None:
    """``--model SPEC`` (or a positional MODEL), ``--weights FILE``, ``--input-shape``."""
    if positional:
        parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    else:
        parser.add_argument("--model", required=True, metavar="SPEC", help=MODEL_HELP)
    add_weights(parser)
    add_input_shape(parser, help=input_shape_help)


def add_weights(parser: Options, *, help: str = WEIGHTS_HELP) -> None:
    """``--weights FILE``: a state dict for the model spec."""
    parser.add_argument("--weights", metavar="FILE", help=help)


def add_input_shape(parser: Options, *, help: str = INPUT_SHAPE_HELP) -> None:
    """``--input-shape [N,]C,H,W`` (:func:`parse_shape`)."""
    parser.add_argument("--input-shape", metavar="[N,]C,H,W", type=parse_shape, help=help)


def add_data(parser: Options, *, required: bool = True, help: str = DATA_HELP) -> None:
    """``--data SPEC``: a data spec (docs/data.md)."""
    parser.add_argument("--data", required=required, metavar="SPEC", help=help)


def add_batch_size(parser: Options, *, default: int, help: str | None = None,
                   type: Callable[[str], int] | None = None) -> None:
    """``--batch-size N`` (at least 1; ``type=int`` where a command has always passed any
    integer on to the library to judge)."""
    parser.add_argument("--batch-size", type=type or positive_int, default=default, metavar="N",
                        help=help)


def add_seed(parser: Options, *, default: int | None = 0, help: str | None = None) -> None:
    """``--seed SEED``: the random seed (an integer)."""
    parser.add_argument("--seed", type=int, default=default, help=help)


def add_threads(parser: Options, *, help: str = "torch threads (default: the cores available)",
                type: Callable[[str], int] | None = None, metavar: str | None = "N") -> None:
    """``--threads N``: intra-op threads (at least 1; ``type=int`` where a command has always
    passed any integer on to the runtime to judge)."""
    parser.add_argument("--threads", type=type or positive_int, metavar=metavar, help=help)


def add_force(parser: Options, help: str = "overwrite an existing output") -> None:
    """``--force``: overwrite what the command would otherwise refuse to replace."""
    parser.add_argument("--force", action="store_true", help=help)


def add_measurement_runs(group: Options) -> None:
    """``--runs`` and ``--warmup`` of a device measurement."""
    group.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    group.add_argument("--warmup", type=int, default=10, help="warm-up runs (default 10)")


def add_repeats(group: Options) -> None:
    """``--repeats N``: fresh-process repeats of a noisy device measurement."""
    group.add_argument("--repeats", type=int, default=2,
                       help="fresh-process repeats of a noisy measurement (default 2)")


def add_no_cache(group: Options) -> None:
    """``--no-cache``: measure again rather than reuse a cached measurement."""
    group.add_argument("--no-cache", action="store_true", help="measure again even if cached")


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
