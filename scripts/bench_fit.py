"""Benchmark ``edgeprune fit`` strategies on a real target at the same measured-latency budget.

Part 1 (accuracy and latency): each strategy fits builtin:mnist-cnn on builtin:mnist5k to a
``--speedup`` budget (default 2×, judged on p90 against the unpruned model measured side by side)
with at most ``--max-accuracy-drop`` points lost, ``--repeats`` times. Per run: whether the budget
was met, the speed-up of the final model on its re-measure (and in the search, and of the batch-1
deployable), accuracy before/after, the fraction of MACs kept, device measurements, wall time and
the machine's load average while measuring.

Part 2 (``--mobilenet``, latency only): MobileNetV2 at 224×224 with denormal-safe random weights
(BatchNorm statistics calibrated so activations stay unit-scale, tiny weights flushed to zero —
random weights otherwise produce denormal floats that run absurdly slowly on CPUs), fine-tuning
reduced to one batch, netadapt cutting 20 % of the unpruned latency a step (25 channel groups make
a step 25 short fine-tunes): the fraction of MACs each strategy keeps at the measured 2× speed-up
(``macs_kept_at_budget``: the least-pruned candidate that met the budget — with random weights
the accuracy that normally picks the chosen one is noise).

Writes one JSON document (``--out``) and a Markdown table (stdout, and ``--md``).

    .venv/bin/python scripts/bench_fit.py --out bench-results/fit.json --md bench-results/fit.md
    .venv/bin/python scripts/bench_fit.py --mobilenet --strategies uniform,netadapt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

MNIST = dict(model="builtin:mnist-cnn", data="builtin:mnist5k")
# latency only: fine-tuning is a single batch, accuracy is not a goal here
MOBILENET = dict(model=f"{Path(__file__).resolve()}:mobilenet_v2_denormal_safe",
                 data="builtin:digits", input_shape=(1, 3, 224, 224), batch_size=8,
                 step_batches=1, final_epochs=1, final_batches=1, eval_batches=1,
                 netadapt_step=0.2)


def mobilenet_v2_denormal_safe() -> Any:
    """torchvision's MobileNetV2 (10 classes) with seeded random weights that stay normal."""
    import torch

    from edgeprune.models.torchvision_compat import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(0)
    model = tv.models.mobilenet_v2(num_classes=10)
    model.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average over the calibration batches
        for _ in range(4):
            model(torch.randn(8, 3, 224, 224, generator=gen))
        for p in model.parameters():
            p[p.abs() < 1e-30] = 0.0
    return model.eval()


def run_one(strategy: str, out: Path, base: dict[str, Any],
            extra: dict[str, Any]) -> dict[str, Any]:
    from edgeprune.fit import FitBudgetNotMetError, FitSettings, fit

    # no trade-off points: the strategies are compared on the measurements their search needs
    settings = FitSettings(strategy=strategy, **{"tradeoff_points": 0, **base, **extra})
    started = time.monotonic()
    try:
        report = fit(settings, out, force=True).report
    except FitBudgetNotMetError as exc:
        report = exc.result.report
    wall = round(time.monotonic() - started, 1)
    chosen, baseline = report.get("chosen") or {}, report.get("baseline") or {}
    b1 = (report.get("deployable") or {}).get("measurement") or {}
    drop = None
    if report["accuracy_after"] is not None and report["accuracy_before"] is not None:
        drop = round(100 * (report["accuracy_before"] - report["accuracy_after"]), 2)
    return {
        "strategy": strategy, "run_dir": str(out), "met": report["met"],
        "reason": report["reason"], "speedup_budget": extra.get("speedup"),
        "latency_budget_ms": report["latency_limit_ms"],
        "speedup_final": _r(report["speedup"]), "speedup_search": _r(report["speedup_search"]),
        "speedup_batch1": _r(1 / b1["latency_ratio"]) if b1.get("latency_ratio") else None,
        "accuracy_before": report["accuracy_before"], "accuracy_after": report["accuracy_after"],
        "accuracy_drop_points": drop,
        "macs_kept": _r(chosen["macs"] / baseline["macs"]) if chosen and baseline else None,
        # the least pruning that met the budget (what matters when accuracy is not a goal)
        "macs_kept_at_budget": _r(max((r["macs"] for r in report["candidates"]
                                       if r.get("meets_budget")), default=0)
                                  / baseline["macs"]) if baseline else None,
        "widths": chosen.get("widths"), "device_measurements": report["device_measurements"],
        "candidates": len(report["candidates"]), "steps": report["steps"],
        "measure_batch": report["measure_batch"], "threads": report["threads"],
        "load_avg_1m": report["load_avg_1m"], "wall_s": wall,
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def machine() -> dict[str, Any]:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | strategy | met | speed-up final (search, batch 1) | top-1 before → after | "
            "MACs kept (least at budget) | device measurements | load avg | wall s |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        load = r["load_avg_1m"] or {}
        acc = ("–" if r["accuracy_after"] is None or r.get("latency_only") else
               f"{100 * r['accuracy_before']:.1f} → {100 * r['accuracy_after']:.1f}")
        lines.append(
            f"| {r['bench']} | {r['strategy']} | {'yes' if r['met'] else 'no'} | "
            f"{_x(r['speedup_final'])} ({_x(r['speedup_search'])}, {_x(r['speedup_batch1'])}) | "
            f"{acc} | {_x(r['macs_kept'], '')} ({_x(r['macs_kept_at_budget'], '')}) | "
            f"{r['device_measurements']} | "
            f"{load.get('min', 0):.1f}–{load.get('max', 0):.1f} | {r['wall_s']} |")
    return head + "\n".join(lines) + "\n"


def _x(value: float | None, unit: str = "×") -> str:
    return "–" if value is None else f"{value:.2f}{unit}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategies", default="uniform,knapsack,netadapt")
    p.add_argument("--speedup", type=float, default=2.0)
    p.add_argument("--max-accuracy-drop", type=float, default=1.0)
    p.add_argument("--round-to", type=int, default=16)
    p.add_argument("--repeats", type=int, default=1, help="runs of each strategy (reliability)")
    p.add_argument("--target", default="local")
    p.add_argument("--mobilenet", action="store_true", help="also the MobileNetV2 latency part")
    p.add_argument("--skip-mnist", action="store_true")
    p.add_argument("--workdir", default="runs/bench_fit")
    p.add_argument("--out", default="bench-results/fit.json")
    p.add_argument("--md", default=None)
    args = p.parse_args(argv)
    work = Path(args.workdir)
    extra = {"target": args.target, "speedup": args.speedup, "round_to": args.round_to}
    rows: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"machine": machine(), "settings": vars(args), "results": rows}
    strategies = args.strategies.split(",")
    def record(row: dict[str, Any]) -> None:  # written after every run: a long bench can stop
        rows.append(row)
        sys.stderr.write(json.dumps(row) + "\n")
        doc["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")

    if not args.skip_mnist:
        for i in range(args.repeats):
            for s in strategies:
                row = run_one(s, work / f"mnist-{s}-{i}", MNIST,
                              {**extra, "max_accuracy_drop": args.max_accuracy_drop})
                record({"bench": "mnist-cnn", **row})
    if args.mobilenet:
        for s in strategies:
            row = run_one(s, work / f"mobilenet-{s}", MOBILENET, extra)
            record({"bench": "mobilenet_v2 224", "latency_only": True, **row})
    md = table(rows)
    if args.md:
        Path(args.md).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
