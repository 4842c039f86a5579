"""The CLI starts without heavy imports: `edgeprune --help` must not import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgeprune.cli.main import COMMANDS, build_parser

HEAVY = ("torch", "numpy", "onnx", "onnxruntime", "paramiko", "torch_pruning", "matplotlib")


def _imported_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from edgeprune.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY=")][-1]
    return {m for m in line.removeprefix("HEAVY=").split(",") if m}


def test_top_level_help_imports_nothing_heavy():
    assert _imported_after(["--help"]) == set()


@pytest.mark.parametrize("command", [name for name, _ in COMMANDS])
def test_command_help_imports_nothing_heavy(command):
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    if command not in choices:
        pytest.skip(f"command {command!r} is not built yet")
    assert _imported_after([command, "--help"]) == set()


def test_import_edgeprune_is_lazy():
    code = "import sys, edgeprune; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
