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
from edgeprune.cli.targets import add_target_options


def INTERRUPTED(args: argparse.Namespace) -> str:  # read by cli.main (a message or this)
    run_dir = getattr(args, "run_dir", None) or args.resume or args.out
    if not run_dir:
        return "interrupted before the run directory was made; run the command again"
    return (f"interrupted — {run_dir} keeps the last completed step: continue with "
            f"edgeprune fit --resume {run_dir}" + ("" if args.resume or not args.out else
                                                   " (or the same command again)"))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit", help="prune until the target's budgets are met, measuring on the device",
        description="Search pruned widths (strategy), fine-tune briefly between steps, measure "
        "candidates on the target, fine-tune the chosen model longer, re-measure it, and write a "
        "run directory: model/, model.onnx (batch 1), model-b<N>.onnx (the measured batch), "
        "report.json, candidates.csv, report.html, measurements.jsonl. Budgets come from the "
        "target's profile; a [fit] table (--config) and then each flag override them. A "
        "--speedup budget is judged on the ratio to the unpruned model measured beside each "
        "candidate, so a busy machine slows both alike; on the profile's percentile (p90 by "
        "default).",
        epilog="Example: edgeprune fit --target local --model builtin:mnist-cnn "
        "--data builtin:mnist5k --speedup 2 --max-accuracy-drop 1 --round-to 16 --out runs/fit. "
        "Exit codes: 0 met, 3 cannot be met (best candidate and report still written), 1 error, "
        "2 bad flags, 130 interrupted (run again to resume).")
    p.add_argument("--config", metavar="FILE", help="TOML file whose [fit] table holds settings "
                   "(keys as the flags, with underscores); flags override it")
    p.add_argument("--model", metavar="SPEC", help="model spec (builtin:NAME, torchvision:NAME, "
                   "file.py:factory, ...)")
    p.add_argument("--weights", metavar="FILE", help="state dict for the model")
    p.add_argument("--input-shape", metavar="[N,]C,H,W", type=parse_shape,
                   help="model input shape, batch 1 if omitted (default: what the spec knows)")
    p.add_argument("--data", metavar="SPEC", help="real data: builtin:mnist5k, imagefolder:PATH, "
                   "cifar10:PATH, file.py:factory")
    add_target_options(p, default=None)  # None: a [fit] table may name it; else local
    for action in p._actions:
        if action.dest == "target":
            action.help = ("a named target (edgeprune targets list) or a one-off SSH device "
                           "(default: the --config file's, else local)")
    budget = p.add_argument_group("budgets (override the profile's)")
    latency = budget.add_mutually_exclusive_group()
    latency.add_argument("--latency-ms", type=float, metavar="X",
                         help="latency budget in ms per measured batch (batch 1 unless "
                         "--measure-batch)")
    latency.add_argument("--speedup", type=float, metavar="X", help="latency budget as a "
                         "speed-up over the unpruned model measured in the same run, side by side")
    budget.add_argument("--max-accuracy-drop", type=float, metavar="P",
                        help="allowed top-1 loss in percentage points")
    budget.add_argument("--memory-mb", type=float, metavar="M",
                        help="peak RSS budget while measuring (judged at the measured batch)")
    budget.add_argument("--size-mb", type=float, metavar="S", help="ONNX size budget")
    search = p.add_argument_group("search")
    search.add_argument("--strategy", default=None, metavar="NAME",
                        help="search strategy: auto (default: knapsack with a latency budget, else "
                        "uniform), knapsack, netadapt or uniform (the baseline)")
    search.add_argument("--criterion", default=None, metavar="NAME",
                        help="importance (default l2)")
    search.add_argument("--round-to", type=int, default=None, metavar="N", help="keep channel "
                        "counts multiples of N (SIMD width: 16 for AVX-512 onnxruntime kernels)")
    search.add_argument("--max-ratio", type=float, default=None, metavar="R",
                        help="no group loses more than this fraction (default 0.9)")
    search.add_argument("--max-steps", type=int, default=None, metavar="N")
    search.add_argument("--uniform-tolerance", type=float, default=None, metavar="T",
                        help="uniform: stop when the ratio interval is this narrow (default 0.1)")
    search.add_argument("--netadapt-step", type=float, default=None, metavar="F",
                        help="netadapt: latency cut per step, fraction of the unpruned (0.1)")
    search.add_argument("--tradeoff-points", type=int, default=None, metavar="N",
                        help="candidates added after the search — a safety point --noise-margin "
                        "below the choice (the fallback if its final re-measure misses), then "
                        "looser and tighter latencies — to draw the trade-off curve in the "
                        "report (default 3, 0 = none)")
    search.add_argument("--netadapt-proposals", type=int, default=None, metavar="K",
                        help="netadapt: groups fine-tuned per step, those needing the fewest "
                        "channels removed (default 8, 0 = all)")
    train = p.add_argument_group("fine-tuning")
    train.add_argument("--batch-size", type=int, default=None, metavar="N",
                       help="training/evaluation batch (default 64)")
    train.add_argument("--epochs", type=int, default=None, metavar="N",
                       help="epochs of the final fine-tune (default 2)")
    train.add_argument("--final-batches", type=int, default=None, metavar="N",
                       help="batches per final fine-tune epoch, 0 = all (default 0)")
    train.add_argument("--step-epochs", type=int, default=None, metavar="N",
                       help="epochs of each short fine-tune between steps (default 1)")
    train.add_argument("--step-batches", type=int, default=None, metavar="N",
                       help="batches per short fine-tune epoch, 0 = all (default 20)")
    train.add_argument("--lr", type=float, default=None, metavar="LR", help="default 0.01")
    train.add_argument("--eval-batches", type=int, default=None, metavar="N",
                       help="val batches per candidate's accuracy, 0 = all (default 0)")
    meas = p.add_argument_group("measuring")
    meas.add_argument("--measure-batch", type=int, default=None, metavar="N",
                      help="batch of the timed ONNX (default: 1 for an absolute budget; for "
                      "--speedup, enough inputs for about 1 GMAC a run)")
    meas.add_argument("--threads", type=int, default=None, metavar="N",
                      help="intra-op threads (default: the profile's; 1 on the local target)")
    meas.add_argument("--runs", type=int, default=None, metavar="N",
                      help="timed runs per measurement (default 30)")
    meas.add_argument("--warmup", type=int, default=None, metavar="N", help="default 5")
    meas.add_argument("--max-repeats", type=int, default=None, metavar="N",
                      help="repeats of a noisy attempt inside one measurement (default 0)")
    meas.add_argument("--max-measurements", type=int, default=None, metavar="N",
                      help="cap on device measurements for the whole fit (default 30)")
    meas.add_argument("--noise-margin", type=float, default=None, metavar="F",
                      help="re-measure results within this fraction of the budget (0.15)")
    meas.add_argument("--verify-pairs", type=int, default=None, metavar="N",
                      help="re-measurements of the final model (default 2)")
    p.add_argument("--exporter", default=None, metavar="NAME", help="ONNX exporter (auto)")
    p.add_argument("--tflite", action="store_true", default=None,
                   help="also write model.tflite (needs the optional extra edgeprune[tflite])")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/fit-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its settings")
    add_force(p)
    return p


# flag dest -> FitSettings field (the same name unless listed)
_RENAMED = {"epochs": "final_epochs"}
_FLAGS = ("target", "profile", "identity_file", "known_hosts", "accept_new_host_key", "python",
          "targets_file", "profiles_file", "model", "weights", "input_shape", "data",
          "latency_ms", "speedup",
          "max_accuracy_drop", "memory_mb", "size_mb", "strategy", "criterion", "round_to",
          "max_ratio", "max_steps", "uniform_tolerance", "netadapt_step", "netadapt_proposals",
          "tradeoff_points", "batch_size", "epochs", "final_batches", "step_epochs",
          "step_batches", "lr",
          "eval_batches", "measure_batch", "threads", "runs", "warmup", "max_repeats",
          "max_measurements", "noise_margin", "verify_pairs", "exporter", "tflite", "seed")


def _unset(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, list) and not value)


def settings_from_args(args: argparse.Namespace) -> Any:
    """FitSettings from the [fit] table of --config (if any) with the flags laid over it."""
    from edgeprune.errors import UsageError
    from edgeprune.fit import FitSettings, load_fit_table

    given: dict[str, Any] = load_fit_table(args.config) if args.config else {}
    # not given: None, and for the switch and the repeatable flags False / []
    flags = {_RENAMED.get(flag, flag): getattr(args, flag) for flag in _FLAGS
             if not _unset(getattr(args, flag))}
    if "latency_ms" in flags or "speedup" in flags:  # a latency flag replaces the file's
        given.pop("latency_ms", None)
        given.pop("speedup", None)
    given.update(flags)
    if not given.get("model") or not given.get("data"):
        raise UsageError("fit needs --model and --data (or --resume DIR)",
                         hint="e.g. --model builtin:mnist-cnn --data builtin:mnist5k")
    return FitSettings(**given)


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune.errors import UsageError
    from edgeprune.fit import FitBudgetNotMetError, fit, resume
    from edgeprune.fit.report import summary_text

    progress = None if out.json else _progress(out)
    try:
        # Ctrl-C or SIGTERM (a cancelled CI job; cli.main makes both stick): the device is
        # cleaned up and the run directory keeps its last completed step for --resume
        if args.resume:
            if args.out or args.model or args.config:
                raise UsageError("--resume DIR takes its settings from DIR",
                                 hint="drop --out/--model/--config, or run without "
                                 "--resume")
            result = resume(args.resume, progress=progress)
        else:
            settings = settings_from_args(args)
            target_dir = args.out or time.strftime("runs/fit-%Y%m%d-%H%M%S")
            args.run_dir = target_dir
            result = fit(settings, target_dir, force=args.force, progress=progress)
    except FitBudgetNotMetError as exc:
        out.result(exc.result.to_dict(), lambda d: summary_text(d) + _where(d))
        raise
    out.result(result.to_dict(), lambda d: summary_text(d) + _where(d))
    return 0


def _where(report: dict[str, Any]) -> str:
    run_dir = report["out"]
    deployable = (report.get("deployable") or {}).get("file")
    lines = [f"\nreport: {run_dir}/report.html (also report.json, candidates.csv)"]
    if deployable:
        lines.append(f"model:  {run_dir}/{deployable} (batch 1), {run_dir}/model/ (PyTorch)")
    tflite = (report.get("deployable") or {}).get("tflite")
    if tflite:
        lines.append(f"tflite: {run_dir}/{tflite} (batch 1)")
    return "\n".join(lines)


def _progress(out: Output) -> Any:
    def emit(event: dict[str, Any]) -> None:
        if event.get("stage") in ("fit", "candidate", "measure") and event.get("message"):
            sys.stderr.write(f"  {event['message']}\n")
            sys.stderr.flush()

    return emit
