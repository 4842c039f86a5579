"""Report rendering from a run's data: Pareto front, JSON/CSV/HTML, terminal summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from edgeprune.fit.report import pareto_front, render_run, summary_text


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


def _write_run(tmp_path: Path) -> None:
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


def test_render_run_writes_json_csv_html(tmp_path: Path) -> None:
    _write_run(tmp_path)
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


def test_report_takes_the_outcome_from_the_final_re_measure(tmp_path: Path) -> None:
    """State version 2: judged latencies are load-corrected, the speed-up is the final check's."""
    base = {**_rec("c000", 0.99, 30.0, kind="baseline"), "widths": {"conv": 32},
            "latency_ms": 20.0, "latency_ratio": 1.0}
    chosen = {**_rec("c001", 0.98, 14.0), "latency_ms": 9.0, "latency_ratio": 0.45,
              "pair_ratios": [0.45], "ref_ms": 31.0}
    (tmp_path / "settings.json").write_text(json.dumps(
        {"settings": {"model": "m", "target": "local", "strategy": "netadapt",
                      "max_measurements": 30}, "versions": {}}))
    (tmp_path / "state.json").write_text(json.dumps({
        "version": 2, "phase": "done", "step": 1, "candidates": [base, chosen],
        "baseline_id": "c000", "measure_batch": 256, "threads": 1,
        "budgets": {"latency_percentile": 90, "max_latency_ratio": 0.5},
        "latency_limit_ms": 10.0, "groups": {"conv": 32}, "device_measurements": 9,
        "final": {"candidate": "c001", "accuracy": 0.985, "finetuned": True,
                  "onnx_input_shape": [256, 1, 28, 28], "measured_artifact": "model-b256.onnx",
                  "deployable": "model.onnx", "deployable_input_shape": [1, 1, 28, 28],
                  "verify": {"latency_ms": 8.0, "latency_ratio": 0.4, "pair_ratios": [0.4, 0.4],
                             "p90_ms": 12.0, "ref_ms": 30.0},
                  "deployable_measurement": {"latency_ratio": 0.25, "p90_ms": 0.05,
                                             "ref_ms": 0.2}},
        "outcome": {"met": True, "reason": "every budget met"}, "elapsed_s": 60.0}))
    (tmp_path / "measurements.jsonl").write_text(
        json.dumps({"cid": "c000", "role": "unpruned", "load_avg_1m": 9.5}) + "\n"
        + json.dumps({"cid": "c001", "role": "candidate", "load_avg_1m": 11.0}) + "\n{torn")
    report = render_run(tmp_path)
    assert report["speedup"] == pytest.approx(2.5)  # 1 / the final re-measure's ratio
    assert report["speedup_search"] == pytest.approx(1 / 0.45)
    assert report["final_latency_ms"] == 8.0
    assert report["measured_artifact"] == "model-b256.onnx"
    assert report["deployable"]["input_shape"] == [1, 1, 28, 28]
    assert report["load_avg_1m"] == {"min": 9.5, "max": 11.0}
    assert len(report["measurement_log"]) == 2  # the torn line is skipped
    assert "load-corrected" in report["latency_note"] and "1 thread" in report["latency_note"]
    text = summary_text(report)
    assert "speed-up 2.5× on the final re-measure" in text
    assert "model.onnx (batch 1)" in text and "speed-up 4×" in text
    html = (tmp_path / "report.html").read_text()
    assert "model-b256.onnx" in html and "9 of at most 30" in html


def test_report_without_matplotlib_names_the_fix(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    _write_run(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    report = render_run(tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png" not in html and html.count("pip install matplotlib") == 2
    assert report["chosen_id"] == "c002"  # the numbers are all there
