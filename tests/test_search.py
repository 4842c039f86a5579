"""Search strategies: registry, uniform widths, the latency model's fit (no device needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from edgeprune.errors import ConfigError
from edgeprune.fit.search import (
    LatencyModel,
    get_strategy,
    list_strategies,
    measurement_weight,
    uniform_widths,
)
from edgeprune.pruning.prune import round_kept


class _Ctx:
    groups: ClassVar[dict[str, int]] = {"a": 32, "b": 64}
    max_ratio = 0.9
    settings = SimpleNamespace(round_to=8)

    def min_width(self, root: str) -> int:
        return round_kept(max(1, int(self.groups[root] * 0.1 + 0.999)), self.groups[root], 8)

    def round_width(self, root: str, kept: int) -> int:
        return round_kept(kept, self.groups[root], 8)


def test_registry_lists_uniform_and_netadapt_and_names_the_fix() -> None:
    assert {"uniform", "netadapt"} <= set(list_strategies())
    assert get_strategy("uniform").name == "uniform"
    with pytest.raises(ConfigError, match="did you mean 'netadapt'"):
        get_strategy("netadapt2")


def test_uniform_widths_round_and_clamp() -> None:
    ctx: Any = _Ctx()
    assert uniform_widths(ctx, 0.5) == {"a": 16, "b": 32}
    assert uniform_widths(ctx, 0.3) == {"a": 24, "b": 48}  # 23 → 24, 45 → 48 (rounded up)
    assert uniform_widths(ctx, 0.9) == {"a": 8, "b": 8}


def test_latency_model_learns_the_measured_slopes() -> None:
    groups = {"a": 32, "b": 64}
    prior = {"a": 5.0, "b": 5.0}  # wrong on purpose: the device says b matters 4× more
    model = LatencyModel(groups, 20.0, prior, ridge=0.001)
    for wa, wb in ((32, 64), (16, 64), (32, 32), (8, 16)):
        measured = 20.0 - 2.0 * (1 - wa / 32) - 8.0 * (1 - wb / 64)
        model.add({"a": wa, "b": wb}, measured)
    assert model.slopes["a"] == pytest.approx(2.0, abs=0.05)
    assert model.slopes["b"] == pytest.approx(8.0, abs=0.05)
    assert model.predict({"a": 16, "b": 16}) == pytest.approx(20 - 1 - 6, abs=0.1)
    again = LatencyModel.from_dict(groups, model.to_dict())
    assert again.slopes == pytest.approx(model.slopes)


def test_latency_model_keeps_the_prior_without_evidence() -> None:
    model = LatencyModel({"a": 10}, 10.0, {"a": 4.0})
    assert model.predict({"a": 5}) == pytest.approx(8.0)


def test_latency_model_weighs_noisy_points_down() -> None:
    """A noisy point that contradicts steady ones moves the fit far less than a steady one."""
    groups = {"a": 32, "b": 64}

    def truth(wa: int, wb: int) -> float:
        return 20.0 - 2.0 * (1 - wa / 32) - 8.0 * (1 - wb / 64)

    def fitted(weight: float) -> float:
        model = LatencyModel(groups, 20.0, {"a": 2.0, "b": 8.0}, ridge=0.001)
        for wa, wb in ((32, 64), (16, 64), (32, 32), (8, 16)):
            model.add({"a": wa, "b": wb}, truth(wa, wb))
        model.add({"a": 16, "b": 32}, truth(16, 32) + 6.0, weight)  # a wild outlier
        return abs(model.predict({"a": 16, "b": 32}) - truth(16, 32))

    assert fitted(0.05) < 0.25 * fitted(1.0)
    again = LatencyModel.from_dict(groups, {"base_ms": 1.0, "prior": {"a": 0, "b": 0},
                                            "ridge": 0.05, "points": [[{"a": 32, "b": 64}, 1.0]]})
    assert again.points[0][2] == 1.0  # points without a weight (older state) count fully


def test_measurement_weight_follows_noise_and_pair_disagreement() -> None:
    steady = {"cv": 0.05, "noisy": False, "cv_threshold": 0.1, "pair_ratios": [0.5]}
    noisy = {"cv": 0.3, "noisy": True, "cv_threshold": 0.1, "pair_ratios": [0.5]}
    split = {"cv": 0.05, "noisy": False, "cv_threshold": 0.1, "pair_ratios": [0.4, 0.6]}
    assert measurement_weight(steady) == 1.0
    assert measurement_weight(noisy) == pytest.approx((0.1 / 0.3) ** 2)
    assert measurement_weight(split) < 0.2
    assert measurement_weight({"cv": 10.0, "noisy": True}) == 0.05


def test_latency_model_rescales_a_prior_that_overestimates_every_group() -> None:
    """MobileNet-like: MACs promise twice the saving the device gives. One measurement of one
    group corrects the predictions for the others too (they share the scale)."""
    groups = {f"g{i}": 32 for i in range(25)}
    prior = {g: 4.0 for g in groups}  # the device saves 2.0 per unit fraction of each group
    model = LatencyModel(groups, 100.0, prior)
    model.add(dict(groups), 100.0)
    model.add({**groups, "g0": 16}, 100.0 - 2.0 * 0.5)
    assert model.scale == pytest.approx(0.5, rel=0.05)
    assert model.predict({**groups, "g7": 16}) == pytest.approx(99.0, abs=0.2)
