"""``edgeprune fit``: prune a model until it meets a device's budgets, measured on the device.

Exit codes: 0 every budget met; 3 the budget cannot be met (the best candidate and the full
report are still written); 1 errors; 2 bad flags; 130 interrupted (run the same command, or
``--resume DIR``, to continue from the last completed step).
"""

from __future__ import annotations

import argparse
import time
import types
import typing
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
                   "([fit.budget], [fit.search], ... with the flags' names, underscores for "
                   "dashes); flags override it")
    _add_setting_flags(p)
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/fit-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its settings")
    add_force(p)
    return p


def _add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One flag per setting, generated from the settings' sections (edgeprune.fit.settings):
    ``--<name>`` (or the field's ``flag``), its help and metavar, the section's argument group.
    Every default is None (False / [] for switches and repeatable flags): a flag not given
    leaves the --config file's value or the setting's default."""
    from dataclasses import fields

    from edgeprune.fit.settings import SECTIONS

    for name, cls in SECTIONS.items():
        if name == "device":  # the device options every device command shares: their source
            dests = add_target_options(  # None: a [fit] table may name it; else local
                p, default=None, target_help="a named target (edgeprune targets list) or a "
                "one-off SSH device (default: the --config file's, else local)")
            _check_device_flags(cls, dests)
            continue
        group: Any = p.add_argument_group(cls.TITLE) if cls.TITLE else p
        exclusive: dict[str, Any] = {}
        hints = typing.get_type_hints(cls)
        for field in fields(cls):
            meta = field.metadata
            kwargs: dict[str, Any] = {"dest": field.name, "default": None}
            for key in ("metavar", "help"):
                if meta.get(key):
                    kwargs[key] = meta[key]
            kind = _value_type(hints[field.name])
            if kind is bool:
                kwargs.pop("metavar", None)
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = parse_shape if kind is tuple else kind
            where = group
            if meta.get("exclusive"):
                if meta["exclusive"] not in exclusive:
                    exclusive[meta["exclusive"]] = group.add_mutually_exclusive_group()
                where = exclusive[meta["exclusive"]]
            where.add_argument("--" + (meta.get("flag") or field.name).replace("_", "-"),
                               **kwargs)


def _check_device_flags(cls: type, dests: list[str]) -> None:
    """The device flags are :func:`add_target_options`'s; ``settings_from_args`` reads them
    back by the device section's field names, so the two must name the same settings."""
    from dataclasses import fields

    names = sorted(f.name for f in fields(cls))
    if names != sorted(dests):
        raise TypeError(f"{cls.__name__} fields {names} differ from the device options "
                        f"{sorted(dests)} (cli.targets.add_target_options): change both")


def _value_type(hint: Any) -> Any:
    """``int`` for ``int | None``, ``tuple`` for a tuple type, else the type itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return tuple if typing.get_origin(hint) is tuple else hint


def _unset(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, list) and not value)


def settings_from_args(args: argparse.Namespace) -> Any:
    """FitSettings from the [fit] table of --config (if any) with the flags laid over it."""
    from edgeprune.errors import UsageError
    from edgeprune.fit.settings import FitSettings, load_fit_table, setting_fields

    given: dict[str, Any] = load_fit_table(args.config) if args.config else {}
    # not given: None, and for the switch and the repeatable flags False / []
    flags = {field.name: getattr(args, field.name) for _section, _cls, field in setting_fields()
             if not _unset(getattr(args, field.name))}
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

    # fit's own stages only: the fine-tunes and exports inside each step would drown them
    progress = None if out.json else out.progress_for("fit", "candidate", "measure")
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
