"""The ``netadapt`` fit strategy: NetAdapt steps guided by a per-group latency model.

Each step proposes one candidate per channel group that the *model* (:class:`LatencyModel`, a
HALP-like look-up of "ms saved per fraction of a group removed") predicts reaches the step's
latency target, fine-tunes the ``netadapt_proposals`` that remove the smallest fraction of their
group briefly, and measures only the most accurate on the device — one comparison per step
instead of one per group. Every measurement refits the model, so when the prediction is wrong
the next proposals are better.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeprune.errors import UsageError
from edgeprune.fit.search.base import (
    SearchContext,
    Widths,
    best_meeting,
    margin,
    measurement_weight,
    register_strategy,
)

__all__ = ["MAX_STALLS", "LatencyModel", "NetAdaptStrategy"]


class LatencyModel:
    """Predicted latency = base − Σ_g slope_g × (fraction of group g's channels removed).

    The slopes start from a MAC prior (a group whose removal saves 30 % of the MACs is assumed to
    save 30 % of the measured latency) and are refitted on every device measurement in two
    stages. First one scale for the whole prior (``scale``): on MobileNetV2 latency follows MACs
    only loosely — depthwise layers are memory-bound — and a single measurement already says by
    how much every prediction is off. Then per-group corrections by weighted ridge regression
    towards the scaled prior: with few (or noisy) measurements the prior dominates, with more the
    device does. Each point carries a weight (1 for a steady measurement, less for
    a noisy one: :func:`measurement_weight`). Interactions between groups (a conv's cost depends
    on its input *and* output widths) are what the refit absorbs; predictions are always anchored
    on a measured model.
    """

    def __init__(self, groups: Mapping[str, int], base_ms: float, prior: Mapping[str, float],
                 points: list[tuple[Mapping[str, int], float, float]] | None = None,
                 ridge: float = 0.05) -> None:
        self.groups = dict(groups)
        self.base_ms = base_ms
        self.prior = dict(prior)
        self.points: list[tuple[dict[str, int], float, float]] = [
            (dict(w), float(y), float(wt)) for w, y, wt in points or []]
        self.ridge = ridge
        self.slopes = dict(prior)
        self.scale = 1.0
        self._fit()

    def _x(self, widths: Mapping[str, int]) -> list[float]:
        return [1 - widths[g] / n for g, n in self.groups.items()]

    def add(self, widths: Mapping[str, int], latency_ms: float, weight: float = 1.0) -> None:
        self.points.append((dict(widths), float(latency_ms), float(weight)))
        self._fit()

    def _fit(self) -> None:
        if not self.points:
            return
        import numpy as np

        names = list(self.groups)
        x = np.array([self._x(w) for w, _, _ in self.points], dtype=float)
        y = np.array([self.base_ms - lat for _, lat, _ in self.points], dtype=float)
        wt = np.array([wt for _, _, wt in self.points], dtype=float)
        prior = np.array([self.prior[g] for g in names], dtype=float)
        guess = x @ prior  # what the prior predicts each point saves
        denom = float((wt * guess * guess).sum())
        if denom > 1e-12:
            self.scale = float(np.clip((wt * guess * y).sum() / denom, 0.05, 5.0))
        prior = self.scale * prior
        lam = self.ridge * max(float(wt.sum()), 1e-6)
        a = (x.T * wt) @ x + lam * np.eye(len(names))
        b = (x.T * wt) @ y + lam * prior
        slopes = np.clip(np.linalg.solve(a, b), 0.0, None)
        self.slopes = {g: float(s) for g, s in zip(names, slopes, strict=True)}

    def predict(self, widths: Mapping[str, int]) -> float:
        return self.base_ms - sum(s * x for s, x in
                                  zip(self.slopes.values(), self._x(widths), strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {"base_ms": self.base_ms, "prior": self.prior, "slopes": self.slopes,
                "scale": self.scale, "ridge": self.ridge,
                "points": [[w, y, wt] for w, y, wt in self.points]}

    @classmethod
    def from_dict(cls, groups: Mapping[str, int], data: Mapping[str, Any]) -> LatencyModel:
        points = [(p[0], float(p[1]), float(p[2]) if len(p) > 2 else 1.0)
                  for p in data["points"]]
        return cls(groups, float(data["base_ms"]), data["prior"], points, float(data["ridge"]))


def _mac_prior(ctx: SearchContext, base_ms: float) -> dict[str, float]:
    """ms saved per unit fraction of each group removed, if latency followed MACs."""
    # first order from the groups' members, without pruning anything
    return {root: base_ms * slope for root, slope in ctx.mac_slopes().items()
            if root in ctx.groups}


# --- netadapt ----------------------------------------------------------------------------------

MAX_STALLS = 3  # steps in a row that did not make the model faster before netadapt gives up


@register_strategy("netadapt")
class NetAdaptStrategy:
    """NetAdapt steps, proposals from a latency model, one device measurement per step."""

    name = "netadapt"

    def start(self, ctx: SearchContext) -> dict[str, Any]:
        if ctx.latency_budget_ms is None:
            raise UsageError("the netadapt strategy needs a latency budget",
                             hint="pass --latency-ms or --speedup, or use --strategy uniform")
        base = ctx.candidate(ctx.baseline_id)
        base_ms = ctx.latency(base)
        if base_ms is None:
            raise UsageError("the unpruned model could not be measured, so netadapt has no "
                             "anchor", hint="use --strategy uniform")
        # the smallest allowed model is left out: with every group cut by 90 % it lies far
        # outside where a latency linear in each group's cut holds (a layer whose input and
        # output both shrink saves less than the two cuts added), and it would set the scale
        model = LatencyModel(ctx.groups, base_ms, _mac_prior(ctx, base_ms))
        model.add(base["widths"], base_ms)
        return {"current": ctx.baseline_id, "stall": 0, "model": model.to_dict(),
                "accepted": [ctx.baseline_id]}

    def step(self, ctx: SearchContext, state: dict[str, Any],
             step: int) -> tuple[dict[str, Any], bool]:
        state = dict(state)
        model = LatencyModel.from_dict(ctx.groups, state["model"])
        current = ctx.candidate(state["current"])
        current_ms = float(ctx.latency(current) or model.predict(current["widths"]))
        budget = float(ctx.latency_budget_ms or 0.0)
        # a step that did not make the model faster doubles the next step's cut: widths just
        # below a SIMD-friendly count often run *slower*, and a bigger cut jumps past them
        step_cut = float(ctx.settings.search.netadapt_step)
        reduce_by = step_cut * model.base_ms * 2 ** int(state["stall"])
        target = max(budget, current_ms - reduce_by)
        if ctx.meets(current):  # met, but within the noise margin: one step clear of it
            target = min(current_ms - reduce_by, budget * (1 - margin(ctx)))
        proposals = self._propose(ctx, model, current["widths"], current_ms, target)
        if not proposals:
            return state, True
        # with many groups, fine-tune only the proposals that remove the smallest fraction of
        # their group (the likeliest to keep accuracy): a step costs K short fine-tunes, not one
        # per group (MobileNetV2 has 25)
        keep = int(ctx.settings.search.netadapt_proposals)
        if keep and len(proposals) > keep:
            widths = current["widths"]
            proposals = sorted(proposals, key=lambda p: 1 - p[1][p[0]] / widths[p[0]])[:keep]
        records = [ctx.evaluate(w, parent=state["current"], kind="netadapt", step=step,
                                note=f"step {step}: {root} {current['widths'][root]}→{w[root]} "
                                f"(target {target:.3g} ms)", predicted_latency_ms=pred)
                   for root, w, pred in proposals]
        measured = None
        for record in sorted(records, key=lambda r: -r["accuracy"]):
            record = ctx.measure(record["id"])
            if record.get("feasible"):
                measured = record
                break
        if measured is None:  # every proposal infeasible on the device
            state["stall"] = int(state["stall"]) + 1
            return state, state["stall"] >= MAX_STALLS
        latency = float(ctx.latency(measured) or 0.0)
        if all(w != measured["widths"] for w, _, _ in model.points):
            model.add(measured["widths"], latency, measurement_weight(measured))
        state["model"] = model.to_dict()
        if latency < current_ms:
            state["current"] = measured["id"]
            state["accepted"] = [*state["accepted"], measured["id"]]
            state["stall"] = 0
        else:  # the model was wrong: refitted above; try again from the same model
            state["stall"] = int(state["stall"]) + 1
        return state, self._done(ctx, state)

    def _done(self, ctx: SearchContext, state: dict[str, Any]) -> bool:
        """Met with room to spare, or met near the budget with a clearly faster model accepted
        as a fallback for the final re-measure, or stuck."""
        if state["stall"] >= MAX_STALLS:
            return True
        if not ctx.meets(ctx.candidate(state["current"])):
            return False
        budget = float(ctx.latency_budget_ms or 0.0)
        clear = budget * (1 - margin(ctx))
        return any(ctx.meets(r) and (ctx.latency(r) or 0.0) <= clear
                   for r in (ctx.candidate(c) for c in state["accepted"]))

    def _propose(self, ctx: SearchContext, model: LatencyModel, widths: Widths,
                 current_ms: float, target: float) -> list[tuple[str, Widths, float]]:
        """Per group: the least pruning predicted to reach ``target``, else its maximum."""
        anchor = model.predict(widths)
        proposals: list[tuple[str, Widths, float]] = []
        fallback: list[tuple[str, Widths, float]] = []
        round_to = max(int(ctx.settings.search.round_to), 1)
        for root, width in widths.items():
            low = ctx.min_width(root)
            kept = width
            while kept - round_to >= low:
                kept -= round_to
                trial = {**widths, root: ctx.round_width(root, kept)}
                if trial[root] >= width:
                    continue
                predicted = current_ms + model.predict(trial) - anchor
                if predicted <= target:
                    proposals.append((root, trial, predicted))
                    break
            else:
                if kept < width:
                    trial = {**widths, root: kept}
                    fallback.append((root, trial, current_ms + model.predict(trial) - anchor))
        return proposals or fallback

    def chosen(self, ctx: SearchContext, state: dict[str, Any]) -> str | None:
        return best_meeting(ctx, list(state["accepted"]))
