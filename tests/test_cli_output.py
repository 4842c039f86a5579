"""The CLI's output sink: results on stdout, and the one progress renderer on stderr."""

from __future__ import annotations

import json
import threading

import pytest

from edgeprune.cli._output import Output

EVENTS = [
    {"stage": "data", "message": "loading data builtin:digits"},
    {"stage": "finetune", "event": "start", "epochs": 2, "message": "fine-tuning (full)"},
    {"stage": "finetune", "event": "batch", "epoch": 1, "epochs": 2, "batch": 1,
     "n_batches": 2, "loss": 0.5},
    {"stage": "finetune", "event": "batch", "epoch": 1, "epochs": 2, "batch": 2,
     "n_batches": 2, "loss": 0.25},
    {"stage": "finetune", "event": "epoch", "epoch": 1, "epochs": 2,
     "message": "epoch 1/2: loss 0.3750"},
    {"stage": "sensitivity", "event": "point", "done": 1, "total": 2,
     "message": "conv1 at 0.50: top-1 90%"},
    {"stage": "sensitivity", "event": "point", "done": 2, "total": 2,
     "message": "conv2 at 0.50: top-1 80%"},
    {"stage": "upload", "done_bytes": 10, "total_bytes": 100},
]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_off_a_terminal_every_message_is_one_plain_line(capsys: pytest.CaptureFixture[str]):
    out = Output("text", live=False)
    for event in EVENTS:
        out.progress(event)
    out.result({"ok": True})
    captured = capsys.readouterr()
    assert _lines(captured.err) == [
        "  loading data builtin:digits", "  fine-tuning (full)", "  epoch 1/2: loss 0.3750",
        "  conv1 at 0.50: top-1 90%", "  conv2 at 0.50: top-1 80%"]
    assert captured.out == "ok: True\n"


def test_json_mode_keeps_stdout_one_document(capsys: pytest.CaptureFixture[str]):
    out = Output("json", live=True)  # a terminal does not bring bars into JSON mode
    for event in EVENTS:
        out.progress(event)
    out.result({"ok": True})
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"ok": True}
    assert "  epoch 1/2: loss 0.3750" in captured.err.splitlines()
    assert "\x1b" not in captured.err


def test_on_a_terminal_counts_are_bars_and_milestones_stay_as_lines(
        capsys: pytest.CaptureFixture[str]):
    out = Output("text", live=True)
    for event in EVENTS:
        out.progress(event)
    out.result({"ok": True})
    err = capsys.readouterr().err
    lines = [line.strip() for line in _lines(err)]
    # messages without a count, and the message that completes a count, are kept as lines;
    # a count still running (conv1's point, the upload) only moved its bar
    for kept in ("loading data builtin:digits", "fine-tuning (full)", "epoch 1/2: loss 0.3750",
                 "conv2 at 0.50: top-1 80%"):
        assert kept in lines
    assert "conv1 at 0.50: top-1 90%" not in lines


def test_progress_for_renders_only_the_named_stages(capsys: pytest.CaptureFixture[str]):
    out = Output("text", live=False)
    render = out.progress_for("fit", "measure")
    for stage in ("fit", "export", "measure", "data"):
        render({"stage": stage, "message": f"{stage} step"})
    assert _lines(capsys.readouterr().err) == ["  fit step", "  measure step"]


def test_progress_from_threads(capsys: pytest.CaptureFixture[str]):
    out = Output("text", live=True)

    def work(name: str) -> None:
        for i in range(1, 51):
            out.progress({"stage": name, "done": i, "total": 50, "message": f"{name} {i}"})

    threads = [threading.Thread(target=work, args=(f"job{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.close()
    lines = [line.strip() for line in _lines(capsys.readouterr().err)]
    assert sorted(lines) == [f"job{n} 50" for n in range(4)]
