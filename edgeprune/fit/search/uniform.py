"""The ``uniform`` fit strategy, the baseline: one pruning ratio for every channel group.

Bisects the ratio in (0, max_ratio] on *measured* latency (one device comparison per step) until
the interval is ``uniform_tolerance`` wide; keeps the most accurate candidate that met the
budgets.
"""

from __future__ import annotations

from typing import Any

from edgeprune.fit.search.base import SearchContext, best_meeting, register_strategy, uniform_widths

__all__ = ["UniformStrategy"]


@register_strategy("uniform")
class UniformStrategy:
    """Bisect the uniform ratio in (0, max_ratio] on measured latency."""

    name = "uniform"

    def start(self, ctx: SearchContext) -> dict[str, Any]:
        floor = ctx.candidate(ctx.floor_id)
        return {"lo": 0.0, "hi": ctx.max_ratio, "tried": [ctx.floor_id] if ctx.meets(floor)
                else [], "ratios": {}}

    def step(self, ctx: SearchContext, state: dict[str, Any],
             step: int) -> tuple[dict[str, Any], bool]:
        state = dict(state)
        lo, hi = float(state["lo"]), float(state["hi"])
        mid = round((lo + hi) / 2, 4)
        widths = uniform_widths(ctx, mid)
        record = ctx.evaluate(widths, parent=ctx.baseline_id, kind="uniform", step=step,
                              note=f"uniform ratio {mid:g}")
        record = ctx.measure(record["id"])
        if ctx.meets(record):
            state["hi"] = mid
        else:  # too slow, too big, or infeasible on the device: prune more
            state["lo"] = mid
        state["tried"] = [*state["tried"], record["id"]]
        state["ratios"] = {**state["ratios"], record["id"]: mid}
        tolerance = float(ctx.settings.search.uniform_tolerance)
        return state, state["hi"] - state["lo"] <= tolerance

    def chosen(self, ctx: SearchContext, state: dict[str, Any]) -> str | None:
        return best_meeting(ctx, list(state["tried"]))
