"""Outputs never destroy inputs and a wrong kind of --out is one line, --force or not.

Each case is the real CLI in-process; the checks run before any model is loaded, so they are
quick. The input files are checked byte for byte afterwards."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgeprune.cli.main import main


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    assert main(["prune", "--model", "builtin:mnist-cnn", "--ratio", "0.3", "--no-eval",
                 "--out", "pruned"]) == 0
    (tmp_path / "model.onnx").write_bytes(b"not really onnx, but the user's file")
    (tmp_path / "empty").mkdir()
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        (tmp_path / "imgs" / cls / "x.png").write_bytes(b"not decoded before the check")
    return tmp_path


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


CASES = [
    (["export", "--model", "pruned", "--out", "pruned/weights.safetensors", "--force"],
     "would overwrite the input 'pruned'"),
    (["export", "--model", "pruned", "--out", "pruned", "--force"], "names a directory"),
    (["export", "--model", "builtin:mnist-cnn", "--out", "empty", "--force"],
     "names a directory"),
    (["export", "--model", "builtin:mnist-cnn", "--out", "newdir/"], "names a directory"),
    (["prune", "--model", "pruned", "--ratio", "0.2", "--out", "pruned", "--force"],
     "would overwrite the input 'pruned'"),
    (["prune", "--model", "builtin:mnist-cnn", "--ratio", "0.2", "--out", "model.onnx",
      "--force"], "is a file; this writes a directory"),
    (["finetune", "--model", "pruned", "--data", "builtin:digits", "--out", "pruned",
      "--force"], "would overwrite the input 'pruned'"),
    (["sensitivity", "--model", "builtin:mnist-cnn", "--data", "builtin:mnist5k", "--out",
      "model.onnx", "--force"], "is a file; this writes a directory"),
    (["fit", "--model", "builtin:mnist-cnn", "--data", "builtin:mnist5k", "--speedup", "2",
      "--out", "model.onnx"], "is a file; fit writes a run directory"),
    (["fit", "--model", "pruned", "--data", "builtin:mnist5k", "--speedup", "2", "--out",
      ".", "--force"], "would overwrite the input 'pruned'"),
    # outputs inside an image folder would become a class of it on the next load
    (["prune", "--model", "builtin:mnist-cnn", "--data", "imagefolder:imgs", "--ratio", "0.2",
      "--out", "imgs/pruned"], "would overwrite the input 'imgs'"),
    (["fit", "--model", "builtin:mnist-cnn", "--data", "imagefolder:imgs", "--speedup", "2",
      "--out", "imgs/run"], "would overwrite the input 'imgs'"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(c[0][:1] + c[0][-3:])
                                                          for c in CASES])
def test_a_bad_output_is_refused_in_one_line_and_inputs_survive(
        work: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(work)
    capsys.readouterr()
    assert main([*argv, "--format", "json"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    assert json.loads(captured.out)["error"]["type"] == "OutputExistsError"
    assert _digest(work) == before
    assert not (work / "newdir").exists()


def test_fit_never_clears_a_directory_that_is_not_a_run(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--force starts a fit run over, but a directory holding other things is not a run."""
    user = work / "mine"
    (user / "model").mkdir(parents=True)
    (user / "model" / "notes.txt").write_text("keep me")
    code = main(["fit", "--model", "builtin:mnist-cnn", "--data", "builtin:mnist5k",
                 "--speedup", "2", "--out", str(user), "--force"])
    assert code == 1 and "is not a fit run directory" in capsys.readouterr().err
    assert (user / "model" / "notes.txt").read_text() == "keep me"


def test_a_users_settings_json_does_not_make_a_directory_a_fit_run(tmp_path: Path) -> None:
    """Only a settings.json written by edgeprune marks a run: a project folder with its own
    settings.json is neither cleared (--force) nor written into."""
    from edgeprune.errors import OutputExistsError
    from edgeprune.fit.rundir import RunDir

    project = tmp_path / "proj"
    (project / "models" / "mine").mkdir(parents=True)
    (project / "models" / "mine" / "w.bin").write_bytes(b"weights")
    (project / "settings.json").write_text('{"theme": "dark"}')
    for force in (False, True):
        with pytest.raises(OutputExistsError, match="is not a fit run directory"):
            RunDir(project).start({"model": "m"}, force=force)
    assert (project / "models" / "mine" / "w.bin").read_bytes() == b"weights"
    assert (project / "settings.json").read_text() == '{"theme": "dark"}'
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "settings.json").write_text('{"theme": "dark"}')
    with pytest.raises(OutputExistsError):
        RunDir(alone).start({"model": "m"}, force=False)


# settings.json of a run written before the settings had sections (and before tradeoff_points)
FLAT_SETTINGS = {
    "model": "builtin:mnist-cnn", "data": "builtin:mnist5k", "target": "local", "profile": None,
    "identity_file": None, "known_hosts": None, "accept_new_host_key": False, "python": None,
    "targets_file": [], "profiles_file": [], "weights": None, "input_shape": None,
    "strategy": "auto", "latency_ms": None, "speedup": 2.0, "max_accuracy_drop": None,
    "memory_mb": None, "size_mb": None, "criterion": "l2", "round_to": 1, "max_ratio": 0.9,
    "batch_size": 64, "measure_batch": None, "threads": None, "step_epochs": 1,
    "step_batches": 20, "final_epochs": 2, "final_batches": 0, "lr": 0.01, "eval_batches": 0,
    "max_steps": 12, "uniform_tolerance": 0.1, "netadapt_step": 0.1, "netadapt_proposals": 8,
    "runs": 30, "warmup": 5, "max_repeats": 0, "max_measurements": 30, "noise_margin": 0.15,
    "verify_pairs": 2, "exporter": "auto", "tflite": False, "seed": 0}


def test_a_run_written_before_a_setting_existed_still_resumes(tmp_path: Path) -> None:
    """settings.json of an older version lacks tradeoff_points: --resume reads it as 0 (what that
    version did) and the stored settings match, so the run continues instead of being refused.
    It is also flat (written before the settings had sections): read the same."""
    from edgeprune.fit import FitSettings
    from edgeprune.fit.rundir import RunDir

    run = RunDir(tmp_path / "old")
    old = dict(FLAT_SETTINGS)
    assert run.start(old, force=False) is False
    (tmp_path / "old" / "state.json").write_text("{}")
    resumed = FitSettings.from_dict(run.read_settings()["settings"])
    assert resumed.search.tradeoff_points == 0
    assert resumed == FitSettings(model="builtin:mnist-cnn", data="builtin:mnist5k",
                                  speedup=2.0, tradeoff_points=0)
    assert run.start(resumed.to_dict(), force=False,
                     normalize=lambda d: FitSettings.from_dict(d).to_dict()) is True


def test_a_flat_run_with_other_settings_is_refused_naming_the_setting(tmp_path: Path) -> None:
    from edgeprune.errors import OutputExistsError
    from edgeprune.fit import FitSettings
    from edgeprune.fit.rundir import RunDir

    run = RunDir(tmp_path / "old")
    run.start({**FLAT_SETTINGS, "tradeoff_points": 3}, force=False)
    (tmp_path / "old" / "state.json").write_text("{}")
    wanted = FitSettings(model="builtin:mnist-cnn", data="builtin:mnist5k", speedup=3.0)
    with pytest.raises(OutputExistsError, match=r"budget.speedup: 2.0 there, 3.0 now"):
        run.start(wanted.to_dict(), force=False,
                  normalize=lambda d: FitSettings.from_dict(d).to_dict())


def test_prune_force_never_replaces_another_tools_model_json_dir(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tfjs = work / "tfjs"
    tfjs.mkdir()
    (tfjs / "model.json").write_text('{"format": "graph-model"}')
    (tfjs / "group1-shard1of1.bin").write_bytes(b"tfjs weights")
    code = main(["prune", "--model", "builtin:mnist-cnn", "--ratio", "0.2", "--no-eval",
                 "--out", str(tfjs), "--force"])
    assert code == 1 and "not a pruned model" in capsys.readouterr().err
    assert (tfjs / "group1-shard1of1.bin").read_bytes() == b"tfjs weights"


def test_fit_interrupted_message_names_the_run_directory_to_resume() -> None:
    import argparse

    from edgeprune.cli.fit import INTERRUPTED

    generated = argparse.Namespace(out=None, resume=None, run_dir="runs/fit-20261207-190000")
    assert "edgeprune fit --resume runs/fit-20261207-190000" in INTERRUPTED(generated)
    given = argparse.Namespace(out="runs/x", resume=None, run_dir="runs/x")
    assert "--resume runs/x (or the same command again)" in INTERRUPTED(given)
