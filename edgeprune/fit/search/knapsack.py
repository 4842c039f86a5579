"""The ``knapsack`` fit strategy: allocate widths against a measured roofline latency model.

MACs are a poor guide to latency where layers are memory-bound (MobileNetV2's depthwise and
narrow high-resolution 1×1 layers on a CPU): cutting them saves far less time than their MACs
promise, while other layers speed up in step with theirs. This strategy models the device as

    latency ≈ a · MACs(widths) + b · elements moved(widths) + c

with MACs and elements (activations read and written plus weights, per conv/linear layer)
computed *exactly* for any widths from the unpruned model's layer table
(:mod:`edgeprune.fit.layers`, :meth:`Cost.features`), and ``a, b, c`` fitted (non-negative
weighted least squares) to the device's own measurements: the unpruned model and the smallest
allowed model to start, then every candidate. The fit tells how compute- or memory-bound this
model is on this device.

Each step allocates widths greedily, HALP-style (a knapsack over channel groups): repeatedly
take the chunk of channels, from any group, that gives up the least per millisecond the model
says it saves — its MACs, weighted by how important its channels are within their group (the
fit's criterion; :func:`allocate`) — until the predicted latency reaches
the target; then prune to those widths, fine-tune briefly and measure on the device (one
comparison per step). The measurement refits the model, and what the global fit cannot absorb
is corrected by the last candidate's measured/predicted ratio; the next step aims again at half
the ``noise_margin`` below the budget, so a few steps converge on the least pruning that meets
the budget clear of the measurement noise (the final re-measure should hold). Keeping the most
capacity at the latency is the point: it is what the fine-tune recovers accuracy with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgeprune.errors import UsageError
from edgeprune.fit.search.base import (
    SearchContext,
    Widths,
    best_meeting,
    get_strategy,
    margin,
    measurement_weight,
    register_strategy,
)

__all__ = ["ALIGN", "X86_ALIGN", "AutoStrategy", "Cost", "KnapsackStrategy", "RooflineModel",
           "allocate", "channel_align", "cost_table"]


class Cost:
    """MACs and elements moved of a model at any widths, from its unpruned layer table."""

    def __init__(self, groups: Mapping[str, int], layers: Sequence[Mapping[str, Any]],
                 batch: int = 1) -> None:
        self.groups = dict(groups)
        self.layers = [dict(layer) for layer in layers]
        self.batch = max(int(batch), 1)  # weights are read once a run, activations per input
        self.full = self.features(self.groups)

    def features(self, widths: Mapping[str, int]) -> tuple[float, float]:
        """(MACs, elements read and written) per input at ``widths``."""
        removed = {g: 1 - widths[g] / n for g, n in self.groups.items()}
        macs = moved = 0.0
        for layer in self.layers:
            k_in = max(0.0, 1 - sum(f * removed.get(g, 0.0) for g, f in layer["cut_in"].items()))
            k_out = max(0.0, 1 - sum(f * removed.get(g, 0.0)
                                     for g, f in layer["cut_out"].items()))
            if layer["depthwise"]:  # one filter per channel: in and out channels go together
                k = min(k_in, k_out) if layer["cut_in"] and layer["cut_out"] else k_in * k_out
                macs += layer["macs"] * k
                moved += (layer["in_elems"] + layer["out_elems"]
                          + layer["weights"] / self.batch) * k
            else:
                macs += layer["macs"] * k_in * k_out
                moved += (layer["in_elems"] * k_in + layer["out_elems"] * k_out
                          + layer["weights"] / self.batch * k_in * k_out)
        return macs, moved

    def relative(self, widths: Mapping[str, int]) -> tuple[float, float]:
        """(MACs, elements) as fractions of the unpruned model's."""
        macs, moved = self.features(widths)
        return macs / (self.full[0] or 1.0), moved / (self.full[1] or 1.0)


class RooflineModel:
    """latency = a·m + b·e + c, m and e the MACs and elements relative to the unpruned model.

    Fitted by weighted least squares over every subset of the three terms, keeping the best fit
    whose coefficients are all non-negative; the intercept joins only from four points on (with
    two or three, a constant would fit any pair of points exactly and explain nothing).
    """

    def __init__(self, cost: Cost, points: Sequence[tuple[Mapping[str, int], float, float]] = ()
                 ) -> None:
        self.cost = cost
        self.points = [(dict(w), float(y), float(wt)) for w, y, wt in points]
        self.coef = (1.0, 0.0, 0.0)
        self._fit()

    def add(self, widths: Mapping[str, int], latency_ms: float, weight: float = 1.0) -> None:
        self.points.append((dict(widths), float(latency_ms), float(weight)))
        self._fit()

    def _fit(self) -> None:
        import itertools

        import numpy as np

        if not self.points:
            return
        rows = [(*self.cost.relative(w), 1.0) for w, _, _ in self.points]
        x = np.array(rows, dtype=float)
        y = np.array([lat for _, lat, _ in self.points], dtype=float)
        sw = np.sqrt(np.array([wt for _, _, wt in self.points], dtype=float))
        terms = (0, 1, 2) if len(self.points) >= 4 else (0, 1)
        best: tuple[float, tuple[float, float, float]] | None = None
        for size in range(1, len(terms) + 1):
            for subset in itertools.combinations(terms, size):
                cols = list(subset)
                sol, *_ = np.linalg.lstsq(x[:, cols] * sw[:, None], y * sw, rcond=None)
                if (sol < 0).any():
                    continue
                coef = [0.0, 0.0, 0.0]
                for col, value in zip(cols, sol, strict=True):
                    coef[col] = float(value)
                residual = float((((x @ np.array(coef)) - y) * sw) ** 2 @ np.ones(len(y)))
                # prefer fewer terms unless more explain clearly more (1 % of the variance)
                score = residual * (1 + 0.01 * size)
                if best is None or score < best[0] - 1e-12:
                    best = (score, (coef[0], coef[1], coef[2]))
        if best is not None:
            self.coef = best[1]

    def predict(self, widths: Mapping[str, int]) -> float:
        m, e = self.cost.relative(widths)
        a, b, c = self.coef
        return a * m + b * e + c

    def to_dict(self) -> dict[str, Any]:
        a, b, c = self.coef
        return {"coef": {"macs": a, "elements": b, "constant": c},
                "points": [[w, y, wt] for w, y, wt in self.points]}

    @classmethod
    def from_dict(cls, cost: Cost, data: Mapping[str, Any]) -> RooflineModel:
        return cls(cost, [(p[0], float(p[1]), float(p[2])) for p in data["points"]])


def allocate(ctx: SearchContext, model: RooflineModel, target_ms: float,
             chunks: int = 16) -> tuple[Widths, float]:
    """Greedy knapsack: remove the chunk of channels with the lowest price per predicted
    millisecond saved, from any group, until the prediction reaches ``target_ms`` (or nothing is
    left to remove). Chunks are about 1/``chunks`` of a group, whole multiples of
    :func:`channel_align` (or of ``round_to`` if larger) channels.

    A chunk's price is the MACs it takes away (the capacity fine-tuning works with) weighted by
    the mean importance of its channels relative to their group's mean (scores from
    ``ctx.channel_scores()``, equal for a group it has none for). Pruning takes a group's
    lowest-scoring channels first, so its first chunks are cheap and each further chunk costs
    more: a group is not thinned to a sliver unless that buys a lot of latency. (An additive
    "share of the group's importance" term, every group counting equally, was tried: it spread
    the cuts like uniform pruning and on MobileNetV2 kept fewer MACs at 2× than uniform did.)
    """
    widths: Widths = dict(ctx.groups)
    predicted = model.predict(widths)
    round_to = max(int(ctx.settings.search.round_to), 1)
    found = ctx.channel_scores()
    scores = {root: list(found.get(root) or [1.0] * n) for root, n in ctx.groups.items()}
    macs_full = model.cost.full[0] or 1.0
    while predicted > target_ms:
        macs_now = model.cost.features(widths)[0]
        best: tuple[float, Widths, float] | None = None
        for root, original in ctx.groups.items():
            kept = _next_width(ctx, root, widths[root], original, round_to, chunks)
            if kept is None:
                continue
            trial = {**widths, root: kept}
            saved = predicted - model.predict(trial)
            if saved <= 1e-9:
                continue
            lost = max(macs_now - model.cost.features(trial)[0], 0.0) / macs_full
            ranked = scores[root]  # ascending: pruning removes from the front
            chunk = ranked[original - widths[root]:original - kept]
            weight = sum(chunk) / len(chunk) if chunk else 1.0
            price = lost * max(weight, 1e-3) / saved
            if best is None or price < best[0]:
                best = (price, trial, predicted - saved)
        if best is None:
            break
        _, widths, predicted = best
    return widths, predicted


# widths the strategy proposes are multiples of this many channels (where the group is at least
# twice as wide): CPU kernels work on 8-float vectors (AVX2; NEON on 4 or 8) and blocks of them,
# and a width just off a multiple can run slower than the unpruned model (docs/fit.md). On x86
# onnxruntime's blocked convolutions use blocks of 16 channels (AVX-512): 56 channels measured
# slower than 48 there, so x86 devices get X86_ALIGN.
ALIGN = 8
X86_ALIGN = 16


def channel_align(ctx: SearchContext) -> int:
    """The channel multiple for the device the fit measures on (its reported machine)."""
    device = ctx.state.get("device") or {}
    machine = str(device.get("machine") or "").lower()
    return X86_ALIGN if machine in ("x86_64", "amd64", "x64") else ALIGN


def _next_width(ctx: SearchContext, root: str, width: int, original: int, round_to: int,
                chunks: int) -> int | None:
    """The next narrower width of a group a step of the allocation may take, or None."""
    device_align = channel_align(ctx)
    align = max(round_to, device_align if original >= 2 * device_align else 1)
    step = max(align, (original // chunks) // align * align)
    low = ctx.min_width(root)
    kept = (width - step) // align * align if align > 1 else width - step
    kept = ctx.round_width(root, kept) if kept > 0 else 0
    if kept >= width or kept < low:
        return None
    return kept


def cost_table(ctx: SearchContext) -> Cost:
    """The fit's model as a :class:`Cost` table, weights read once per measured batch."""
    return Cost(ctx.groups, ctx.layer_costs(), ctx.measure_batch)


@register_strategy("knapsack")
class KnapsackStrategy:
    """Widths allocated against a roofline latency model fitted on the device; see the module."""

    name = "knapsack"

    def start(self, ctx: SearchContext) -> dict[str, Any]:
        if ctx.latency_budget_ms is None:
            raise UsageError("the knapsack strategy needs a latency budget",
                             hint="pass --latency-ms or --speedup, or use --strategy uniform")
        cost = cost_table(ctx)
        model = RooflineModel(cost)
        for cid in (ctx.baseline_id, ctx.floor_id):
            record = ctx.candidate(cid)
            latency = ctx.latency(record)
            if latency is not None and record.get("feasible", True):
                model.add(record["widths"], latency, measurement_weight(record))
        if not model.points:
            raise UsageError("the unpruned model could not be measured, so the knapsack "
                             "strategy has no anchor", hint="use --strategy uniform")
        budget = float(ctx.latency_budget_ms)
        return {"model": model.to_dict(), "aim_ms": budget * (1 - margin(ctx) / 2),
                "tried": [ctx.floor_id] if ctx.meets(ctx.candidate(ctx.floor_id)) else []}

    def step(self, ctx: SearchContext, state: dict[str, Any],
             step: int) -> tuple[dict[str, Any], bool]:
        state = dict(state)
        cost = cost_table(ctx)
        model = RooflineModel.from_dict(cost, state["model"])
        budget = float(ctx.latency_budget_ms or 0.0)
        goal = float(state["aim_ms"])
        # the model's prediction near the last candidate is off by this factor (measured /
        # predicted after the refit): what the global fit cannot absorb, corrected locally
        correction = float(state.get("correction", 1.0))
        tried = {tuple(sorted(ctx.candidate(c)["widths"].items())): c for c in state["tried"]}
        for _ in range(8):  # the model may settle on a measured candidate: nudge the aim
            widths, predicted = allocate(ctx, model, goal / correction)
            again = tried.get(tuple(sorted(widths.items())))
            if again is None:
                break
            goal *= 1.04 if ctx.meets(ctx.candidate(again)) else 0.96
            if goal > budget:
                return state, True  # the least pruning that meets the budget is measured
        else:
            return state, True
        if widths == dict(ctx.groups):
            return state, True
        expected = predicted * correction
        m, _ = cost.relative(widths)
        record = ctx.evaluate(widths, parent=ctx.baseline_id, kind="knapsack", step=step,
                              note=f"knapsack to {goal:.3g} ms (expected {expected:.3g} ms, "
                              f"{100 * m:.0f}% of the MACs)", predicted_latency_ms=expected)
        record = ctx.measure(record["id"])
        state["tried"] = [*state["tried"], record["id"]]
        latency = ctx.latency(record)
        if not record.get("feasible", True) or latency is None:
            state["aim_ms"] = goal * 0.9  # the device could not run it: aim at a smaller model
            return state, False
        model.add(widths, float(latency), measurement_weight(record))
        state["model"] = model.to_dict()
        state["correction"] = min(2.0, max(0.5, float(latency) / max(model.predict(widths),
                                                                      1e-9)))
        # done when met near the budget (within 60 % of the noise margin below it: little
        # capacity left on the table), or when meeting it again gains under 2 % of the MACs
        # over the best met so far; else aim again (a miss or a long way under both teach
        # the model). Met candidates further below stay as fallbacks for the final re-measure.
        noise = margin(ctx)
        state["aim_ms"] = budget * (1 - noise / 2)
        if not ctx.meets(record):
            return state, False
        best_m = float(state.get("best_met_macs", 0.0))
        state["best_met_macs"] = max(best_m, m)
        near = latency >= budget * (1 - 0.6 * noise)
        return state, bool(near or m - best_m < 0.02)

    def chosen(self, ctx: SearchContext, state: dict[str, Any]) -> str | None:
        return best_meeting(ctx, list(state["tried"]))


@register_strategy("auto")
class AutoStrategy:
    """The default: ``knapsack`` when there is a latency budget, else ``uniform`` (a fit to a
    size or memory budget alone has no latency to model)."""

    name = "auto"

    def start(self, ctx: SearchContext) -> dict[str, Any]:
        inner = "knapsack" if ctx.latency_budget_ms is not None else "uniform"
        return {"inner": inner, "state": get_strategy(inner).start(ctx)}

    def step(self, ctx: SearchContext, state: dict[str, Any],
             step: int) -> tuple[dict[str, Any], bool]:
        inner, done = get_strategy(state["inner"]).step(ctx, state["state"], step)
        return {"inner": state["inner"], "state": inner}, done

    def chosen(self, ctx: SearchContext, state: dict[str, Any]) -> str | None:
        return get_strategy(state["inner"]).chosen(ctx, state["state"])
