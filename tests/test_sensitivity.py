"""Sensitivity analysis on the shipped MNIST CNN with real data; its ratios file feeds prune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeprune.errors import UsageError
from edgeprune.pruning.prune import PruneConfig, load_layer_ratios, prune
from edgeprune.pruning.sensitivity import analyze, choose_ratios, write_outputs


@pytest.fixture(scope="module")
def setup():
    from edgeprune.data import load_data
    from edgeprune.models.load import load_model

    bundle = load_data("builtin:mnist5k", input_shape=(1, 28, 28), batch_size=200)
    model = load_model("builtin:mnist-cnn")
    example = bundle.val.dataset.batch([0])[0]
    result = analyze(model, bundle.val, example, ratios=(0.5, 0.9), max_batches=2)
    return model, bundle, example, result


def test_curves_per_layer(setup):
    model, _, _, result = setup
    assert set(result.layers) == {"features.0", "features.3", "classifier.0"}
    assert result.baseline_top1 > 0.98
    for points in result.layers.values():
        assert [p.ratio for p in points] == [0.5, 0.9]
        assert points[1].params_removed > points[0].params_removed > 0
    # removing 90% of the first conv's 32 filters hurts more than half of them
    first = result.layers["features.0"]
    assert first[1].drop > first[0].drop
    assert sum(p.numel() for p in model.parameters()) == result.params  # model untouched


def test_ratios_file_loads_with_prunes_loader(setup, tmp_path):
    model, _, example, result = setup
    data = write_outputs(result, tmp_path, target_reduction=0.4, model=model,
                         example_inputs=example)
    ratios = load_layer_ratios(tmp_path / "ratios.toml", model)
    assert ratios == data["recommendation"]["ratios"] and ratios
    pruned = prune(model, example, PruneConfig(layer_ratios=ratios, only_listed=True))
    assert 1 - pruned.params_after / pruned.params_before >= 0.4
    assert data["recommendation"]["target_met"]
    assert json.loads((tmp_path / "sensitivity.json").read_text())["ratios"] == [0.5, 0.9]
    assert (tmp_path / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_max_drop_bounds_every_layer(setup):
    _, _, _, result = setup
    ratios, facts = choose_ratios(result, max_drop=0.0)
    for name, ratio in ratios.items():
        assert next(p for p in result.layers[name] if p.ratio == ratio).drop <= 0.0
    assert facts["drop_bound"] == 0.0
    with pytest.raises(UsageError):
        choose_ratios(result)


def test_cli_sensitivity_json(tmp_path, capsys):
    from edgeprune.cli.main import main

    out = tmp_path / "sens"
    code = main(["sensitivity", "--model", "builtin:mnist-cnn", "--data", "builtin:mnist5k",
                 "--ratios", "0.5", "--layers", "features.3", "--val-batches", "1",
                 "--max-drop", "5", "--out", str(out), "--format", "json", "--no-plot"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["layers"]) == ["features.3"]
    assert load_layer_ratios(out / "ratios.toml") == data["recommendation"]["ratios"]
    assert data["recommendation"]["max_drop"] == 0.05  # --max-drop is in points, like fit's


def test_the_plot_is_left_out_when_matplotlib_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeprune.errors import PlottingUnavailable
    from edgeprune.pruning import sensitivity
    from edgeprune.pruning.sensitivity import LayerPoint, SensitivityResult

    result = SensitivityResult(
        baseline_top1=0.9, params=100, ratios=(0.5,), criterion="l2",
        layers={"conv": (LayerPoint(0.5, 0.8, 0.1, 10, 2),)}, channels={"conv": 4},
        val_batches=None, skipped={})

    def missing(*_args: object, **_kwargs: object) -> None:
        raise PlottingUnavailable("matplotlib is not installed (pip install matplotlib)")

    monkeypatch.setattr(sensitivity, "figure", missing)  # fault injection: no matplotlib
    data = write_outputs(result, tmp_path)
    assert "plot" not in data["files"] and "matplotlib" in data["plot_skipped"]
    assert not (tmp_path / "sensitivity.png").exists()
    assert json.loads((tmp_path / "sensitivity.json").read_text())["baseline_top1"] == 0.9
