"""A fit stopped by a signal (Ctrl-C, or SIGTERM from a cancelled CI job) in a real process:
exit 130 with one line, the run directory keeps its last completed step, and the same command
finishes the run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FLAGS = ["--target", "local", "--model", "builtin:mnist-cnn", "--data", "builtin:mnist5k",
         "--step-batches", "3", "--epochs", "1", "--final-batches", "3", "--runs", "10",
         "--eval-batches", "4", "--exporter", "torchscript", "--speedup", "1.3",
         "--uniform-tolerance", "0.2"]


def _fit(out: Path) -> list[str]:
    return [sys.executable, "-m", "edgeprune.cli.main", "fit", *FLAGS, "--out", str(out)]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_mid_fit_exits_130_and_the_same_command_finishes(tmp_path: Path,
                                                                  signum: int) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(_fit(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    log = out / "measurements.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break  # measuring has started: the search is under way
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    errors = [ln for ln in err.splitlines() if ln.startswith("edgeprune: error:")]
    assert len(errors) == 1 and "interrupted" in errors[0]
    state = json.loads((out / "state.json").read_text())
    assert state["phase"] != "done"
    measured_before = len(log.read_text().splitlines())

    again = subprocess.run(_fit(out), capture_output=True, text=True, timeout=900)
    assert again.returncode in (0, 3), again.stderr  # 3: the loaded machine missed the budget
    assert "resuming" in again.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["finished"] and (out / "model.onnx").exists()
    # the measurements of the first process are kept, not repeated from scratch
    assert len(log.read_text().splitlines()) > measured_before
    assert report["device_measurements"] >= measured_before
