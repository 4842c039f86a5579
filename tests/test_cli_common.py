"""The options commands share are declared once, in edgeprune.cli._common: every command's
``--force``, ``--data``, ``--batch-size``, ... is made by the helper there, so the flags read and
parse alike (a command may word the help, and keep its historic type, through a parameter)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgeprune.cli import _common
from edgeprune.cli.main import build_parser

# flag -> the _common helper that declares it
SHARED = {
    "--force": "add_force", "--data": "add_data", "--batch-size": "add_batch_size",
    "--seed": "add_seed", "--threads": "add_threads", "--weights": "add_weights",
    "--input-shape": "add_input_shape", "--runs": "add_measurement_runs",
    "--warmup": "add_measurement_runs", "--repeats": "add_repeats", "--no-cache": "add_no_cache",
}
# fit generates its flags from FitSettings metadata; measure's --input-shape is another option
# (repeatable NAME=shape of an artifact's dynamic inputs) that only shares the name
NOT_SHARED = ({("fit", flag) for flag in SHARED if flag != "--force"}
              | {("measure", "--input-shape")})


def _commands(parser: argparse.ArgumentParser,
              prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _commands(sub, f"{prefix}{name} ")


def _fields(action: argparse.Action) -> tuple[Any, ...]:
    return (type(action), action.option_strings, action.dest, action.default, action.type,
            action.metavar, action.help, action.required, action.nargs, action.const,
            action.choices)


def test_shared_flags_are_declared_by_common(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record which module called add_argument for each action: for a shared flag it is
    _common, in every command (directly or in an argument group)."""
    caller: dict[int, str] = {}
    add_argument = argparse._ActionsContainer.add_argument

    def recording(self: Any, *args: Any, **kwargs: Any) -> argparse.Action:
        action = add_argument(self, *args, **kwargs)
        caller[id(action)] = sys._getframe(1).f_globals["__name__"]
        return action

    monkeypatch.setattr(argparse._ActionsContainer, "add_argument", recording)
    found = []
    for command, sub in _commands(build_parser()):
        for action in sub._actions:
            for flag in set(action.option_strings) & SHARED.keys():
                if (command, flag) in NOT_SHARED:
                    continue
                found.append((command, flag))
                assert caller[id(action)] == "edgeprune.cli._common", \
                    f"edgeprune {command} declares {flag} itself; use _common.{SHARED[flag]}"
    # the helpers are in use where the flags are (a vacuous pass would prove nothing)
    assert {("export", "--force"), ("gate", "--force"), ("prune", "--data"),
            ("sensitivity", "--batch-size"), ("materialize", "--data"), ("prune", "--seed"),
            ("measure", "--threads"), ("measure", "--weights"), ("gate", "--input-shape"),
            ("gate", "--runs"), ("measure", "--no-cache")} <= set(found)


# (command, flag) -> the helper call that reproduces the command's action exactly
EXPECTED: dict[tuple[str, str], Callable[[argparse.ArgumentParser], None]] = {
    ("export", "--force"): lambda p: _common.add_force(p),
    ("gate", "--force"): lambda p: _common.add_force(
        p, help="overwrite --junit/--write-baseline files"),
    ("prune", "--batch-size"): lambda p: _common.add_batch_size(p, default=64, type=int),
    ("sensitivity", "--batch-size"): lambda p: _common.add_batch_size(p, default=256, type=int),
    ("evaluate", "--batch-size"): lambda p: _common.add_batch_size(
        p, default=256, help="images per batch (default: 256)"),
    ("sensitivity", "--data"): lambda p: _common.add_data(p, help="real data with a val split"),
    ("finetune", "--data"): lambda p: _common.add_data(p),
    ("prune", "--seed"): lambda p: _common.add_seed(p),
    ("sensitivity", "--seed"): lambda p: _common.add_seed(p),
    ("finetune", "--seed"): lambda p: _common.add_seed(
        p, default=None, help="seed of weights order and shuffling (default 0)"),
    ("finetune", "--threads"): lambda p: _common.add_threads(p),
    ("measure", "--threads"): lambda p: _common.add_threads(
        p, type=int, metavar=None,
        help="intra-op threads (default: the profile's, else the runtime's)"),
    ("measure", "--repeats"): lambda p: _common.add_repeats(p),
    ("gate", "--no-cache"): lambda p: _common.add_no_cache(p),
}


@pytest.mark.parametrize("command, flag", sorted(EXPECTED))
def test_command_flag_is_what_the_helper_makes(command: str, flag: str) -> None:
    """Name, default, type, metavar and help as the helper declares them."""
    subs = dict(_commands(build_parser()))
    action = next(a for a in subs[command]._actions if flag in a.option_strings)
    scratch = argparse.ArgumentParser()
    EXPECTED[command, flag](scratch)
    made = next(a for a in scratch._actions if flag in a.option_strings)
    assert _fields(action) == _fields(made)


def test_building_every_command_imports_no_torch() -> None:
    """The helpers are called by every command's add_parser, so the whole parser (what
    `edgeprune --help` builds) must still come up without torch."""
    code = ("import sys\nfrom edgeprune.cli.main import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('torch', 'numpy', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
