"""``edgeprune targets list``: every target with the file it came from, in text and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeprune import config
from edgeprune.cli.main import main

PI = 'description = "bench pi"\nprofile = "rpi4"\n[ssh]\nhost = "10.0.0.7"\nuser = "ci"\n'


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("EDGEPRUNE_CONFIG_DIR", str(home / ".config" / "edgeprune"))
    return home


def _rows(text: str) -> dict[str, str]:
    """NAME -> the whole row of the text table."""
    return {line.split()[0]: line for line in text.splitlines()[2:]}


def test_list_shows_the_file_of_each_target(home: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    user = home / ".config" / "edgeprune" / "targets"
    user.mkdir(parents=True)
    (user / "bench-pi.toml").write_text(PI)
    extra = tmp_path / "elsewhere" / "lab.toml"
    extra.parent.mkdir()
    extra.write_text(PI.replace("bench pi", "lab board"))
    shipped = Path(config.discover("targets")["rpi4"][1])

    assert main(["targets", "list", "--targets-file", str(extra), "--format", "json"]) == 0
    targets = {t["name"]: t for t in json.loads(capsys.readouterr().out)["targets"]}
    assert targets["bench-pi"]["file"] == str(user / "bench-pi.toml")
    assert targets["bench-pi"]["origin"] == "user"
    assert targets["lab"]["file"] == str(extra) and targets["lab"]["origin"] == "file"
    assert targets["rpi4"]["file"] == str(shipped) and targets["rpi4"]["origin"] == "builtin"

    assert main(["targets", "list", "--targets-file", str(extra)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split() == ["NAME", "KIND", "HOST", "PROFILE", "DESCRIPTION",
                                            "FILE"]
    rows = _rows(text)
    assert rows["bench-pi"].endswith("  ~/.config/edgeprune/targets/bench-pi.toml")
    assert rows["lab"].endswith(f"  {extra}")  # not under home: as it is
    assert rows["rpi4"].endswith(f"{shipped.name} (built in)")


def test_local_without_a_file_is_listed_as_built_in(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`local` works without any local.toml (devices.targets.LOCAL), so the list shows it."""
    empty = tmp_path / "no-shipped-files"
    empty.mkdir()
    monkeypatch.setattr(config, "search_dirs", lambda kind: [("builtin", empty)])
    assert main(["targets", "list", "--format", "json"]) == 0
    (local,) = json.loads(capsys.readouterr().out)["targets"]
    assert local["name"] == "local" and local["file"] == "built in" and local["path"] is None
    assert local["kind"] == "local" and local["profile"] == "local"
    assert main(["targets", "list"]) == 0
    assert _rows(capsys.readouterr().out)["local"].rstrip().endswith("this machine  built in")
