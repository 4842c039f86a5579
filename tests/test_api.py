"""The documented public API (README "Python API"), used the way the docs show it."""

from __future__ import annotations

import importlib
import pkgutil
import types
from pathlib import Path

import pytest

import edgeprune


def _import_every_module() -> None:
    for info in pkgutil.walk_packages(edgeprune.__path__, "edgeprune."):
        importlib.import_module(info.name)


def test_no_public_name_is_shadowed_by_a_submodule() -> None:
    """Once every submodule is imported, each exported name is still the documented object,
    never a module that happens to share its name (``edgeprune.prune`` is the function)."""
    _import_every_module()
    for name in edgeprune.__all__:
        if name == "__version__":
            continue
        value = getattr(edgeprune, name)
        assert not isinstance(value, types.ModuleType), name
        owner = importlib.import_module(edgeprune._EXPORTS[name])
        assert value is getattr(owner, name), name
    with pytest.raises(AttributeError):
        edgeprune.no_such_name  # noqa: B018


def test_the_readme_api_end_to_end(tmp_path: Path) -> None:
    """load_model -> prune -> save/load -> export_onnx -> measure (local) -> load_data/evaluate."""
    import torch

    torch.manual_seed(0)
    model = edgeprune.load_model("builtin:mnist-cnn")
    example = torch.zeros(1, 1, 28, 28)
    result = edgeprune.prune(model, example, edgeprune.PruneConfig(ratio=0.5, round_to=8))
    assert result.params_after < result.params_before
    saved = edgeprune.save(result.model, tmp_path / "pruned", spec="builtin:mnist-cnn",
                           input_shape=(1, 1, 28, 28), history=list(result.history))
    again = edgeprune.load(saved)
    assert torch.allclose(again(example), result.model(example), atol=1e-6)
    exported = edgeprune.export_onnx(again, example, tmp_path / "pruned.onnx")
    assert exported.max_abs_diff <= exported.atol + exported.rtol * exported.max_abs_output
    measured = edgeprune.measure(tmp_path / "pruned.onnx", edgeprune.load_target("local"),
                                 edgeprune.MeasureSettings(runs=5, warmup=1, use_cache=False))
    assert 0 < measured.p50_ms <= measured.p90_ms <= measured.max_ms
    bundle = edgeprune.load_data("builtin:digits", input_shape=(1, 28, 28), batch_size=64)
    accuracy = edgeprune.evaluate(again, bundle.val, max_batches=2)
    assert 0.0 <= accuracy.top1 <= 1.0
    settings = edgeprune.FitSettings(model="builtin:mnist-cnn", data="builtin:mnist5k", speedup=2)
    assert settings.to_dict()
    assert edgeprune.get_recipe("partial").name == "partial"
    assert callable(edgeprune.finetune) and callable(edgeprune.run_schedule)
    assert callable(edgeprune.materialize) and callable(edgeprune.export_tflite)
