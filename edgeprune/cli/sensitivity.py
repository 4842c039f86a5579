"""``edgeprune sensitivity``: prune each layer group alone at several ratios, measure the drop.

Writes ``sensitivity.json``, ``sensitivity.png`` and, with ``--max-drop`` and/or
``--target-reduction``, ``ratios.toml`` for ``edgeprune prune --ratios``.
Exit codes: 0 written; 1 model/data/pruning error; 2 bad flags.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgeprune.cli._common import add_batch_size, add_data, add_force, add_model_args, add_seed
from edgeprune.cli._output import Output, table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sensitivity", help="per-layer accuracy drop when each layer is pruned alone",
        description="Prune every channel group on its own at each ratio (no fine-tuning), "
        "measure val top-1, and recommend per-layer ratios for a target.",
        epilog="Example: edgeprune sensitivity --model builtin:mnist-cnn --data builtin:mnist5k "
        "--ratios 0.25,0.5,0.75 --target-reduction 0.5 --out runs/sens; then "
        "edgeprune prune ... --ratios runs/sens/ratios.toml")
    add_model_args(p)
    add_data(p, help="real data with a val split")
    p.add_argument("--ratios", type=_ratios, default=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                   metavar="R1,R2", help="ratios to try per layer (default 0.1,...,0.9)")
    p.add_argument("--criterion", default="l2", metavar="NAME", help="importance (default l2)")
    p.add_argument("--layers", metavar="A,B", help="only these group roots (default: all)")
    p.add_argument("--val-batches", type=int, metavar="N",
                   help="val batches per measurement (default: all; fewer is faster)")
    add_batch_size(p, default=256, type=int)
    p.add_argument("--max-drop", type=float, metavar="P",
                   help="per-layer top-1 drop allowed, in percentage points (as fit's "
                   "--max-accuracy-drop: 1 = one point)")
    p.add_argument("--target-reduction", type=float, metavar="X",
                   help="fraction of parameters to remove (ratios chosen by bisection)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    add_seed(p)
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the outputs")
    add_force(p)
    return p


def _ratios(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 0.25,0.5,0.75") from None
    if not values or any(not 0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError("ratios must lie strictly between 0 and 1")
    return values


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune._io import check_writable
    from edgeprune.data import calibration_batches, example_input, input_paths, load_data
    from edgeprune.pipeline import ModelSource, load_source
    from edgeprune.pruning.sensitivity import analyze, write_outputs

    check_writable(args.out, force=args.force, kind="dir",
                   inputs=(args.model, args.weights, *input_paths(args.data)))
    loaded = load_source(ModelSource(args.model, args.weights, args.input_shape))
    bundle = load_data(args.data, input_shape=tuple(loaded.input_shape[1:]),
                       batch_size=args.batch_size, seed=args.seed,
                       progress=None if out.json else out.progress)
    example = example_input(bundle, batch_size=1)
    calibration = labeled = None
    if args.criterion == "activation":
        calibration = calibration_batches(bundle, 8, 32, split="train", seed=args.seed)
    if args.criterion == "taylor":
        labeled = [(x, y) for i, (x, y) in zip(range(4), bundle.train, strict=False)]
    layers = [n.strip() for n in args.layers.split(",")] if args.layers else None
    result = analyze(loaded.model, bundle.val, example, ratios=args.ratios,
                     criterion=args.criterion, max_batches=args.val_batches,
                     calibration=calibration, labeled=labeled, layers=layers,
                     progress=None if out.json else out.progress)
    if args.max_drop is not None and not 0 <= args.max_drop <= 100:
        from edgeprune.errors import UsageError

        raise UsageError(f"--max-drop {args.max_drop:g} is not in [0, 100] points",
                         hint="e.g. --max-drop 1 for one point of top-1")
    max_drop = None if args.max_drop is None else args.max_drop / 100
    data = write_outputs(result, args.out, max_drop=max_drop,
                         target_reduction=args.target_reduction, model=loaded.model,
                         example_inputs=example, make_plot=not args.no_plot)
    out.result({"model": args.model, "data": str(bundle.spec), **data}, render)
    return 0


def render(d: dict[str, Any]) -> str:
    ratios = d["ratios"]
    rows = [(name, info["channels"], *[f"{100 * p['drop']:+.2f} pt" for p in info["points"]])
            for name, info in d["layers"].items()]
    lines = [f"sensitivity of {d['model']} on {d['data']}: baseline top-1 "
             f"{d['baseline_top1']:.2%}; drop when one layer is pruned alone", "",
             table(("layer", "channels", *[f"{r:g}" for r in ratios]), rows)]
    rec = d.get("recommendation")
    if rec:
        bound = rec["drop_bound"]
        lines += ["", "recommended ratios (per-layer drop ≤ "
                  + (f"{100 * bound:.2f} points" if bound is not None else "any") + "): "
                  f"removes {rec['reduction']:.1%} of parameters"
                  + ("" if rec["target_met"] else " — target NOT met")]
        lines += [f"  {k} = {v}" for k, v in rec["ratios"].items()]
    lines += ["", *[f"{k}: {v}" for k, v in d["files"].items()]]
    return "\n".join(lines)
