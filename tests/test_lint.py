"""The tree stays ruff-clean (ruff is installed by `scripts/setup.sh --test`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (scripts/setup.sh --test installs it)")
    out = subprocess.run([ruff, "check", "edgeprune", "tests", "scripts"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "bash scripts/setup.sh --test && .venv/bin/python -m pytest -q"
    assert command in readme.split("\n\n", 3)[1] + readme  # in the README ...
    assert ci.rstrip().splitlines()[-1] == command  # ... and exactly what CI runs last
