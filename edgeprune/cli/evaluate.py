"""``edgeprune evaluate``: top-1 / top-5 accuracy and loss of a model on a data spec.

Exit codes: 0 evaluated; 1 a model, weights or data problem (one line says which); 2 bad flags.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgeprune.cli._common import (
    add_batch_size,
    add_data,
    add_model_args,
    add_seed,
    add_threads,
)
from edgeprune.cli._output import Output


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy and loss of a model on a data set",
        description="Evaluate a classifier on the val (or train) split of a data spec and print "
        "top-1, top-5 and mean cross-entropy.",
        epilog="Data specs: builtin:digits|mnist5k|animals, imagefolder:PATH, cifar10:PATH, "
        "file.py:factory, package.module:factory (docs/data.md). "
        "Exit codes: 0 ok, 1 model/weights/data error, 2 usage.",
    )
    add_model_args(parser, input_shape_help="model input shape (default: what the model spec "
                   "knows, else the data's own shape)")
    add_data(parser, help="data spec, e.g. builtin:mnist5k or imagefolder:PATH")
    parser.add_argument("--split", choices=("val", "train"), default="val",
                        help="which split to evaluate on (default: val)")
    add_batch_size(parser, default=256, help="images per batch (default: 256)")
    parser.add_argument("--normalization", default="auto",
                        choices=("auto", "dataset", "imagenet", "none"),
                        help="image normalisation (default: auto, per data set; docs/data.md)")
    add_seed(parser, help="seed of the train/val split of data without one (default: 0)")
    add_threads(parser, help="torch intra-op threads for the pass (default: torch's own)")
    return parser


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune.data import load_data
    from edgeprune.models.load import default_input_shape, load_model
    from edgeprune.training.evaluate import evaluate

    model = load_model(args.model, weights=args.weights)
    shape = args.input_shape or default_input_shape(model) or default_input_shape(args.model)
    bundle = load_data(args.data, input_shape=shape, batch_size=args.batch_size, seed=args.seed,
                       normalization=args.normalization, progress=out.progress)
    result = evaluate(model, bundle.loader(args.split), progress=out.progress,
                      num_threads=args.threads, num_classes=bundle.num_classes)
    out.result({
        "model": args.model,
        "weights": args.weights,
        "data": str(bundle.spec),
        "split": args.split,
        **result.to_dict(),
        "input_shape": list(bundle.input_shape),
        "data_num_classes": bundle.num_classes,
    }, _render)
    return 0


def _render(data: dict[str, Any]) -> str:
    top5 = f"{data['top5']:.2%}" if data["top5"] is not None else "n/a (≤5 classes)"
    shape = "×".join(str(d) for d in data["input_shape"])
    return "\n".join([
        f"model   {data['model']}" + (f"  (weights {data['weights']})" if data["weights"] else ""),
        f"data    {data['data']}  [{data['split']}: {data['n_samples']} images at {shape}]",
        f"top-1   {data['top1']:.2%}",
        f"top-5   {top5}",
        f"loss    {data['loss']:.4f}",
    ])
