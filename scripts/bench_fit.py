"""Benchmark ``edgeprune fit`` strategies on a real target: budget, speed-up, accuracy, cost.

Runs each strategy on builtin:mnist-cnn / builtin:mnist5k against a latency budget and writes
one JSON document (and a Markdown table on stderr) with, per strategy: the resolved budget, the
chosen model's measured p90 and speed-up, accuracy before/after, device measurements, candidates
and wall time. Latency is per batch of 64 inputs. ``--quick`` uses tiny fine-tunes.

    .venv/bin/python scripts/bench_fit.py --quick --out /tmp/bench_fit
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def run_one(strategy: str, out: Path, speedup: float, quick: bool, target: str) -> dict[str, Any]:
    from edgeprune.fit import FitBudgetNotMetError, FitSettings, fit

    extra: dict[str, Any] = (dict(step_batches=5, final_epochs=1, final_batches=20, runs=20)
                             if quick else {})
    settings = FitSettings(model="builtin:mnist-cnn", data="builtin:mnist5k", target=target,
                           strategy=strategy, speedup=speedup, **extra)
    started = time.monotonic()
    try:
        report = fit(settings, out / strategy, force=True).report
    except FitBudgetNotMetError as exc:
        report = exc.result.report
    chosen = report.get("chosen") or {}
    return {"strategy": strategy, "met": report["met"], "reason": report["reason"],
            "latency_budget_ms": report["latency_limit_ms"],
            "baseline_p90_ms": (report["baseline"] or {}).get("p90_ms"),
            "chosen_p90_ms": chosen.get("p90_ms"), "speedup": report["speedup"],
            "accuracy_before": report["accuracy_before"],
            "accuracy_after": report["accuracy_after"], "widths": chosen.get("widths"),
            "device_measurements": report["device_measurements"],
            "candidates": len(report["candidates"]),
            "wall_s": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategies", default="uniform,netadapt")
    p.add_argument("--speedup", type=float, default=1.5)
    p.add_argument("--target", default="local")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="runs/bench_fit")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = [run_one(s, out, args.speedup, args.quick, args.target)
            for s in args.strategies.split(",")]
    doc = {"model": "builtin:mnist-cnn", "data": "builtin:mnist5k", "target": args.target,
           "latency_unit": "ms per batch of 64, p90", "results": rows}
    print(json.dumps(doc, indent=2))
    sys.stderr.write("| strategy | met | budget ms | p90 ms | speed-up | top-1 before → after | "
                     "device measurements | wall s |\n|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        sys.stderr.write(f"| {r['strategy']} | {r['met']} | {r['latency_budget_ms']:.3g} | "
                         f"{r['chosen_p90_ms'] or float('nan'):.3g} | "
                         f"{r['speedup'] or float('nan'):.2f} | "
                         f"{100 * r['accuracy_before']:.2f} → "
                         f"{100 * (r['accuracy_after'] or 0):.2f} | "
                         f"{r['device_measurements']} | {r['wall_s']} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
