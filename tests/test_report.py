"""Report rendering from a run's data: Pareto front, JSON/CSV/HTML, terminal summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from edgeprune.report import pareto_front, render_run, summary_text


def _rec(cid: str, acc: float, p90: float | None, feasible: bool = True,
         kind: str = "uniform") -> dict[str, Any]:
    return {"id": cid, "step": 1, "kind": kind, "parent": "c000", "note": cid, "accuracy": acc,
            "params": 10, "macs": 100, "size_bytes": 2_000_000, "measured": True,
            "feasible": feasible, "p50_ms": p90, "p90_ms": p90, "p99_ms": p90, "mean_ms": p90,
            "cv": 0.01, "peak_rss_mb": 80.0, "predicted_latency_ms": None,
            "meets_budget": bool(p90 and p90 <= 10), "widths": {"conv": 8}, "error": None}


def test_pareto_front_keeps_the_non_dominated() -> None:
    records = [_rec("a", 0.90, 5.0), _rec("b", 0.80, 6.0), _rec("c", 0.95, 8.0),
               _rec("d", 0.99, None, feasible=False)]
    assert pareto_front(records, "p90_ms") == ["a", "c"]


def test_render_run_writes_json_csv_html(tmp_path: Path) -> None:
    base = {**_rec("c000", 0.99, 20.0, kind="baseline"), "widths": {"conv": 32}}
    cands = [base, _rec("c001", 0.70, 4.0, kind="floor"), _rec("c002", 0.95, 9.0),
             _rec("c003", 0.5, None, feasible=False)]
    (tmp_path / "settings.json").write_text(json.dumps(
        {"settings": {"model": "m", "target": "local", "measure_batch": 64,
                      "strategy": "uniform"}, "versions": {"torch": "2.13.0"}}))
    (tmp_path / "state.json").write_text(json.dumps({
        "version": 1, "phase": "done", "step": 2, "candidates": cands, "baseline_id": "c000",
        "budgets": {"latency_percentile": 90, "max_latency_ms": 10.0}, "latency_limit_ms": 10.0,
        "groups": {"conv": 32}, "device_measurements": 4, "device": {"cores": 2},
        "final": {"candidate": "c002", "accuracy": 0.97, "finetuned": True,
                  "onnx_input_shape": [64, 1, 28, 28]},
        "outcome": {"met": True, "reason": "every budget met"}, "elapsed_s": 12.0}))
    report = render_run(tmp_path)
    assert report["speedup"] == 20.0 / 9.0
    assert report["pareto_front"] == ["c001", "c002", "c000"]
    assert json.loads((tmp_path / "report.json").read_text())["chosen_id"] == "c002"
    rows = list(csv.DictReader((tmp_path / "candidates.csv").open()))
    assert [r["id"] for r in rows] == ["c000", "c001", "c002", "c003"]
    assert rows[3]["feasible"] == "False"
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "per batch of 64" in html
    text = summary_text(report)
    assert "budget met" in text and "4 device measurements" in text
