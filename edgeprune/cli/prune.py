"""``edgeprune prune``: one-shot structural pruning at a ratio and criterion, no search.

Exit codes: 0 pruned and saved; 1 model/weights/data/pruning error; 2 bad flags.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgeprune.cli._common import add_force, add_model_args
from edgeprune.cli._output import Output, table

CRITERIA = ("l1", "l2", "bn_scale", "taylor", "activation", "fpgm", "random")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prune", help="prune a model structurally (real channels removed)",
        description="Remove whole channels by an importance criterion, fix every dependent "
        "layer (BatchNorm, residual adds, downsample, concat, depthwise convs, classifier input) "
        "and save a pruned model directory that `edgeprune.load` rebuilds without pickles.",
        epilog="Example: edgeprune prune --model builtin:mnist-cnn --data builtin:mnist5k "
        "--criterion activation --ratio 0.5 --round-to 8 --out runs/pruned",
    )
    add_model_args(p)
    p.add_argument("--ratio", type=float, default=0.5,
                   help="fraction of channels removed per group (uniform) or overall (global); "
                   "default 0.5")
    p.add_argument("--criterion", default="l2", metavar="NAME",
                   help=f"importance criterion: {', '.join(CRITERIA)} (default l2)")
    p.add_argument("--scope", choices=("uniform", "global"), default="uniform",
                   help="uniform: the same ratio in every group; global: rank all channels")
    p.add_argument("--ratios", metavar="FILE",
                   help="per-layer ratios (TOML [ratios] table or JSON), e.g. from "
                   "`edgeprune sensitivity`")
    p.add_argument("--layers", type=_names, metavar="A,B",
                   help="prune only these layers' groups (e.g. layer2.0.conv1)")
    p.add_argument("--ignore", type=_names, default=(), metavar="A,B",
                   help="layers whose output channels are never pruned")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep channel counts a multiple of N (8 or 16 suit SIMD kernels)")
    p.add_argument("--steps", type=int, default=1, metavar="N",
                   help="prune iteratively in N steps, re-scoring in between")
    p.add_argument("--data", metavar="SPEC",
                   help="real data (builtin:mnist5k, imagefolder:PATH, cifar10:PATH, ...): "
                   "calibration for activation/taylor, accuracy before/after")
    p.add_argument("--calibration-batches", type=int, default=8, metavar="N",
                   help="real batches for activation/taylor scores (default 8)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N")
    p.add_argument("--no-eval", action="store_true", help="skip accuracy before/after")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR", help="pruned model directory to write")
    add_force(p)
    return p


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune.jobs import ModelSource, load_source, prune_job
    from edgeprune.prune import PruneConfig, load_layer_ratios

    layer_ratios = None
    if args.ratios:
        layer_ratios = load_layer_ratios(args.ratios, load_source(
            ModelSource(args.model, args.weights, args.input_shape)).model)
    config = PruneConfig(ratio=args.ratio, criterion=args.criterion, scope=args.scope,
                         layer_ratios=layer_ratios, layers=args.layers,
                         ignored_layers=args.ignore, round_to=args.round_to,
                         iterative_steps=args.steps, seed=args.seed)
    result = prune_job(ModelSource(args.model, args.weights, args.input_shape), config, args.out,
                       data=args.data, calibration_batches=args.calibration_batches,
                       batch_size=args.batch_size, evaluate=not args.no_eval, force=args.force,
                       progress=None if out.json else out.progress)
    out.result(result, render)
    return 0


def render(r: dict[str, Any]) -> str:
    lines = [f"pruned {r['source']} → {r['out']}",
             f"  params {r['params_before']:,} → {r['params_after']:,} "
             f"(-{100 * r['params_removed_ratio']:.1f}%)",
             f"  MACs   {r['macs_before']:,} → {r['macs_after']:,} "
             f"(-{100 * r['macs_removed_ratio']:.1f}%)"]
    if r.get("accuracy_before") and r.get("accuracy_after"):
        b, a = r["accuracy_before"], r["accuracy_after"]
        lines.append(f"  top-1  {100 * b['top1']:.2f}% → {100 * a['top1']:.2f}% on {r['data']} "
                     "(val split, before fine-tuning)")
    changed = [g for g in r["groups"] if g["channels_after"] != g["channels_before"]]
    if changed:
        lines.append("")
        lines.append(table(("group", "channels", "kept"),
                           [(g["root"], f"{g['channels_before']} → {g['channels_after']}",
                             f"{g['channels_after'] / g['channels_before']:.0%}")
                            for g in changed[:25]]))
        if len(changed) > 25:
            lines.append(f"  … {len(changed) - 25} more groups (--format json lists all)")
    lines.extend(f"note: {n}" for n in r.get("notes", []))
    return "\n".join(lines)
