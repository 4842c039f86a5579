"""Search strategies: registry, uniform widths, the latency model's fit (no device needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from edgeprune.errors import ConfigError
from edgeprune.prune import round_kept
from edgeprune.search import LatencyModel, get_strategy, list_strategies, uniform_widths


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
    groups: ClassVar[dict[str, int]] = {"a": 32, "b": 64}
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
