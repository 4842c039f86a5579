"""``edgeprune finetune``: recover accuracy after pruning with a registered recipe.

Checkpoints go to ``<out>.ckpt/`` after every epoch; ``--resume`` continues an interrupted run
from its last completed epoch with the same final weights. Exit codes: 0 fine-tuned and saved;
1 model/weights/data/checkpoint error; 2 bad flags; 130 interrupted (run again with --resume).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from edgeprune.cli._common import (
    add_batch_size,
    add_data,
    add_force,
    add_model_args,
    add_seed,
    add_threads,
    positive_int,
)
from edgeprune.cli._output import Output, table
from edgeprune.errors import OutputExistsError, UsageError


def INTERRUPTED(args: argparse.Namespace) -> str:  # read by cli.main (a message or this)
    ckpt = Path(str(Path(args.out)) + ".ckpt")
    if not ckpt.is_dir() or not any(ckpt.iterdir()):
        return "interrupted before the first epoch's checkpoint; run the command again"
    return (f"interrupted — checkpoints of the completed epochs are in {ckpt}/: run the same "
            "command with --resume to continue")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a (pruned) model with a recipe, resumably",
        description="Fine-tune a model on real data with a named recipe (full, partial, "
        "distill, or a TOML file with a [recipe] table) and save it as a model directory. "
        "'partial' trains only the pruned layers, their BatchNorm and the classifier at a low "
        "learning rate; 'distill' learns from the unpruned model too.",
        epilog="Example: edgeprune finetune --model runs/pruned --data builtin:mnist5k "
        "--recipe partial --epochs 10 --lr 1e-4 --out runs/finetuned. Exit codes: 0 ok, "
        "1 error, 2 usage, 130 interrupted (run again with --resume).")
    add_model_args(p)
    add_data(p)
    p.add_argument("--recipe", default="full", metavar="NAME|FILE",
                   help="recipe name (full, partial, distill) or a TOML file (default full)")
    p.add_argument("--epochs", type=positive_int, metavar="N",
                   help="epochs (default: the recipe's)")
    p.add_argument("--lr", type=float, metavar="X", help="learning rate (default: the recipe's)")
    p.add_argument("--schedule", dest="lr_schedule", choices=("cosine", "step", "constant"),
                   help="learning-rate schedule (default: the recipe's)")
    p.add_argument("--patience", type=int, metavar="N",
                   help="stop after N epochs without val gain (0: never)")
    p.add_argument("--max-batches", type=positive_int, metavar="N",
                   help="train batches per epoch (default: all)")
    p.add_argument("--val-batches", type=positive_int, metavar="N",
                   help="val batches checked after each epoch (default: all)")
    add_batch_size(p, default=64)
    add_threads(p)
    add_seed(p, default=None, help="seed of weights order and shuffling (default 0)")
    p.add_argument("--layers", metavar="A,B",
                   help="layers the partial recipe unfreezes (default: those the pruning "
                   "history of a pruned directory names)")
    p.add_argument("--teacher", metavar="SPEC",
                   help="unpruned model to distil from (default: the pruned directory's spec)")
    p.add_argument("--teacher-weights", metavar="FILE", help="weights of the teacher")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoints in <out>.ckpt/")
    add_force(p)
    return p


def _recipe(args: argparse.Namespace) -> Any:
    from edgeprune.config import read_toml
    from edgeprune.training.recipes import Recipe, get_recipe

    overrides = {key: value for key, value in (
        ("epochs", args.epochs), ("lr", args.lr), ("lr_schedule", args.lr_schedule),
        ("patience", args.patience), ("max_batches_per_epoch", args.max_batches),
        ("val_max_batches", args.val_batches), ("num_threads", args.threads),
        ("seed", args.seed)) if value is not None}
    if args.recipe.endswith(".toml") or Path(args.recipe).is_file():
        data = read_toml(args.recipe)
        table_ = data.get("recipe", data)
        base = Recipe.from_dict(table_, source=args.recipe)
        return Recipe.from_dict({**base.to_dict(), **overrides}, source=args.recipe)
    return get_recipe(args.recipe, **overrides)


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune._io import check_writable
    from edgeprune.data import example_input, input_paths, load_data
    from edgeprune.models import pruned_dir
    from edgeprune.models.load import load_model
    from edgeprune.pipeline import ModelSource, load_source
    from edgeprune.pruning.schedules import pruned_layers_from_history
    from edgeprune.training.evaluate import evaluate
    from edgeprune.training.finetune import finetune

    recipe = _recipe(args)
    check_writable(args.out, force=args.force, kind="dir",
                   inputs=(args.model, args.weights, args.teacher, args.teacher_weights,
                           *input_paths(args.data)))
    ckpt = Path(str(Path(args.out)) + ".ckpt")
    if ckpt.exists() and not (args.resume or args.force):
        raise OutputExistsError(f"checkpoints of an earlier run exist in {str(ckpt)!r}",
                                hint="pass --resume to continue that run or --force to start over")
    loaded = load_source(ModelSource(args.model, args.weights, args.input_shape))
    bundle = load_data(args.data, input_shape=tuple(loaded.input_shape[1:]),
                       batch_size=args.batch_size, seed=recipe.seed,
                       progress=None if out.json else out.progress)
    example = example_input(bundle, batch_size=1)
    layers: tuple[str, ...] = ()
    if recipe.trainable == "pruned":
        if args.layers:
            layers = tuple(n.strip() for n in args.layers.split(",") if n.strip())
        else:
            layers = pruned_layers_from_history(loaded.model, example, loaded.history)
        if not layers:
            raise UsageError(f"recipe {recipe.name!r} unfreezes the pruned layers, but the model "
                             "has no pruning history", hint="pass a pruned model directory, "
                             "--layers A,B, or use --recipe full")
    teacher = None
    if recipe.distill:
        spec = args.teacher or loaded.base_spec
        if args.teacher is None and args.teacher_weights is None and not spec.startswith(
                "builtin:"):
            raise UsageError("distillation needs the trained unpruned model as teacher",
                             hint="pass --teacher SPEC and --teacher-weights FILE")
        teacher = load_model(spec, weights=args.teacher_weights)
    before = evaluate(loaded.model, bundle.val)
    result = finetune(loaded.model, bundle.train, bundle.val, recipe, teacher=teacher,
                      pruned_layers=layers or None, checkpoint_dir=ckpt, resume=args.resume,
                      progress=None if out.json else out.progress)
    previous = (pruned_dir.read_manifest(args.model).extra
                if pruned_dir.is_pruned_dir(args.model) else {})
    record = {"job": "finetune", "source": args.model, "data": str(bundle.spec),
              "accuracy_before": before.to_dict(), "accuracy_after": result.final.to_dict(),
              "unfrozen_layers": list(layers), **result.to_dict()}
    path = pruned_dir.save(loaded.model, args.out, spec=loaded.base_spec,
                       input_shape=loaded.input_shape, history=loaded.history,
                       extra={**dict(previous), "finetune": record}, force=args.force)
    shutil.rmtree(ckpt, ignore_errors=True)
    out.result({"out": str(path), **record}, render)
    return 0


def render(r: dict[str, Any]) -> str:
    b, a = r["accuracy_before"], r["accuracy_after"]
    lines = [f"fine-tuned {r['source']} → {r['out']}  (recipe {r['recipe']['name']}, "
             f"{r['epochs_run']} epoch{'' if r['epochs_run'] == 1 else 's'}"
             f"{', stopped early' if r['stopped_early'] else ''})",
             f"  top-1  {b['top1']:.2%} → {a['top1']:.2%} on {r['data']} (val)",
             f"  best epoch {r['best_epoch']}" + (" (restored)" if r["restored_best"] else ""),
             f"  trainable parameters {r['trainable_params']:,}", ""]
    lines.append(table(("epoch", "train loss", "val top-1", "lr"),
                       [(h["epoch"], h["train_loss"], f"{h['val_top1']:.2%}", h["lr"])
                        for h in r["history"]]))
    return "\n".join(lines)
