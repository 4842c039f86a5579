"""Trade-off points: a few more candidates, after the search, so the report shows the curve.

A search that converges in one or two steps leaves the report with three points (the unpruned
model, the smallest allowed model, the chosen one), which says little about what relaxing or
tightening the budget would buy. Here ``tradeoff_points`` more latency levels are added, in
this order: a *safety point* ``noise_margin`` below the chosen model (the first fallback when the
chosen model misses the budget on its final re-measure — noise on a busy machine — and the
answer to "what would 15 % more speed cost?"), then levels spread geometrically between the
chosen model and the unpruned one (a looser budget) and between the safety point and the
smallest allowed model (a tighter one); levels that an already measured candidate sits within
10 % of are skipped. Each level gets widths from the knapsack allocation
against a roofline latency model fitted on every candidate measured so far (whatever the
strategy was), a short fine-tune and one device comparison, like any candidate, within the
fit's measurement cap. They do not replace the search's choice (a few tenths of a point of
short-fine-tune accuracy are noise, and the least pruning that meets the budget keeps the most
capacity for the final fine-tune); points under the budget are fallbacks if the choice misses
on its final re-measure.

One point per completed step: ``state["tradeoff"]`` holds the levels and the next index, so an
interrupted run resumes here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeprune.fit.candidates import Candidates
    from edgeprune.fit.search.knapsack import RooflineModel

NEAR = 0.10  # a level this close (relative) to a measured candidate's latency adds nothing


def levels(ctx: Candidates, state: dict[str, Any]) -> list[float]:
    """The latency levels (ms) to fill in, in the order they are made (see the module)."""
    n = int(ctx.settings.search.tradeoff_points)
    chosen_id = state.get("chosen_id")
    if n <= 0 or ctx.latency_budget_ms is None or chosen_id is None:
        return []
    base = ctx.latency(ctx.candidate(ctx.baseline_id))
    chosen = ctx.latency(ctx.candidate(chosen_id))
    if not base or not chosen or chosen >= base:
        return []
    floor_id = state.get("floor_id")
    floor_record = ctx.candidate(floor_id) if floor_id else None
    floor = ctx.latency(floor_record) if floor_record and floor_record.get("feasible") else None
    margin = float(ctx.settings.measure.noise_margin)
    safety = chosen * (1 - margin) if margin > 0 else None
    if safety is not None and floor is not None and safety <= floor * (1 + NEAR):
        safety = None  # no room between the chosen model and the smallest allowed one
    ordered = [safety] if safety is not None else []
    rest = n - len(ordered)
    low = safety or chosen
    room_below = floor is not None and floor * (1 + NEAR) < low
    up = rest if not room_below else (rest + 1) // 2
    down = rest - up
    above = [chosen * (base / chosen) ** (k / (up + 1)) for k in range(1, up + 1)]
    below = [low * (floor / low) ** (k / (down + 1)) for k in range(1, down + 1)] \
        if room_below and floor else []
    for pair in zip(above, below, strict=False):
        ordered += list(pair)
    longer = above if len(above) > len(below) else below
    ordered += longer[min(len(above), len(below)):]
    return [round(level, 6) for level in ordered[:n]]


def step(ctx: Candidates, state: dict[str, Any]) -> str:
    """Add the next trade-off point (or finish the phase); returns the progress message."""
    if "tradeoff" not in state:
        state["tradeoff"] = {"levels": levels(ctx, state), "next": 0, "ids": [],
                             "around": state.get("chosen_id")}
    plan = state["tradeoff"]
    index = int(plan["next"])
    if index >= len(plan["levels"]):
        state["phase"] = "final"
        return (f"{len(plan['ids'])} trade-off point{'s' if len(plan['ids']) != 1 else ''} "
                "added for the report" if plan["levels"] else "no trade-off points to add")
    level = float(plan["levels"][index])
    plan["next"] = index + 1
    label = f"trade-off point {index + 1}/{len(plan['levels'])} at {level:.3g} ms"

    def skip(reason: str) -> str:
        plan.setdefault("skipped", {})[str(index)] = reason
        return f"{label}: {reason}"

    nearest = _nearest_measured(ctx, state, level)
    if nearest is not None:
        return skip(f"{nearest} is already within {NEAR:.0%} of it, skipped")
    # keep room for the final checks twice over: the chosen model's and one fallback's
    needed = (2 if ctx.budgets.relative else 1) + ctx.reserve
    if not ctx.can_measure(needed):
        for rest in range(index + 1, len(plan["levels"])):
            plan.setdefault("skipped", {})[str(rest)] = "measurement budget spent"
        plan["next"] = len(plan["levels"])
        return skip("the measurement budget is spent, no more trade-off points")
    found = _new_widths(ctx, state, level)
    if found is None:
        return skip("the allocation near this level gives only widths already measured, "
                    "skipped")
    widths, expected = found
    record = ctx.evaluate(widths, parent=ctx.baseline_id, kind="tradeoff", step=state["step"],
                          note=f"trade-off point at {level:.3g} ms (expected {expected:.3g} ms)",
                          predicted_latency_ms=expected)
    record = ctx.measure(record["id"])
    plan["ids"] = [*plan["ids"], record["id"]]
    latency = ctx.latency(record)
    where = "infeasible" if not record.get("feasible") else \
        f"{latency:.3g} ms" if latency is not None else "not measured"
    return f"{label}: {record['id']} top-1 {100 * record['accuracy']:.2f}% at {where}"


def _new_widths(ctx: Candidates, state: dict[str, Any],
                level: float) -> tuple[dict[str, int], float] | None:
    """Widths allocated for ``level`` that no measured candidate has; with coarse channel
    multiples a few neighbouring levels are tried (their prediction stays within 15 %)."""
    from edgeprune.fit.search import allocate

    measured = [r["widths"] for r in state["candidates"] if r.get("measured")]
    model = _roofline(ctx, state)
    for factor in (1.0, 0.92, 1.08, 0.85, 1.15):
        widths, expected = allocate(ctx, model, level * factor)
        if widths not in measured and widths != dict(ctx.groups):
            return widths, expected
    return None


def _nearest_measured(ctx: Candidates, state: dict[str, Any], level: float) -> str | None:
    for record in state["candidates"]:
        latency = ctx.latency(record) if record.get("feasible") else None
        if latency and abs(latency / level - 1) <= NEAR:
            return str(record["id"])
    return None


def _roofline(ctx: Candidates, state: dict[str, Any]) -> RooflineModel:
    """The knapsack's latency model fitted (once) to every feasible measured candidate."""
    from edgeprune.fit.search import RooflineModel, measurement_weight
    from edgeprune.fit.search.knapsack import cost_table

    cost = cost_table(ctx)
    points = []
    for record in state["candidates"]:
        latency = ctx.latency(record) if record.get("feasible") else None
        if latency is not None:
            points.append((record["widths"], float(latency), measurement_weight(record)))
    return RooflineModel(cost, points)
