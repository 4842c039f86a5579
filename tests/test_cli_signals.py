"""Every command stops on Ctrl-C or SIGTERM (a cancelled CI job) with exit 130 and one line,
in a real process; a fine-tune then continues from its last checkpoint with --resume.
(fit's own run-directory resume is tested in test_fit_signals.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _finetune(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgeprune.cli.main", "finetune", "--model",
            "builtin:mnist-cnn", "--data", "builtin:mnist5k", "--recipe", "full", "--epochs", "4",
            "--max-batches", "15", "--val-batches", "2", "--threads", "1", "--out", str(out),
            *extra]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_mid_finetune_exits_130_and_resume_finishes(tmp_path: Path,
                                                             signum: int) -> None:
    out = tmp_path / "tuned"
    ckpt = Path(f"{out}.ckpt")
    proc = subprocess.Popen(_finetune(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.is_dir() and any(ckpt.iterdir()):
            break  # the first epoch's checkpoint is written: the second epoch is under way
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    errors = [ln for ln in err.splitlines() if ln.startswith("edgeprune: error:")]
    assert len(errors) == 1 and f"{out}.ckpt/" in errors[0] and "--resume" in errors[0], err
    assert not out.exists()  # no half-written model directory

    again = subprocess.run(_finetune(out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "--resume" in again.stderr  # never silently restarted
    resumed = subprocess.run(_finetune(out, "--resume"), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "model.json").is_file()
