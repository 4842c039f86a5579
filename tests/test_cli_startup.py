"""The CLI starts without heavy imports: `edgeprune --help` must not import torch."""

from __future__ import annotations

import errno
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


@pytest.mark.parametrize("fault, expected", [
    (ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib"),
     "Python package 'matplotlib' is not installed — pip install matplotlib"),
    (OSError(errno.ENOSPC, "No space left on device", "runs/x/model.onnx"),
     "No space left on device (runs/x/model.onnx) — free some disk space"),
])
def test_environment_faults_are_one_line(fault: Exception, expected: str,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Faults of this machine (a package missing, the disk full) raised deep inside a command:
    one line naming the fix and exit 1, not a traceback (injected: neither can be produced on
    demand without breaking the test environment)."""
    from edgeprune.cli import info
    from edgeprune.cli.main import main

    def broken(*_args: object) -> int:
        raise fault

    monkeypatch.setattr(info, "run", broken)
    monkeypatch.delenv("EDGEPRUNE_DEBUG", raising=False)
    assert main(["info", "model.onnx"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]


def test_warnings_are_one_line(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    from edgeprune.cli import info
    from edgeprune.cli.main import main

    def warn(*_args: object) -> int:
        warnings.warn("something to know\n  about", RuntimeWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(info, "run", warn)
    monkeypatch.delenv("EDGEPRUNE_DEBUG", raising=False)
    before = warnings.showwarning
    assert main(["info", "model.onnx"]) == 0
    assert capsys.readouterr().err == "edgeprune: warning: something to know about\n"
    assert warnings.showwarning is before  # restored for whoever called main()


@pytest.mark.parametrize("argv", [["gate", "x.onnx", "--size-mb", "abc"],
                                  ["prune", "--model", "builtin:mnist-cnn", "--ratio", "abc",
                                   "--out", "x"],
                                  ["finetune", "--model", "m", "--data", "d", "--epochs", "0",
                                   "--out", "x"]])
def test_a_bad_flag_with_format_json_is_one_json_error(argv: list[str],
                                                       capsys: pytest.CaptureFixture) -> None:
    import json

    from edgeprune.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--format", "json"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["error"]["type"] == "UsageError" and f"edgeprune {argv[0]} --help" in \
        doc["error"]["message"]
    assert captured.err.count("\n") == 1 and captured.err.startswith("edgeprune: error: ")
    with pytest.raises(SystemExit):  # text mode keeps argparse's usage block
        main(argv)
    assert "usage:" in capsys.readouterr().err
