"""The end of a fit: long fine-tune, artifacts, the final re-measure that decides, best miss.

The chosen candidate was judged during the search on one or two short comparisons. Here its
final model (after the long fine-tune) is exported twice — ``model.onnx`` at batch 1, the
deployable artifact, and ``model-b<N>.onnx`` at the measured batch when N > 1 — and the latter is
measured again ``verify_pairs`` times beside the unpruned model (alternating the order). Those
numbers are the ones reported, and they decide: if they miss the budget, the next faster
candidate that met it during the search is tried once more. Finally the deployable is measured
at batch 1 beside the unpruned model at batch 1, so the report says what a user will see.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.fit.bench import INFEASIBLE, PairedComparison, geomean

if TYPE_CHECKING:
    from edgeprune.fit.candidates import Candidates

Record = dict[str, Any]


def finish(ctx: Candidates, state: dict[str, Any]) -> None:
    """Fill ``state["final"]`` and ``state["outcome"]``; write model/, model.onnx (+ -bN)."""
    tried: list[str] = []
    chosen_id = state.get("chosen_id")
    while True:
        if chosen_id is None:
            _best_miss(ctx, state, _miss_reason(ctx, state))
            return
        tried.append(chosen_id)
        outcome, final = _finish_chosen(ctx, state, chosen_id)
        if outcome["met"] or not final.get("latency_missed"):
            break
        record = ctx.candidate(chosen_id)
        record["meets_budget"] = False
        record["note"] += (f"; missed the budget on the final re-measure "
                           f"({final['verify'].get('latency_ms', 0):.3g} ms)")
        fallback = _faster_meeting(ctx, chosen_id, tried)
        if fallback is None or ctx.bench.left < 2 * ctx.settings.measure.verify_pairs + 2:
            break
        ctx.emit({"stage": "fit", "message": f"{chosen_id} missed the budget on the final "
                  f"re-measure; trying the next faster candidate {fallback}"})
        chosen_id = fallback
    state["best_id"] = chosen_id
    state["final"] = final
    state["outcome"] = outcome


def _finish_chosen(ctx: Candidates, state: dict[str, Any],
                   cid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from edgeprune.training.evaluate import evaluate

    tune, meas = ctx.settings.finetune, ctx.settings.measure
    baseline = ctx.candidate(ctx.baseline_id)
    model = ctx.model(cid)
    finetuned = cid != ctx.baseline_id
    if finetuned:
        ctx.emit({"stage": "fit", "message": f"final fine-tune of {cid}: "
                  f"{tune.final_epochs} epoch{'s' if tune.final_epochs != 1 else ''}"})
        ctx.finetune(model, tune.final_epochs, tune.final_batches)
    final_acc = evaluate(model, ctx.bundle.val).top1
    final = _write(ctx, state, cid, model, final_acc, finetuned)
    verify_path = ctx.run.path / (final["measured_artifact"])
    ctx.emit({"stage": "fit", "message": f"re-measuring the final model {cid} "
              f"({meas.verify_pairs}× beside the unpruned)" if ctx.budgets.relative
              else f"re-measuring the final model {cid}"})
    if cid == ctx.baseline_id and ctx.budgets.relative:
        verified: dict[str, Any] = {}  # the unpruned model is its own reference: ratio 1
    else:
        verified = verify(ctx, verify_path, cid, meas.verify_pairs)
    limit = ctx.latency_budget_ms
    if verified.get("latency_ms") and limit is not None and ctx.budgets.relative and \
            abs(verified["latency_ms"] / limit - 1) <= meas.noise_margin and \
            ctx.bench.left >= 4:
        extra = verify(ctx, verify_path, cid, 1)
        verified = _pool(verified, extra, float(state["baseline_ms"]))
    final["verify"] = verified
    if verified.get("error"):
        return {"met": False, "reason": f"the final model {cid} cannot run on the device: "
                f"{verified['error']}"}, final
    misses = _final_misses(ctx, verified, final["deployable_size_bytes"]) if verified else []
    pct = ctx.budgets.latency_percentile
    final["latency_missed"] = any(m.startswith(f"p{pct} ") for m in misses)
    if not final["latency_missed"]:  # else keep the measurements for a faster fallback
        final["deployable_measurement"] = _deployable(ctx, state, cid, final)
    drop = 100 * (baseline["accuracy"] - final_acc)
    allowed = ctx.budgets.max_accuracy_drop_points
    if misses:
        reason = f"the final re-measure of {cid} misses the budget: {'; '.join(misses)}"
        return {"met": False, "reason": reason}, final
    if allowed is not None and drop > allowed + 1e-9:
        before = 100 * baseline["accuracy"]
        return {"met": False, "reason": f"accuracy after the final fine-tune is "
                f"{100 * final_acc:.2f}%, {drop:.2f} points below the unpruned {before:.2f}% "
                f"(allowed: {allowed:g})"}, final
    return {"met": True, "reason": "every budget met"}, final


def _write(ctx: Candidates, state: dict[str, Any], cid: str, model: Any, accuracy: float,
           finetuned: bool) -> dict[str, Any]:
    """model/, model.onnx (batch 1) and model-b<N>.onnx (the measured batch, N > 1)."""
    from edgeprune.artifacts.files import size_on_disk
    from edgeprune.models import pruned_dir
    from edgeprune.pipeline.measuring import export_for_measuring

    run, settings = ctx.run, ctx.settings
    exporter = settings.output.exporter
    pruned_dir.save(model, run.path / "model", spec=ctx.spec, input_shape=ctx.input_shape,
                    history=ctx.history(cid),
                    force=True, extra={"fit": {"candidate": cid, "accuracy": accuracy}})
    deployable = run.path / "model.onnx"
    export_for_measuring(model, ctx.measure_input[:1], deployable, exporter=exporter)
    measured = deployable
    if ctx.measure_batch > 1:
        measured = run.path / f"model-b{ctx.measure_batch}.onnx"
        export_for_measuring(model, ctx.measure_input, measured, exporter=exporter)
    extra: dict[str, Any] = {}
    if settings.output.tflite:
        from edgeprune.artifacts.tflite import export_tflite

        tflite = run.path / "model.tflite"
        export_tflite(model, ctx.measure_input[:1], tflite, force=True)
        extra = {"tflite": tflite.name, "tflite_size_bytes": size_on_disk(tflite)}
    return {**extra, "candidate": cid, "accuracy": accuracy, "finetuned": finetuned,
            "epochs": settings.finetune.final_epochs if finetuned else 0,
            "deployable": deployable.name, "deployable_input_shape": [1, *ctx.input_shape[1:]],
            "deployable_size_bytes": size_on_disk(deployable),
            "measured_artifact": measured.name, "measure_batch": ctx.measure_batch,
            "onnx_input_shape": ctx.measure_input_shape(), "threads": state.get("threads")}


def _pool(a: dict[str, Any], b: dict[str, Any], base_ms: float) -> dict[str, Any]:
    """Two verify summaries as one (ratios pooled by geometric mean)."""
    if not b:
        return a
    ratios = [*a["pair_ratios"], *b["pair_ratios"]]
    ratio = geomean(ratios)
    pooled = dict(a)
    pooled.update(pair_ratios=ratios, latency_ratio=ratio, latency_ms=ratio * base_ms,
                  measurements=a["measurements"] + b["measurements"],
                  cv=max(a["cv"], b["cv"]), noisy=a["noisy"] or b["noisy"])
    return pooled


def _final_misses(ctx: Candidates, verified: dict[str, Any], size_bytes: int) -> list[str]:
    probe = {"id": "final", "measured": True, "feasible": True, **verified,
             "size_bytes": size_bytes}
    return ctx.misses(probe)


def _deployable(ctx: Candidates, state: dict[str, Any], cid: str,
                final: dict[str, Any]) -> dict[str, Any]:
    if ctx.measure_batch == 1:
        return {"note": "the measured artifact is the deployable (batch 1)"}
    ctx.emit({"stage": "fit", "message": "measuring the deployable model.onnx at batch 1 "
              "beside the unpruned model at batch 1"})
    return measure_deployable(ctx, ctx.run.path / final["deployable"], cid)


def verify(ctx: Candidates, path: Path, cid: str, pairs: int) -> dict[str, Any]:
    """Re-measure the final artifact ``pairs`` times (beside the unpruned model when the budget
    is relative, in alternating order); its numbers are the ones reported."""
    comparison = PairedComparison(ctx.budgets.latency_percentile)
    base, batch, relative = ctx.baseline_artifact(), ctx.measure_batch, ctx.budgets.relative
    try:
        for i in range(pairs):
            if ctx.bench.left < (2 if relative else 1):
                break
            if not relative:
                comparison.add_own(ctx.bench.run(path, cid=cid, role="final", batch=batch))
                continue
            order = ((base, "unpruned", ctx.baseline_id), (path, "final", cid))
            runs = {role: ctx.bench.run(p, cid=who, role=role, batch=batch)
                    for p, role, who in (order if i % 2 == 0 else order[::-1])}
            comparison.add_pair(runs["final"], runs["unpruned"])
    except INFEASIBLE as exc:
        return {"error": exc.one_line()}
    if not comparison.own:
        return {}
    return comparison.summary(float(ctx.state["baseline_ms"]))


def measure_deployable(ctx: Candidates, path: Path, cid: str) -> dict[str, Any]:
    """The batch-1 deployable beside the unpruned model at batch 1: what a user would see."""
    if ctx.bench.left < 2:
        return {}
    comparison = PairedComparison(ctx.budgets.latency_percentile)
    try:
        ref = ctx.bench.run(ctx.baseline_artifact(1), cid=ctx.baseline_id, role="unpruned-b1",
                            batch=1)
        own = ctx.bench.run(path, cid=cid, role="deployable-b1", batch=1)
    except INFEASIBLE as exc:
        return {"error": exc.one_line()}
    comparison.add_pair(own, ref)
    summary = comparison.summary(None)
    summary["latency_ratio"] = comparison.ratio()
    return summary


def _faster_meeting(ctx: Candidates, cid: str, tried: list[str]) -> str | None:
    """The most accurate candidate that met the budget in the search, faster than ``cid``."""
    latency = ctx.latency(ctx.candidate(cid)) or 0.0
    pool = [r for r in ctx.state["candidates"] if r["id"] not in tried and r.get("meets_budget")
            and (ctx.latency(r) or 0.0) < latency]
    if not pool:
        return None
    return str(max(pool, key=lambda r: (r["accuracy"], -(ctx.latency(r) or 0.0)))["id"])


def _best_miss(ctx: Candidates, state: dict[str, Any], reason: str) -> None:
    from edgeprune.training.evaluate import evaluate

    best = closest(ctx)
    state["best_id"] = best["id"] if best else None
    state["outcome"] = {"met": False, "reason": reason}
    if best is None:
        state["final"] = {"candidate": None, "accuracy": None, "finetuned": False, "epochs": 0}
        return
    model = ctx.model(best["id"])
    accuracy = best["accuracy"] if best["id"] != ctx.baseline_id else \
        evaluate(model, ctx.bundle.val).top1
    state["final"] = _write(ctx, state, best["id"], model, accuracy, False)


def closest(ctx: Candidates) -> Record | None:
    """The best miss: among runnable measured candidates whose worst budget excess is within
    the noise margin of the smallest excess, the most accurate (the fastest is often much less
    accurate and no nearer to the budget within what can be measured)."""
    runnable = [r for r in ctx.state["candidates"] if r.get("feasible") and r.get("measured")]
    if not runnable:
        return None

    def worst(record: Record) -> float:
        return max((value / limit for _name, value, limit in ctx.excess(record)), default=1.0)

    nearest = min(worst(r) for r in runnable)
    pool = [r for r in runnable if worst(r) <= nearest * (1 + ctx.settings.measure.noise_margin)]
    return max(pool, key=lambda r: (r["accuracy"], -worst(r)))


def _miss_reason(ctx: Candidates, state: dict[str, Any]) -> str:
    floor = ctx.candidate(state["floor_id"]) if state.get("floor_id") else None
    if floor is not None and floor.get("feasible") and not floor["meets_budget"]:
        return ("even the smallest allowed model (every group pruned by "
                f"{ctx.max_ratio:.0%}) misses the budget: {'; '.join(ctx.misses(floor))}")
    if state.get("search_end"):
        return f"no candidate met the budget before the {state['search_end']}"
    return "no candidate found by the search meets the budget"
