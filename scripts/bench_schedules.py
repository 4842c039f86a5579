"""What does each pruning schedule recover? Every schedule at the same ratio and epoch budget.

On a shipped trained network and shipped real data (default: ``builtin:mnist-cnn`` on
``builtin:mnist5k``), run each schedule — ``oneshot``, ``iterative``, ``during-training``,
``soft`` (soft filter pruning) and ``retrain`` — at the same final channel ratio (criterion l2,
uniform scope) with the same training budget (``--epochs``, recipe ``full``) and record: top-1
before, right after pruning (where the schedule has such a point), after training, parameters
and MACs before/after, wall time. Soft filter pruning is then compared with hard one-shot pruning
at the same ratio (the ``soft`` and ``oneshot`` rows), including whether soft pruning removed
exactly the number of filters it zeroed.

Caveat: ``builtin:mnist5k`` is 5,000 images from MNIST's *training* set, which the shipped
networks were trained on, so "before" accuracy is a sanity check, not a held-out figure. Its
val split (1,000 images, stratified; the seed sets the split, the shuffle and any
re-initialisation) is also what the fine-tune uses to pick its best epoch (``restore_best``),
and what the table reports. Torch runs on 1 thread by default (``--threads``): on a machine
shared with other jobs more threads oversubscribe the cores and run several times slower.

    .venv/bin/python scripts/bench_schedules.py [--quick] [--ratios 0.6,0.8] [--epochs 4]
        [--seeds 0,1,2] [--lr-schedule constant] [--out bench-results/schedules.json]
        [--md bench-results/schedules.md]
    .venv/bin/python scripts/bench_schedules.py --render bench-results/schedules.json

Writes JSON to ``--out`` and a Markdown table to stdout (and ``--md``). Not a test. Results
and their reading: docs/schedules.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCHEDULES = ("oneshot", "iterative", "during-training", "soft", "retrain")
TASKS = {  # model spec → shipped data it classifies
    "builtin:mnist-cnn": "builtin:mnist5k",
    "builtin:digit-recognizer": "builtin:mnist5k",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="builtin:mnist-cnn",
                   help=f"comma-separated shipped models ({', '.join(TASKS)})")
    p.add_argument("--schedules", default=",".join(SCHEDULES))
    p.add_argument("--ratios", default="0.6,0.8", help="final channel ratios (uniform, l2)")
    p.add_argument("--criterion", default="l2")
    p.add_argument("--epochs", type=int, default=4, help="training epochs per schedule")
    p.add_argument("--steps", type=int, default=3,
                   help="rounds of iterative / pruning points of during-training")
    p.add_argument("--recipe", default="full", help="training recipe (needs trainable 'all')")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    p.add_argument("--lr-schedule", choices=("cosine", "step", "constant"),
                   help="learning-rate schedule (default: the recipe's, cosine for full)")
    p.add_argument("--max-batches", type=int, default=0,
                   help="cap training batches per epoch (0: all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a shared machine more threads "
                   "oversubscribe the cores and run several times slower)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (split, shuffle, init)")
    p.add_argument("--out", default="bench-results/schedules.json", help="JSON results")
    p.add_argument("--md", help="also write the Markdown table here")
    p.add_argument("--render", metavar="JSON",
                   help="only print (and --md) the table of an earlier run's JSON")
    p.add_argument("--verbose", action="store_true", help="epoch progress on stderr")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: ratio 0.6, 2 epochs of 4 batches, oneshot and soft")
    args = p.parse_args(argv)
    if args.quick:
        args.ratios, args.epochs, args.max_batches = "0.6", 2, 4
        args.schedules, args.seeds = "oneshot,soft", "0"
    return args


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --- one run -----------------------------------------------------------------------------------


def soft_check(result: Any) -> dict[str, Any] | None:
    """For a ``soft`` run: filters zeroed per group vs channels the materialize step removed."""
    phase = next((p for p in result.phases if p.get("phase") == "materialize"), None)
    if phase is None:
        return None
    zeroed = {k: v for k, v in phase["zeroed"].items() if v}
    removed = {k: v for k, v in phase["removed"].items() if v}
    return {"zeroed": zeroed, "removed": removed, "match": zeroed == removed,
            "max_abs_diff": phase.get("max_abs_diff")}


def run_one(model_spec: str, schedule: str, ratio: float, seed: int,
            args: argparse.Namespace, verbose: bool) -> dict[str, Any]:
    import torch

    from edgeprune.data import example_input, load_data
    from edgeprune.models.load import default_input_shape, load_model
    from edgeprune.pruning.prune import PruneConfig
    from edgeprune.pruning.schedules import run_schedule
    from edgeprune.training.recipes import get_recipe

    torch.manual_seed(seed)
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(model_spec)
    shape = default_input_shape(model) or default_input_shape(model_spec)
    bundle = load_data(TASKS.get(model_spec, "builtin:mnist5k"), input_shape=tuple(shape[1:]),
                       batch_size=args.batch_size, seed=seed)
    overrides: dict[str, Any] = {"seed": seed, "max_batches_per_epoch": args.max_batches,
                                 "num_threads": args.threads}
    if args.lr is not None:
        overrides["lr"] = args.lr
    if args.lr_schedule:
        overrides["lr_schedule"] = args.lr_schedule
    recipe = get_recipe(args.recipe, **overrides)
    config = PruneConfig(ratio=ratio, criterion=args.criterion, iterative_steps=args.steps,
                         seed=seed)

    def progress(event: dict[str, Any]) -> None:
        if verbose and event.get("event") in ("epoch", "prune", "done"):
            print(f"    {event.get('message', '')}", file=sys.stderr, flush=True)

    started = time.monotonic()
    result = run_schedule(model, bundle, schedule, config, recipe, epochs=args.epochs,
                          example_inputs=example_input(bundle), progress=progress)
    seconds = time.monotonic() - started
    record = result.to_dict()
    record.pop("history", None)
    out = {"model": model_spec, "data": str(bundle.spec), "schedule": schedule, "ratio": ratio,
           "seed": seed, "epochs": args.epochs, "recipe": recipe.to_dict(),
           "config": config.to_dict(), "wall_s": round(seconds, 2), "load_avg_after": _load(),
           "top1_before": result.before.top1,
           "top1_pruned": result.pruned.top1 if result.pruned else None,
           "top1_after": result.after.top1, **record}
    check = soft_check(result)
    if check is not None:
        out["soft_check"] = check
    out["flags"] = flags(out)
    return out


def flags(run: dict[str, Any]) -> list[str]:
    """Results that look wrong and deserve a look."""
    found = []
    if run["schedule"] == "oneshot" and run["top1_after"] < run["top1_pruned"] - 0.005:
        found.append("top-1 after training is below top-1 right after pruning")
    if run.get("soft_check") and not run["soft_check"]["match"]:
        found.append("soft: removed channels differ from the filters zeroed")
    if run["params_after"] >= run["params_before"]:
        found.append("no parameters removed")
    return found


# --- tables ------------------------------------------------------------------------------------


def _pct(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{100 * vals[0]:.2f}%"
    return (f"{100 * statistics.mean(vals):.2f}% "
            f"({100 * min(vals):.1f}–{100 * max(vals):.1f})")


def _groups(runs: list[dict[str, Any]]) -> dict[tuple[str, float, str], list[dict[str, Any]]]:
    grouped: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in runs:
        grouped.setdefault((r["model"], r["ratio"], r["schedule"]), []).append(r)
    return grouped


def _pruned_note(schedule: str, run: dict[str, Any]) -> str:
    if schedule == "iterative":
        rounds = sum(1 for p in run["phases"] if p.get("phase") == "prune")
        return f" (round 1 of {rounds})"
    if schedule == "retrain":
        return " (re-initialised)"
    return ""


def markdown(report: dict[str, Any]) -> str:
    runs = report["runs"]
    seeds = sorted({r["seed"] for r in runs})
    lines = ["| model | ratio | schedule | params before → after | MACs before → after "
             "| top-1 before | right after pruning | after training | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (model, ratio, schedule), group in _groups(runs).items():
        r0 = group[0]
        lines.append(
            f"| {model.removeprefix('builtin:')} | {ratio:g} | {schedule} "
            f"| {r0['params_before']:,} → {r0['params_after']:,} "
            f"| {r0['macs_before']:,} → {r0['macs_after']:,} "
            f"| {_pct([r['top1_before'] for r in group])} "
            f"| {_pct([r['top1_pruned'] for r in group])}{_pruned_note(schedule, r0)} "
            f"| {_pct([r['top1_after'] for r in group])} "
            f"| {statistics.mean(r['wall_s'] for r in group):.0f} |")
    soft_rows = []
    grouped = _groups(runs)
    for (model, ratio, schedule), group in grouped.items():
        hard = grouped.get((model, ratio, "oneshot"))
        if schedule != "soft" or not hard:
            continue
        diffs = [s["top1_after"] - h["top1_after"] for s in group for h in hard
                 if s["seed"] == h["seed"]]
        before_cut = [next((p["best_val_top1"] for p in s["phases"] if p.get("phase") == "soft"),
                           None) for s in group]
        zeroed = sum(sum(s["soft_check"]["zeroed"].values()) for s in group) // len(group)
        removed = sum(sum(s["soft_check"]["removed"].values()) for s in group) // len(group)
        soft_rows.append(
            f"| {model.removeprefix('builtin:')} | {ratio:g} "
            f"| {_pct(before_cut)} "
            f"| {_pct([s['top1_after'] for s in group])} "
            f"| {_pct([h['top1_after'] for h in hard])} "
            f"| {100 * statistics.mean(diffs):+.2f} pt "
            f"| {group[0]['params_after']:,} / {hard[0]['params_after']:,} "
            f"| {zeroed} / {removed} "
            f"| {'yes' if all(s['soft_check']['match'] for s in group) else 'NO'} |")
    if soft_rows:
        lines += ["", "Soft filter pruning vs hard (one-shot) pruning, same ratio and epochs:", "",
                  "| model | ratio | soft, trained (before the cut) "
                  "| soft top-1 | hard top-1 | soft − hard | params soft / hard "
                  "| filters zeroed / removed | exact |",
                  "|---|---|---|---|---|---|---|---|---|", *soft_rows]
    flagged = [f"- {r['model']} {r['schedule']} ratio {r['ratio']:g} seed {r['seed']}: {f}"
               for r in runs for f in r["flags"]]
    if flagged:
        lines += ["", "Flagged:", *flagged]
    a = report["args"]
    host = report["machine"]
    parts = [
        f"Seeds {', '.join(map(str, seeds))} (several: mean, then min–max)",
        f"{a['epochs']} training epochs per schedule, recipe {a['recipe']}"
        + ("" if a["lr"] is None else f" at lr {a['lr']:g}")
        + (f", {a['lr_schedule']} learning rate" if a.get("lr_schedule") else ""),
        f"criterion {a['criterion']}, uniform scope",
        f"{a['steps']} prune steps for iterative/during-training",
        f"at most {a['max_batches']} training batches per epoch" if a["max_batches"]
        else "full epochs",
        f"{a['threads'] or host['usable_cores']} torch thread(s)",
    ]
    caption = (", ".join(parts) + f". Machine: {host['cpu']}, {host['cores']} cores "
               f"({host['usable_cores']} usable by this process), load average "
               f"{report['load_avg_before']} before / {report['load_avg_after']} after; "
               f"torch {host['torch']}. Total {report['total_s'] / 60:.1f} min.")
    return "\n".join([*lines, "", caption])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from edgeprune._io import atomic_write_json, atomic_write_text

    if args.render:  # the table of an earlier run, nothing run
        table = markdown(json.loads(Path(args.render).read_text()))
        if args.md:
            atomic_write_text(args.md, table + "\n")
        print(table)
        return 0

    started = time.monotonic()
    load_before, host = _load(), machine()
    runs = []
    plan = [(m, r, s, seed) for m in _names(args.models) for r in _floats(args.ratios)
            for s in _names(args.schedules) for seed in map(int, _names(args.seeds))]
    for index, (model_spec, ratio, schedule, seed) in enumerate(plan, start=1):
        print(f"[{index}/{len(plan)}] {model_spec} {schedule} ratio {ratio:g} seed {seed}",
              file=sys.stderr, flush=True)
        run = run_one(model_spec, schedule, ratio, seed, args, args.verbose)
        print(f"    top-1 {run['top1_before']:.2%} → "
              + (f"{run['top1_pruned']:.2%} → " if run["top1_pruned"] is not None else "")
              + f"{run['top1_after']:.2%}  ({run['wall_s']:.0f} s)", file=sys.stderr, flush=True)
        runs.append(run)
    report = {"bench": "schedules", "args": vars(args), "machine": host,
              "load_avg_before": load_before, "load_avg_after": _load(),
              "total_s": round(time.monotonic() - started, 1), "runs": runs}
    table = markdown(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, report)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.md, table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
