"""What a search strategy is and what it may ask of a fit: :class:`Strategy`,
:class:`SearchContext`, the registry, and helpers every strategy shares.

A strategy never touches the device or the model itself. It asks a :class:`SearchContext`
(implemented by :class:`edgeprune.fit.candidates.Candidates`) to *evaluate* widths (prune, short
fine-tune, accuracy — local and cheap) and to *measure* a candidate (export + device — the cost
we minimise), and keeps its own progress in a JSON-able ``state`` dict that ``fit`` persists
after every step, so a run interrupted between steps resumes exactly where it stopped.

Latencies a strategy sees (``ctx.latency``) are the ones budgets are judged on: for a relative
budget, the candidate's ratio to the unpruned model measured beside it, times the unpruned
model's reference measurement — so a machine that slows down mid-run does not move them. Noisy
measurements (coefficient of variation above the runner's threshold) weigh less in a latency
model (:func:`measurement_weight`).

Register another strategy with :func:`register_strategy`; ``fit --strategy NAME`` picks it. This
module imports no strategy: the package (:mod:`edgeprune.fit.search`) imports them, and they
register themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from edgeprune._registry import Registry
from edgeprune.fit.settings import FitSettings

__all__ = ["Record", "SearchContext", "Strategy", "Widths", "best_meeting", "get_strategy",
           "list_strategies", "margin", "measurement_weight", "register_strategy",
           "uniform_widths"]

Widths = dict[str, int]
Record = dict[str, Any]


class SearchContext(Protocol):
    """Everything ``fit`` offers a strategy (and the trade-off points); records are plain dicts
    (see :meth:`edgeprune.fit.candidates.Candidates.evaluate` for their keys)."""

    @property
    def settings(self) -> FitSettings: ...
    @property
    def groups(self) -> Mapping[str, int]:  # group root -> channels of the unpruned model
        ...
    @property
    def state(self) -> dict[str, Any]:  # the run's state (``device`` facts once measured)
        ...
    @property
    def measure_batch(self) -> int:  # inputs per timed run
        ...
    @property
    def baseline_id(self) -> str: ...
    @property
    def floor_id(self) -> str:  # the smallest allowed model (every group at its minimum)
        ...
    @property
    def max_ratio(self) -> float: ...
    @property
    def latency_budget_ms(self) -> float | None: ...

    # widths
    def min_width(self, root: str) -> int: ...
    def round_width(self, root: str, kept: int) -> int: ...
    def mac_slopes(self) -> dict[str, float]: ...
    def layer_costs(self) -> list[dict[str, Any]]: ...
    def channel_scores(self) -> dict[str, list[float]]: ...

    # candidates
    def candidate(self, cid: str) -> Record: ...
    def evaluate(self, widths: Mapping[str, int], *, parent: str, kind: str, note: str,
                 step: int, predicted_latency_ms: float | None = None) -> Record: ...
    def measure(self, cid: str) -> Record: ...
    def meets(self, record: Record) -> bool: ...
    def latency(self, record: Record) -> float | None: ...
    def can_measure(self, invocations: int = 2) -> bool: ...


class Strategy(Protocol):
    name: str

    def start(self, ctx: SearchContext) -> dict[str, Any]: ...
    def step(self, ctx: SearchContext, state: dict[str, Any],
             step: int) -> tuple[dict[str, Any], bool]: ...
    def chosen(self, ctx: SearchContext, state: dict[str, Any]) -> str | None: ...


StrategyFactory = Callable[[], Strategy]
_STRATEGIES: Registry[StrategyFactory] = Registry("search strategy")


def register_strategy(name: str) -> Callable[[StrategyFactory], StrategyFactory]:
    """Class decorator: register a strategy factory under ``name`` (again: warns, replaces)."""
    return _STRATEGIES.register(name)


def get_strategy(name: str) -> Strategy:
    return _STRATEGIES.get(name)()


def list_strategies() -> list[str]:
    return _STRATEGIES.names()


def uniform_widths(ctx: SearchContext, ratio: float) -> Widths:
    """Every group keeps ``original - floor(ratio × original)`` channels, rounded and clamped."""
    widths: Widths = {}
    for root, original in ctx.groups.items():
        kept = original - math.floor(ratio * original + 1e-9)
        widths[root] = max(ctx.min_width(root), ctx.round_width(root, kept))
    return widths


def best_meeting(ctx: SearchContext, ids: list[str]) -> str | None:
    """Among measured candidates that meet every budget: best accuracy, then lowest latency."""
    meeting = [ctx.candidate(c) for c in ids]
    meeting = [r for r in meeting if ctx.meets(r)]
    if not meeting:
        return None
    best = max(meeting, key=lambda r: (round(r["accuracy"], 6), -(ctx.latency(r) or 0.0)))
    return str(best["id"])


def margin(ctx: SearchContext) -> float:
    """The fit's noise margin: how near the latency budget a result is measured again."""
    return float(ctx.settings.measure.noise_margin or 0.0)


def measurement_weight(record: Mapping[str, Any]) -> float:
    """How much a measured record should count in a latency model, in [0.05, 1].

    Steady measurements count fully. A noisy one (CV above the runner's threshold; the robust,
    IQR-based CV where the measurement has one) counts ``(threshold / cv)²`` — inverse to its
    variance — and pairs whose ratios disagree with each other by more than 10 % count less again.
    """
    weight = 1.0
    cv = record.get("robust_cv") or record.get("cv")
    threshold = record.get("cv_threshold") or 0.10
    if record.get("noisy") and cv:
        weight = (float(threshold) / float(cv)) ** 2
    ratios = [float(r) for r in record.get("pair_ratios") or []]
    if len(ratios) > 1:
        spread = max(ratios) / min(ratios) - 1
        weight /= 1 + (spread / 0.10) ** 2
    return max(0.05, min(1.0, weight))
