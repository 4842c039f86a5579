"""Reports of a fit run, rendered only from the run's data (``settings.json``, ``state.json``,
``measurements.jsonl``).

:func:`render_run` writes ``report.json`` (everything, machine-readable), ``candidates.csv`` (one
row per candidate) and a self-contained ``report.html`` (plots embedded as base64 PNG: accuracy
versus measured latency with the Pareto front, the budget and the unpruned model; per-group
widths; the table of the front; the device facts). :func:`summary_text` is the terminal summary.
Plots are drawn through :mod:`edgeprune._plotting` (matplotlib is optional: without it the
report says how to get the plots, and every number is still in the tables).

Latency in the report is the one budgets were judged on (``latency_ms`` of a candidate): for a
relative budget, the candidate's ratio to the unpruned model measured beside it times the unpruned
model's first measurement ("load-corrected"); each candidate's own raw percentiles are kept too.
The outcome numbers (``speedup``, ``final_latency_ms``) come from the final re-measure of the
model handed back, not from the search.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeprune._io import atomic_write_json, atomic_write_text
from edgeprune._plotting import figure, png_bytes
from edgeprune.errors import UsageError
from edgeprune.fit.settings import flat_view

__all__ = ["CSV_COLUMNS", "build_report", "pareto_front", "render_run", "summary_text"]

REPORT_VERSION = 2
CSV_COLUMNS = ("id", "step", "kind", "parent", "note", "accuracy", "params", "macs",
               "size_bytes", "measured", "feasible", "latency_ms", "latency_ratio", "ref_ms",
               "measurements", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "cv", "robust_cv",
               "noisy",
               "peak_rss_mb", "predicted_latency_ms", "meets_budget", "on_front", "widths",
               "error")


def _judged(record: dict[str, Any], pct: int) -> float | None:
    """The latency a record was judged on (older runs: its own percentile)."""
    value = record.get("latency_ms", record.get(f"p{pct}_ms"))
    return None if value is None else float(value)


def _log(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "measurements.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _read(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    settings_file, state_file = run_dir / "settings.json", run_dir / "state.json"
    if not state_file.is_file() or not settings_file.is_file():
        raise UsageError(f"{str(run_dir)!r} is not a fit run directory (no state.json)",
                         hint="pass the --out directory of an edgeprune fit")
    return (json.loads(settings_file.read_text(encoding="utf-8")),
            json.loads(state_file.read_text(encoding="utf-8")))


def pareto_front(records: Sequence[dict[str, Any]], latency_key: str = "latency_ms") -> list[str]:
    """Ids of measured, runnable candidates no other beats on both latency and accuracy."""
    points = [r for r in records if r.get("feasible") and r.get(latency_key) is not None]
    points.sort(key=lambda r: (r[latency_key], -r["accuracy"]))
    front: list[str] = []
    best_acc = -1.0
    for r in points:
        if r["accuracy"] > best_acc:
            front.append(r["id"])
            best_acc = r["accuracy"]
    return front


def build_report(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    settings_doc, state = _read(run_dir)
    budgets = state.get("budgets", {})
    pct = int(budgets.get("latency_percentile", 90))
    records = [{**r, "latency_ms": _judged(r, pct)} for r in state.get("candidates", [])]
    by_id = {r["id"]: r for r in records}
    front = pareto_front(records)
    baseline = by_id.get(state.get("baseline_id", ""))
    final = state.get("final", {})
    best = by_id.get(final.get("candidate") or "")
    verify = final.get("verify") or {}
    outcome = state.get("outcome", {"met": None, "reason": "run not finished"})
    search_speedup = None
    if best and best.get("latency_ratio"):
        search_speedup = 1 / best["latency_ratio"]
    elif baseline and best and baseline.get("latency_ms") and best.get("latency_ms"):
        search_speedup = baseline["latency_ms"] / best["latency_ms"]
    speedup = 1 / verify["latency_ratio"] if verify.get("latency_ratio") else search_speedup
    settings = settings_doc.get("settings", {})
    flat = flat_view(settings)  # sectioned, or flat as runs before the sections wrote it
    log = _log(run_dir)
    loads = [e["load_avg_1m"] for e in log if e.get("load_avg_1m") is not None]
    batch = state.get("measure_batch", flat.get("measure_batch"))
    relative = budgets.get("max_latency_ms") is None and budgets.get("max_latency_ratio")
    threads = state.get("threads")
    return {
        "report_version": REPORT_VERSION,
        "finished": state.get("phase") == "done",
        "met": outcome.get("met"),
        "reason": outcome.get("reason"),
        "model": flat.get("model"),
        "data": flat.get("data"),
        "target": flat.get("target"),
        "strategy": flat.get("strategy"),
        "latency_note": f"latency is per batch of {batch} inputs "
                        f"(ONNX input {final.get('onnx_input_shape')}, "
                        f"{threads or 'default'} thread{'s' if threads != 1 else ''}), judged on "
                        f"p{pct}" + (" as the ratio to the unpruned model measured beside each "
                                     "candidate (load-corrected)" if relative else ""),
        "budgets": budgets,
        "latency_limit_ms": state.get("latency_limit_ms"),
        "measure_batch": batch,
        "threads": threads,
        "baseline": baseline,
        "chosen": best,
        "chosen_id": best["id"] if best else None,
        "accuracy_before": baseline["accuracy"] if baseline else None,
        "accuracy_after": final.get("accuracy"),
        "final_finetuned": final.get("finetuned"),
        "speedup": speedup,
        "speedup_search": search_speedup,
        "final_latency_ms": verify.get("latency_ms", best.get("latency_ms") if best else None),
        "final_verify": verify or None,
        "measured_artifact": final.get("measured_artifact"),
        "deployable": {"file": final.get("deployable"),
                       "input_shape": final.get("deployable_input_shape"),
                       "size_bytes": final.get("deployable_size_bytes"),
                       "measurement": final.get("deployable_measurement"),
                       "tflite": final.get("tflite"),
                       "tflite_size_bytes": final.get("tflite_size_bytes")},
        "device_measurements": state.get("device_measurements", 0),
        "measurement_cap": flat.get("max_measurements"),
        "cached_measurements": state.get("cached_measurements", 0),
        "measurement_log": log,
        "load_avg_1m": {"min": min(loads), "max": max(loads)} if loads else None,
        "steps": state.get("step", 0),
        "wall_s": state.get("elapsed_s"),
        "groups": state.get("groups", {}),
        "pareto_front": front,
        "device": state.get("device", {}),
        "settings": settings,
        "versions": settings_doc.get("versions", {}),
        "candidates": [{**r, "on_front": r["id"] in front} for r in records],
        "notes": list(state.get("notes", [])),
    }


def render_run(run_dir: str | Path) -> dict[str, Any]:
    """Write report.json, candidates.csv and report.html into ``run_dir``; return the report."""
    run_dir = Path(run_dir)
    report = build_report(run_dir)
    atomic_write_json(run_dir / "report.json", report)
    atomic_write_text(run_dir / "candidates.csv", _csv(report["candidates"]))
    atomic_write_text(run_dir / "report.html", _html(report))
    return report


def _csv(records: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        row = dict(r)
        row["widths"] = " ".join(f"{k}={v}" for k, v in r.get("widths", {}).items())
        writer.writerow(row)
    return buf.getvalue()


# --- plots -------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    return base64.b64encode(png_bytes(fig)).decode("ascii")


def _figure(draw: Any, report: dict[str, Any], alt: str) -> str:
    """An inline PNG, or a note naming the fix when matplotlib is not installed (the numbers
    are all in the tables, report.json and candidates.csv either way)."""
    try:
        png = draw(report)
    except ImportError:  # _plotting.PlottingUnavailable, or a part of matplotlib that is missing
        return ("<p><em>plot not drawn: matplotlib is not installed (pip install matplotlib, "
                "then edgeprune report DIR)</em></p>")
    return f"<img alt='{alt}' src='data:image/png;base64,{png}'>"


def trade_off_png(report: dict[str, Any]) -> str:
    """Accuracy vs measured latency: every candidate, the front, the budget, the unpruned."""
    pct = int(report["budgets"].get("latency_percentile", 90))
    key = "latency_ms"
    fig, ax = figure(7, 4.5)
    measured = [r for r in report["candidates"] if r.get("feasible") and r.get(key)]
    ax.scatter([r[key] for r in measured], [100 * r["accuracy"] for r in measured],
               c="#9aa5b1", s=28, label="candidates (short fine-tune)")
    for r in measured:  # ids, to find each point in the table
        ax.annotate(r["id"], (r[key], 100 * r["accuracy"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=7, color="#52606d")
    front = [r for r in measured if r["on_front"]]
    front.sort(key=lambda r: r[key])
    ax.plot([r[key] for r in front], [100 * r["accuracy"] for r in front], "-o", c="#1f77b4",
            ms=6, label="Pareto front")
    base = report.get("baseline")
    if base and base.get(key):
        ax.scatter([base[key]], [100 * base["accuracy"]], marker="*", s=200, c="#d62728",
                   label="unpruned", zorder=5)
    chosen = report.get("chosen")
    final_ms = report.get("final_latency_ms") or (chosen or {}).get(key)
    if chosen and final_ms and report.get("accuracy_after") is not None:
        ax.scatter([final_ms], [100 * report["accuracy_after"]], marker="D", s=70,
                   c="#2ca02c", zorder=6, label=("chosen" if report.get("met") else
                                                 "best miss (budget not met)")
                   + ": final fine-tune and re-measure")
    if report.get("latency_limit_ms"):
        ax.axvline(report["latency_limit_ms"], ls="--", c="#444", label="latency budget")
    corrected = ", load-corrected" if "load-corrected" in report["latency_note"] else ""
    ax.set_xlabel(f"measured p{pct} latency{corrected} (ms per batch of "
                  f"{report.get('measure_batch')})")
    ax.margins(x=0.08)
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(f"{report['model']} on {report['target']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def widths_png(report: dict[str, Any]) -> str:
    groups = report.get("groups", {})
    chosen = (report.get("chosen") or {}).get("widths", {})
    names = list(groups)
    fig, ax = figure(7, max(2.0, 0.35 * len(names) + 1))
    pos = range(len(names))
    ax.barh(list(pos), [groups[n] for n in names], color="#d9dee3", label="unpruned")
    ax.barh(list(pos), [chosen.get(n, 0) for n in names], color="#1f77b4", label="chosen")
    ax.set_yticks(list(pos), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("output channels of the group's root layer")
    ax.legend(fontsize=8)
    return _png(fig)


# --- html --------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(report: dict[str, Any]) -> str:
    pct = int(report["budgets"].get("latency_percentile", 90))
    key = "latency_ms"
    by_id = {r["id"]: r for r in report["candidates"]}
    front_rows = [(r["id"], r["note"], 100 * r["accuracy"], r[key], r.get(f"p{pct}_ms"),
                   r.get("peak_rss_mb"), (r.get("size_bytes") or 0) / 1e6, r["macs"],
                   r["params"], r["meets_budget"])
                  for r in (by_id[c] for c in report["pareto_front"])]
    status = "budget met" if report["met"] else f"budget NOT met: {report['reason']}"
    acc_after = report.get("accuracy_after")
    deploy = report.get("deployable") or {}
    b1 = deploy.get("measurement") or {}
    summary = [("status", status), ("latency budget (ms)", report.get("latency_limit_ms")),
               ("speed-up (final re-measure)", report.get("speedup")),
               ("speed-up (search)", report.get("speedup_search")),
               ("speed-up of the deployable at batch 1",
                1 / b1["latency_ratio"] if b1.get("latency_ratio") else None),
               ("accuracy before (%)", _pct(report.get("accuracy_before"))),
               ("accuracy after (%)", _pct(acc_after)),
               ("measured artifact", report.get("measured_artifact")),
               ("deployable", f"{deploy.get('file')} (input {deploy.get('input_shape')})"),
               ("device measurements", f"{report['device_measurements']} of at most "
                f"{report.get('measurement_cap')}"),
               ("load average (1 min) while measuring", _load(report)),
               ("steps", report["steps"]), ("wall time (s)", report.get("wall_s"))]
    device = sorted((k, v) for k, v in report.get("device", {}).items()
                    if not isinstance(v, dict))
    budget_rows = sorted((k, v) for k, v in report["budgets"].items() if k != "sources")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>edgeprune fit: {html.escape(str(report['model']))}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:2px 8px;font-size:90%}th{background:#f3f3f3}</style></head><body>",
        f"<h1>edgeprune fit — {html.escape(str(report['model']))} on "
        f"{html.escape(str(report['target']))}</h1>",
        f"<p>{html.escape(report['latency_note'])}. Strategy: "
        f"{html.escape(str(report['strategy']))}.</p>",
        _table(("", ""), summary),
        *(f"<p><strong>Note:</strong> {html.escape(n)}</p>" for n in report.get("notes") or []),
        "<h2>Accuracy vs measured latency</h2>", _figure(trade_off_png, report, "trade-off"),
        "<h2>Widths per channel group</h2>", _figure(widths_png, report, "widths"),
        "<h2>Pareto front</h2>",
        _table(("id", "candidate", "top-1 %", f"judged p{pct} ms", f"own p{pct} ms",
                "peak RSS MB", "size MB", "MACs", "params", "meets budget"), front_rows),
        "<h2>Budgets</h2>", _table(("budget", "value"), budget_rows),
        "<h2>Device</h2>", _table(("fact", "value"), device),
        "<h2>Versions</h2>", _table(("package", "version"),
                                    sorted(report.get("versions", {}).items())),
        "<p>Every candidate is in candidates.csv and report.json.</p></body></html>",
    ]
    return "\n".join(parts)


def _load(report: dict[str, Any]) -> str | None:
    load = report.get("load_avg_1m")
    return None if not load else f"{load['min']:.1f}–{load['max']:.1f}"


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary_text(report: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    pct = int(report["budgets"].get("latency_percentile", 90))
    chosen, base = report.get("chosen") or {}, report.get("baseline") or {}
    lines = ["budget met" if report["met"] else f"budget NOT met: {report['reason']}"]
    if base:
        lines.append(f"  unpruned  top-1 {_fmt(_pct(base.get('accuracy')))}%  "
                     f"p{pct} {_fmt(base.get('latency_ms'))} ms")
    if chosen:
        lines.append(f"  {'chosen' if report['met'] else 'best'} {chosen['id']}  top-1 "
                     f"{_fmt(_pct(report.get('accuracy_after')))}%  p{pct} "
                     f"{_fmt(report.get('final_latency_ms'))} ms  (budget "
                     f"{_fmt(report.get('latency_limit_ms'))} ms, speed-up "
                     f"{_fmt(report.get('speedup'))}× on the final re-measure)")
        lines.append("  widths " + ", ".join(f"{k} {report['groups'].get(k)}→{v}"
                                             for k, v in chosen.get("widths", {}).items()))
        b1 = (report.get("deployable") or {}).get("measurement") or {}
        if b1.get("latency_ratio"):
            lines.append(f"  deployable {report['deployable']['file']} (batch 1): p{pct} "
                         f"{_fmt(b1.get(f'p{pct}_ms'))} ms vs unpruned {_fmt(b1.get('ref_ms'))}"
                         f" ms, speed-up {_fmt(1 / b1['latency_ratio'])}×"
                         + (" (noisy: one pair, informational)" if b1.get("noisy") else ""))
    load = _load(report)
    lines.append(f"  {report['device_measurements']} device measurements, "
                 f"{_n(len(report['candidates']), 'candidate')}, {_n(report['steps'], 'step')}, "
                 f"{_fmt(report.get('wall_s'))} s" + (f", load average {load}" if load else "")
                 + f"; {report['latency_note']}")
    lines += [f"  note: {note}" for note in report.get("notes") or []]
    return "\n".join(lines)
