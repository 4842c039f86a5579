"""``edgeprune prune``: one-shot structural pruning at a ratio and criterion, no search.

Exit codes: 0 pruned and saved; 1 model/weights/data/pruning error; 2 bad flags.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgeprune.cli._common import add_batch_size, add_data, add_force, add_model_args, add_seed
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
    add_data(p, required=False, help="real data (builtin:mnist5k, imagefolder:PATH, "
             "cifar10:PATH, ...): calibration for activation/taylor, accuracy before/after")
    p.add_argument("--calibration-batches", type=int, default=8, metavar="N",
                   help="real batches for activation/taylor scores (default 8)")
    add_batch_size(p, default=64, type=int)
    p.add_argument("--no-eval", action="store_true", help="skip accuracy before/after")
    add_seed(p)
    g = p.add_argument_group("pipelines (need --data)")
    g.add_argument("--schedule", metavar="NAME",
                   help="oneshot | iterative | during-training | soft | retrain: prune and "
                   "train together (default: prune only, no training)")
    g.add_argument("--recipe", default="full", metavar="NAME",
                   help="fine-tuning recipe: full, partial (pruned blocks + BN + classifier at "
                   "lr 1e-4), distill (from the unpruned model); default full")
    g.add_argument("--epochs", type=int, default=2, metavar="N",
                   help="training epochs the schedule spends in total (default 2)")
    g.add_argument("--lr", type=float, metavar="X", help="learning rate (default: the recipe's)")
    g.add_argument("--max-batches", type=int, metavar="N",
                   help="cap batches per epoch (quick runs)")
    p.add_argument("--out", required=True, metavar="DIR", help="pruned model directory to write")
    add_force(p)
    return p


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune.errors import UsageError
    from edgeprune.pipeline import ModelSource, load_source, prune_job, schedule_job
    from edgeprune.pruning.prune_config import PruneConfig, load_layer_ratios

    layer_ratios = None
    if args.ratios:
        layer_ratios = load_layer_ratios(args.ratios, load_source(
            ModelSource(args.model, args.weights, args.input_shape)).model)
    config = PruneConfig(ratio=args.ratio, criterion=args.criterion, scope=args.scope,
                         layer_ratios=layer_ratios, layers=args.layers,
                         ignored_layers=args.ignore, round_to=args.round_to,
                         iterative_steps=args.steps, seed=args.seed)
    source = ModelSource(args.model, args.weights, args.input_shape)
    progress = None if out.json else out.progress
    if args.schedule:
        if not args.data:
            raise UsageError(f"--schedule {args.schedule} trains the model and needs --data",
                             hint="pass --data SPEC, e.g. builtin:mnist5k")
        result = schedule_job(source, config, args.out, data=args.data, schedule=args.schedule,
                              recipe=args.recipe, epochs=args.epochs, lr=args.lr,
                              max_batches=args.max_batches, batch_size=args.batch_size,
                              force=args.force, progress=progress)
        out.result(result, render_schedule)
        return 0
    result = prune_job(source, config, args.out,
                       data=args.data, calibration_batches=args.calibration_batches,
                       batch_size=args.batch_size, evaluate=not args.no_eval, force=args.force,
                       progress=progress)
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


def render_schedule(r: dict[str, Any]) -> str:
    def pct(acc: dict[str, Any] | None) -> str:
        return "–" if not acc else f"{100 * acc['top1']:.2f}%"

    lines = [f"{r['schedule']} pruning of {r['source']} → {r['out']} (recipe {r['recipe']})",
             f"  params {r['params_before']:,} → {r['params_after']:,}",
             f"  top-1  before {pct(r['accuracy_before'])}, right after pruning "
             f"{pct(r.get('accuracy_pruned'))}, after training {pct(r['accuracy_after'])} "
             f"on {r['data']} (val split)"]
    lines.extend(f"note: {n}" for n in r.get("notes", []))
    return "\n".join(lines)
