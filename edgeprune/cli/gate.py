"""``edgeprune gate``: refuse a release whose artifact no longer fits its device.

Budgets come from a profile (``--profile``, else the gate file's, else the target's), then a gate
file (``--gate-file`` or ``./edgeprune-gate.toml``), then flags — each layer overriding the one
before. See docs/ci-gate.md. The table, ``--format json`` and ``--junit`` are rendered from the
same :class:`edgeprune.release.gate.GateResult`, so they and the exit code always agree.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from edgeprune.cli._common import (
    add_force,
    add_input_shape,
    add_measurement_runs,
    add_no_cache,
    add_repeats,
)
from edgeprune.cli._output import Output, table
from edgeprune.cli.targets import add_target_options, target_from_args

EPILOG = ("Exit codes: 0 every budget met (skipped ones do not fail unless --strict), 4 a budget "
          "exceeded or a regression over the baseline, 1 error (missing or corrupt artifact, "
          "unknown profile, bad gate file, device unreachable), 2 usage.")
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_TOLERANCE_KEYS = {"size": "model_size_pct", "model_size": "model_size_pct", "macs": "macs_pct",
                   "latency": "latency_pct"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "gate", help="fail a release that exceeds its device's budgets",
        description="Check .onnx (with external data), .tflite files or pruned model directories "
        "against a profile's budgets: size on disk, parameters, MACs and — with --target — "
        "latency and peak memory measured on the device. Prints a table (or --format json, "
        "--junit FILE); one line per failure says why.", epilog=EPILOG)
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                   help=".onnx, .tflite or a pruned model directory")
    add_target_options(p, default=None)
    b = p.add_argument_group("budgets (override the profile's and the gate file's)")
    b.add_argument("--gate-file", metavar="PATH",
                   help="a gate TOML file (default: ./edgeprune-gate.toml when it exists)")
    b.add_argument("--no-gate-file", action="store_true",
                   help="ignore ./edgeprune-gate.toml")
    b.add_argument("--size-mb", type=_positive, metavar="MB", help="max size on disk (10^6 B)")
    b.add_argument("--params", type=_count, metavar="N", help="max parameters, e.g. 1.5M")
    b.add_argument("--macs", type=_count, metavar="N", help="max MACs, e.g. 600M")
    b.add_argument("--latency-ms", type=_positive, metavar="MS", help="max measured latency")
    b.add_argument("--latency-ratio", type=_positive, metavar="R",
                   help="max latency over --reference's (0.5 = twice as fast)")
    b.add_argument("--percentile", type=int, choices=(50, 90, 95, 99),
                   help="latency percentile judged (default: the profile's, else 90)")
    b.add_argument("--memory-mb", type=_positive, metavar="MB", help="max measured peak RSS")
    b.add_argument("--reference", metavar="ARTIFACT",
                   help="the unpruned model, measured in the same run for --latency-ratio")
    b.add_argument("--strict", action="store_true",
                   help="a budget that cannot be checked (skipped) fails the gate")
    r = p.add_argument_group("regression")
    r.add_argument("--baseline", metavar="FILE", help="a previous gate result (JSON): fail when "
                   "size, MACs or latency grew by more than the tolerance")
    r.add_argument("--tolerance", action="append", type=_tolerance, default=[],
                   metavar="[METRIC=]PCT%", help="allowed growth over the baseline: 5%% (default) "
                   "or per metric size=2%%, macs=0%%, latency=10%% (repeatable)")
    r.add_argument("--write-baseline", metavar="FILE",
                   help="record this result as a baseline (only when the gate passes)")
    o = p.add_argument_group("output")
    o.add_argument("--junit", metavar="FILE", help="also write JUnit XML (one testsuite per "
                   "artifact, one testcase per budget)")
    add_force(o, help="overwrite --junit/--write-baseline files")
    m = p.add_argument_group("measurement (with --target)")
    add_measurement_runs(m)
    add_repeats(m)
    add_input_shape(m, help="fills dynamic input dims for MACs and measuring (default: the "
                    "profile's)")
    add_no_cache(m)
    return p


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune._io import atomic_write_json, atomic_write_text, check_writable
    from edgeprune.devices.measure import MeasureSettings
    from edgeprune.devices.profiles import load_profile
    from edgeprune.errors import UsageError
    from edgeprune.release import gate as g

    for path, what in ((args.junit, "JUnit file"), (args.write_baseline, "baseline file")):
        if path:
            check_writable(path, force=args.force, what=what, kind="file",
                           inputs=args.artifacts)
    gate_file = _gate_file(args, g, out)
    target = _target(args)
    name = args.profile or gate_file.profile or (target.profile if target else None)
    profile = load_profile(name, extra_files=args.profiles_file) if name else None
    budgets = g.GateBudgets.from_profile(profile) if profile else g.GateBudgets()
    budgets = budgets.merged(gate_file.budgets).merged(g.GateBudgets(
        max_model_size_mb=args.size_mb, max_params=args.params, max_macs=args.macs,
        max_latency_ms=args.latency_ms, max_latency_ratio=args.latency_ratio,
        latency_percentile=args.percentile, max_peak_rss_mb=args.memory_mb))
    if budgets.is_empty():
        raise UsageError("no budgets to check" + (f": profile {name!r} sets none" if name else ""),
                         hint="give --profile NAME, a gate file (edgeprune-gate.toml) or budget "
                         "flags such as --size-mb 25")
    tolerance = gate_file.tolerance
    for key, pct in args.tolerance:
        tolerance = _replace(tolerance, **{key: pct})
    settings = MeasureSettings(runs=args.runs, warmup=args.warmup, max_repeats=args.repeats,
                               use_cache=not args.no_cache)
    # a cancelled CI job (SIGTERM) cleans up the device like Ctrl-C: see cli.main
    result = g.gate(args.artifacts, budgets, target=target,
                    baseline=args.baseline or gate_file.baseline, tolerance=tolerance,
                    reference=args.reference, settings=settings, profile=profile,
                    input_shape=args.input_shape or gate_file.input_shape,
                    strict=args.strict, progress=None if out.json else out.progress)
    data = {**result.to_dict(), "profile": profile.name if profile else None}
    if args.junit:
        atomic_write_text(args.junit, result.to_junit())
    if args.write_baseline:
        if result.passed:
            atomic_write_json(args.write_baseline, data)
        else:
            out.warn(f"baseline {args.write_baseline} not written: the gate failed")
    for note in result.notes:
        out.warn(note)
    out.result(data, _render)
    return result.exit_code


def _gate_file(args: argparse.Namespace, g: Any, out: Output) -> Any:
    if args.gate_file:
        return g.load_gate_file(args.gate_file)
    default = Path(g.GATE_FILE)
    if not args.no_gate_file and default.is_file():
        out.info(f"using gate file {default}")
        return g.load_gate_file(default)
    return g.GateFile()


def _target(args: argparse.Namespace) -> Any:
    from edgeprune.errors import UsageError

    if args.target:
        return target_from_args(args)
    if args.identity_file or args.known_hosts or args.accept_new_host_key or args.python:
        raise UsageError("SSH options given without --target",
                         hint="add --target NAME or --target ssh://user@host[:port]")
    if args.reference:
        raise UsageError("--reference needs --target: the ratio is of measured latencies",
                         hint="add --target NAME (e.g. --target local)")
    return None


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


# --- flag types (argparse turns ArgumentTypeError into a usage error, exit 2) -------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _count(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?)\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count like 1500000, 1.5M or 0.6G")
    value = round(float(match[1]) * _SUFFIX[match[2]])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _tolerance(text: str) -> tuple[str, float]:
    key, _, pct = text.rpartition("=")
    field = _TOLERANCE_KEYS.get(key.strip().lower()) if key else "default_pct"
    if field is None:
        raise argparse.ArgumentTypeError(f"unknown metric {key!r} in --tolerance {text!r}: use "
                                         "size, macs or latency")
    try:
        value = float(pct.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage like 5% or "
                                         "latency=10%") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0% or more")
    return field, value


# --- rendering -----------------------------------------------------------------------------------


def _render(d: dict[str, Any]) -> str:
    head = (f"gate: profile {d.get('profile') or '(none)'}, target "
            f"{d.get('target') or '(none: nothing measured)'}"
            + (f", baseline {d['baseline']}" if d.get("baseline") else ""))
    rows = [(c["artifact"], c["budget"], _val(c["limit"], c["unit"]), _val(c["value"], c["unit"]),
             _val(c["margin"], c["unit"]), _status(c)) for c in d["checks"]]
    lines = [head, table(("artifact", "budget", "limit", "value", "margin", "result"), rows)]
    fails = [c["reason"] for c in d["checks"] if c["status"] == "fail"]
    lines += [f"FAIL {reason}" for reason in fails]
    n = d["counts"]
    lines.append(f"{'PASSED' if d['passed'] else 'FAILED'}: {n['pass']} passed, {n['fail']} "
                 f"failed, {n['skipped']} skipped (exit {d['exit_code']})")
    return "\n".join(lines)


def _status(check: dict[str, Any]) -> str:
    if check["status"] == "skipped":
        return check["reason"]
    return "pass" if check["status"] == "pass" else "FAIL"


def _val(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("params", "MACs"):
        return f"{float(value) / 1e6:.4g}M" if abs(value) >= 1e5 else f"{value:,.0f}"
    return f"{value:.4g} {unit}".rstrip()
