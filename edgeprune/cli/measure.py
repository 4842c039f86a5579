"""``edgeprune measure``: latency percentiles, peak memory, load time and per-operator time of an
.onnx or .tflite artifact on a target (local, a named device, or ``ssh://user@host``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeprune.cli._common import (
    add_measurement_runs,
    add_no_cache,
    add_repeats,
    add_threads,
    add_weights,
)
from edgeprune.cli._output import Output, table
from edgeprune.cli.targets import (
    add_target_options,
    target_from_args,
)

# true whether Ctrl-C came while a spec was being exported (nothing on the device yet) or while
# the runner ran (stopped, its run directory and the device lock removed)
INTERRUPTED = ("interrupted — nothing was measured to the end; anything started on the device "
               "was stopped and its files removed; run the command again")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "measure", help="measure a model on a device",
        description="Measure an .onnx or .tflite artifact on a device: a fresh process runs "
        "warm-up then timed runs and reports p50/p90/p95/p99, mean, std, peak RSS, session "
        "creation and first-run time, and device facts. Progress goes to stderr.",
        epilog="Exit codes: 0 ok, 1 error (unreachable, auth, host key, runtime missing, out of "
        "memory, ...), 2 usage.")
    p.add_argument("model", metavar="MODEL",
                   help="an .onnx (with its .data file) or .tflite file; a model spec or pruned "
                   "model directory is exported to ONNX on the fly (cached)")
    add_weights(p, help="state dict for a model spec MODEL")
    add_target_options(p)
    g = p.add_argument_group("measurement")
    add_measurement_runs(g)
    add_threads(g, type=int, metavar=None,
                help="intra-op threads (default: the profile's, else the runtime's)")
    g.add_argument("--per-op", action="store_true", help="per-operator time (onnxruntime)")
    g.add_argument("--runtime", choices=("auto", "onnxruntime", "tflite"), default="auto")
    g.add_argument("--providers", default=None, metavar="A,B",
                   help="onnxruntime execution providers (default CPUExecutionProvider)")
    g.add_argument("--input-shape", action="append", default=[], metavar="[NAME=]1x3x224x224",
                   help="shape for dynamic inputs (repeatable; default: the profile's input_shape)")
    g.add_argument("--max-seconds", type=float, default=60.0,
                   help="time cap on the timed runs of one attempt (default 60)")
    g.add_argument("--cv-threshold", type=float, default=0.10,
                   help="coefficient of variation above which a result is noisy (default 0.10)")
    add_repeats(g)
    g.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="per-attempt command timeout (default: the target's)")
    add_no_cache(g)
    return p


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune.devices.measure import ARTIFACT_SUFFIXES, MeasureSettings, parse_input_shape
    from edgeprune.devices.profiles import load_profile
    from edgeprune.pipeline import with_batch
    from edgeprune.pipeline.measuring import artifact_to_measure, measure

    shapes = list(args.input_shape)
    dims = [parse_input_shape(s) for s in shapes]  # a typo is a usage error before any work
    # a spec or pruned directory is exported first, and named as the user typed it, not by its
    # cached export; C,H,W means one image (batch 1) as in prune/info/export
    exported = Path(args.model).suffix.lower() not in ARTIFACT_SUFFIXES
    export_shape = None
    plain = [i for i, s in enumerate(shapes) if "=" not in s]
    if exported and plain:
        export_shape = with_batch(dims[plain[0]])
        shapes[plain[0]] = "x".join(str(d) for d in export_shape)
    artifact = artifact_to_measure(args.model, weights=args.weights, input_shape=export_shape,
                                   progress=out.progress)
    target = target_from_args(args)
    profile = None
    if target.profile:
        profile = load_profile(target.profile, extra_files=args.profiles_file)
    settings = MeasureSettings(
        runs=args.runs, warmup=args.warmup, threads=args.threads, per_op=args.per_op,
        runtime=args.runtime,
        providers=tuple(p for p in (args.providers or "").split(",") if p),
        input_shapes=tuple(shapes), max_seconds=args.max_seconds,
        cv_threshold=args.cv_threshold, max_repeats=args.repeats, use_cache=not args.no_cache,
        timeout_s=args.timeout)
    result = measure(artifact, target, settings, profile=profile, progress=out.progress,
                     model=args.model if exported else None)
    if result.noisy:
        out.warn(f"noisy measurement: robust CV {result.robust_cv or result.cv:.1%} above "
                 f"{result.cv_threshold:.0%} after "
                 f"{result.attempts} attempts — close other programs on the device or raise --runs")
    data = result.to_dict()
    if profile is not None:
        data["profile"] = profile.name
    out.result(data, _render)
    return 0


def _render(d: dict[str, Any]) -> str:
    dev = d.get("device") or {}
    head = (f"{d.get('model') or d['artifact']} on {d['where']}"
            f"{' (cached)' if d.get('cached') else ''}\n"
            f"  {d['runtime']} {d.get('runtime_version') or ''}, threads "
            f"{d.get('threads') or 'default'}, {d['runs']} runs after {d['warmup']} warm-up"
            f"{', NOISY' if d.get('noisy') else ''}")
    stats = table(("p50 ms", "p90 ms", "p95 ms", "p99 ms", "mean ms", "std ms", "min ms",
                   "max ms", "CV", "robust CV"),
                  [(d["p50_ms"], d["p90_ms"], d["p95_ms"], d["p99_ms"], d["mean_ms"],
                    d["std_ms"], d["min_ms"], d["max_ms"], f"{d['cv']:.1%}",
                    f"{d['robust_cv']:.1%}" if d.get("robust_cv") is not None else "")])
    mem = (f"peak RSS {_num(d.get('peak_rss_mb'))} MB, session creation "
           f"{_num(d['session_create_ms'])} ms, first run {_num(d['first_run_ms'])} ms, "
           f"size {d['artifact_size_bytes'] / 1e6:.2f} MB")
    device = (f"device: {dev.get('board') or dev.get('cpu_model') or '?'} ({dev.get('machine')}, "
              f"{dev.get('cores')} cores, {dev.get('memory_total_mb')} MB"
              + (f", {dev['cpu_freq_mhz']} MHz {dev.get('cpu_governor') or ''}".rstrip()
                 if dev.get("cpu_freq_mhz") else "")
              + (f", {dev['temperature_c']} °C" if dev.get("temperature_c") is not None else "")
              + f", Python {dev.get('python')})")
    parts = [head, stats, mem, device]
    per_op = d.get("per_op") or {}
    if per_op.get("by_op_type"):
        rows = [(o["op_type"], o["calls_per_run"], o["mean_ms_per_run"], f"{o['share']:.1%}")
                for o in per_op["by_op_type"][:12]]
        parts.append("per operator type (profiled session):\n"
                     + table(("op", "calls", "ms/run", "share"), rows))
    return "\n".join(parts)


def _num(value: Any) -> str:
    return "?" if value is None else f"{float(value):.4g}"
