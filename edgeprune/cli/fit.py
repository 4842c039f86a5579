"""``edgeprune fit``: prune a model until it meets a device's budgets, measured on the device.

Exit codes: 0 every budget met; 3 the budget cannot be met (the best candidate and the full
report are still written); 1 errors; 2 bad flags; 130 interrupted (run the same command, or
``--resume DIR``, to continue from the last completed step).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from edgeprune.cli._common import add_force, parse_shape
from edgeprune.cli._output import Output


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit", help="prune until the target's budgets are met, measuring on the device",
        description="Search pruned widths (strategy), fine-tune briefly between steps, measure "
        "every accepted step on the target, fine-tune the chosen model longer, and write a run "
        "directory: model/, model.onnx, report.json, candidates.csv, report.html. Budgets come "
        "from the target's profile; each flag overrides one. Latency is per batch of "
        "--measure-batch inputs, judged on the profile's percentile (p90 by default).",
        epilog="Example: edgeprune fit --target local --model builtin:mnist-cnn "
        "--data builtin:mnist5k --speedup 1.5 --out runs/fit1. Exit codes: 0 met, 3 cannot be "
        "met, 1 error, 130 interrupted (run again to resume).")
    p.add_argument("--target", default=None, metavar="NAME", help="device (default: local)")
    p.add_argument("--model", metavar="SPEC", help="model spec (builtin:NAME, torchvision:NAME, "
                   "file.py:factory, ...)")
    p.add_argument("--weights", metavar="FILE", help="state dict for the model")
    p.add_argument("--input-shape", metavar="N,C,H,W", type=parse_shape)
    p.add_argument("--data", metavar="SPEC", help="real data: builtin:mnist5k, imagefolder:PATH, "
                   "cifar10:PATH, file.py:factory")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--latency-ms", type=float, metavar="X",
                        help="latency budget in ms per measured batch")
    budget.add_argument("--speedup", type=float, metavar="X", help="latency budget as a "
                        "speed-up over the unpruned model measured in the same run")
    p.add_argument("--max-accuracy-drop", type=float, metavar="P",
                   help="allowed top-1 loss in percentage points")
    p.add_argument("--memory-mb", type=float, metavar="M", help="peak RSS budget while measuring")
    p.add_argument("--size-mb", type=float, metavar="S", help="ONNX size budget")
    p.add_argument("--strategy", default=None, metavar="NAME",
                   help="search strategy: uniform (default) or netadapt")
    p.add_argument("--criterion", default=None, metavar="NAME", help="importance (default l2)")
    p.add_argument("--round-to", type=int, default=None, metavar="N")
    p.add_argument("--max-ratio", type=float, default=None, metavar="R",
                   help="no group loses more than this fraction (default 0.9)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="training/evaluation batch (default 64)")
    p.add_argument("--measure-batch", type=int, default=None, metavar="N",
                   help="batch of the measured ONNX (default 64)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="epochs of the final fine-tune (default 2)")
    p.add_argument("--step-epochs", type=int, default=None, metavar="N",
                   help="epochs of each short fine-tune between steps (default 1)")
    p.add_argument("--step-batches", type=int, default=None, metavar="N",
                   help="batches per short fine-tune epoch, 0 = all (default 20)")
    p.add_argument("--final-batches", type=int, default=None, metavar="N",
                   help="batches per final fine-tune epoch, 0 = all (default 0)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N")
    p.add_argument("--runs", type=int, default=None, metavar="N", help="timed runs per measure")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/fit-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its settings")
    add_force(p)
    return p


_FLAGS = {"target": "target", "model": "model", "weights": "weights",
          "input_shape": "input_shape", "data": "data", "latency_ms": "latency_ms",
          "speedup": "speedup", "max_accuracy_drop": "max_accuracy_drop",
          "memory_mb": "memory_mb", "size_mb": "size_mb", "strategy": "strategy",
          "criterion": "criterion", "round_to": "round_to", "max_ratio": "max_ratio",
          "batch_size": "batch_size", "measure_batch": "measure_batch", "epochs": "final_epochs",
          "step_epochs": "step_epochs", "step_batches": "step_batches",
          "final_batches": "final_batches", "max_steps": "max_steps", "runs": "runs",
          "seed": "seed"}


def settings_from_args(args: argparse.Namespace) -> Any:
    from edgeprune.errors import UsageError
    from edgeprune.fit import FitSettings

    given = {field: getattr(args, flag) for flag, field in _FLAGS.items()
             if getattr(args, flag) is not None}
    if not given.get("model") or not given.get("data"):
        raise UsageError("fit needs --model and --data (or --resume DIR)",
                         hint="e.g. --model builtin:mnist-cnn --data builtin:mnist5k")
    return FitSettings(**given)


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune.errors import UsageError
    from edgeprune.fit import FitBudgetNotMetError, fit, resume
    from edgeprune.report import summary_text

    progress = None if out.json else _progress(out)
    try:
        if args.resume:
            if args.out or args.model:
                raise UsageError("--resume DIR takes its settings from DIR",
                                 hint="drop --out/--model, or run without --resume")
            result = resume(args.resume, progress=progress)
        else:
            settings = settings_from_args(args)
            target_dir = args.out or time.strftime("runs/fit-%Y%m%d-%H%M%S")
            result = fit(settings, target_dir, force=args.force, progress=progress)
    except FitBudgetNotMetError as exc:
        out.result(exc.result.to_dict(), lambda d: summary_text(d))
        raise
    out.result(result.to_dict(), lambda d: summary_text(d) + f"\nrun directory: {d['out']}")
    return 0


def _progress(out: Output) -> Any:
    def emit(event: dict[str, Any]) -> None:
        if event.get("stage") in ("fit", "candidate", "measure") and event.get("message"):
            sys.stderr.write(f"  {event['message']}\n")
            sys.stderr.flush()

    return emit
