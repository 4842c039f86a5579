"""The fit loop: baseline → smallest allowed model → strategy steps → final fine-tune → report.

State is written to ``state.json`` after every completed step (baseline, floor check, each
strategy step, the final model) *before* progress is reported, so Ctrl-C at any point loses at
most the step in flight; running the same command again (or :func:`resume`) continues from the
last completed step. Seeds are fixed, so the continued run reaches the same candidates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.errors import BudgetNotMetError
from edgeprune.fit._rundir import RunDir
from edgeprune.fit._settings import FitSettings, ResolvedBudgets, resolve_budgets

Progress = Callable[[dict[str, Any]], None]


class FitBudgetNotMetError(BudgetNotMetError):
    """The budget cannot be met; ``result`` holds the run's outcome (report already written)."""

    def __init__(self, message: str, *, result: FitResult, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result


@dataclass(frozen=True)
class FitResult:
    """The outcome of a fit; ``report`` is the rendered report.json content."""

    out: Path
    met: bool
    reason: str
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "met": self.met, "reason": self.reason, **self.report}


def resume(out: str | Path, *, progress: Progress | None = None) -> FitResult:
    """Continue (or re-finish) the run in ``out`` with the settings it was started with."""
    run = RunDir(out)
    settings = FitSettings.from_dict(run.read_settings()["settings"])
    return fit(settings, out, progress=progress)


def fit(settings: FitSettings, out: str | Path, *, force: bool = False,
        progress: Progress | None = None) -> FitResult:
    """Fit ``settings.model`` to the target's budgets; see the module docstring.

    Raises :class:`FitBudgetNotMetError` (exit 3) when the budget cannot be met, after writing
    the best candidate and the full report.
    """
    from edgeprune.search import get_strategy

    started = time.monotonic()
    emit = progress or (lambda _e: None)
    strategy = get_strategy(settings.strategy)  # unknown names fail before any work
    run = RunDir(out)
    resumed = run.start(settings.to_dict(), force=force)
    state = (run.read_state() if resumed else None) or _fresh_state()
    if state.get("phase") == "done":
        return _finish_result(run, state)
    elapsed_before = float(state.get("elapsed_s", 0.0))
    if resumed:
        emit({"stage": "fit", "event": "resume", "step": state["step"],
              "message": f"resuming {out} after step {state['step']} ({state['phase']})"})
    ctx = _context(settings, run, state, emit)

    def save(event: str, message: str) -> None:
        state["elapsed_s"] = elapsed_before + time.monotonic() - started
        run.write_state(state)
        best = _best_so_far(ctx)
        emit({"stage": "fit", "event": event, "step": state["step"], "phase": state["phase"],
              "best": best, "elapsed_s": round(state["elapsed_s"], 1),
              "device_measurements": state["device_measurements"],
              "message": f"[{state['elapsed_s']:6.0f}s] step {state['step']}: {message}"
              + (f" | best {best}" if best else "")})

    if state["phase"] == "baseline":
        baseline = ctx.add_baseline()
        state["baseline_id"] = baseline["id"]
        ctx.measure(baseline["id"])
        base_ms = ctx.latency(baseline)
        state["latency_limit_ms"] = ctx.budgets.latency_limit_ms(base_ms)
        ctx.judge(baseline["id"])
        state["phase"] = "floor"
        save("baseline", f"unpruned: top-1 {100 * baseline['accuracy']:.2f}%, "
             f"{_lat(ctx, baseline)}; latency budget {_ms(state['latency_limit_ms'])}")
    if state["phase"] == "floor":
        _floor_step(ctx, state, strategy)
        save("floor", f"smallest allowed model: {_lat(ctx, ctx.candidate(ctx.floor_id))}")
    while state["phase"] == "search":
        state["step"] += 1
        state["strategy_state"], done = strategy.step(ctx, state["strategy_state"], state["step"])
        if done or state["step"] >= settings.max_steps:
            state["phase"] = "final"
            state["chosen_id"] = strategy.chosen(ctx, state["strategy_state"])
        save("step", f"{settings.strategy} step done")
    if state["phase"] == "final":
        _final(ctx, state)
        state["phase"] = "done"
        save("final", "final model written")
    return _finish_result(run, state)


def _fresh_state() -> dict[str, Any]:
    return {"phase": "baseline", "step": 0, "candidates": [], "device_measurements": 0,
            "cached_measurements": 0, "elapsed_s": 0.0}


def _context(settings: FitSettings, run: RunDir, state: dict[str, Any], emit: Progress) -> Any:
    from edgeprune.data import load_data
    from edgeprune.fit._candidates import Candidates
    from edgeprune.jobs import ModelSource, load_source
    from edgeprune.profiles import load_profile
    from edgeprune.targets import load_target

    target = load_target(settings.target)
    profile = load_profile(target.profile) if target.profile else None
    budgets = (ResolvedBudgets.from_dict(state["budgets"]) if "budgets" in state
               else resolve_budgets(settings, profile))
    state["budgets"] = budgets.to_dict()
    loaded = load_source(ModelSource(settings.model, settings.weights, settings.input_shape))
    bundle = load_data(settings.data, input_shape=tuple(loaded.input_shape[1:]),
                       batch_size=settings.batch_size, seed=settings.seed)
    state.setdefault("data", bundle.to_dict())
    return Candidates(settings, run, state, loaded.model, bundle, loaded.base_spec,
                      tuple(loaded.input_shape), target, profile, budgets, emit)


def _floor_step(ctx: Any, state: dict[str, Any], strategy: Any) -> None:
    """Measure the smallest allowed model: if even it misses the budget, stop here."""
    from edgeprune.search import uniform_widths

    baseline = ctx.candidate(ctx.baseline_id)
    if baseline["meets_budget"]:
        state.update(phase="final", chosen_id=baseline["id"], floor_id=baseline["id"])
        return
    floor = ctx.evaluate(uniform_widths(ctx, ctx.max_ratio), parent=ctx.baseline_id,
                         kind="floor", step=0,
                         note=f"smallest allowed model (uniform ratio {ctx.max_ratio:g})")
    state["floor_id"] = floor["id"]
    floor = ctx.measure(floor["id"])
    if floor["feasible"] and not floor["meets_budget"]:
        state.update(phase="final", chosen_id=None)
        return
    state["strategy_state"] = strategy.start(ctx)
    state["phase"] = "search"


def _final(ctx: Any, state: dict[str, Any]) -> None:
    """Long fine-tune of the chosen model (or save the best miss), then the accuracy floor."""
    from edgeprune import saving
    from edgeprune.evaluate import evaluate
    from edgeprune.export import export_onnx

    run, settings = ctx.run, ctx.settings
    chosen_id = state.get("chosen_id")
    baseline = ctx.candidate(ctx.baseline_id)
    outcome: dict[str, Any] = {"met": False, "reason": ""}
    if chosen_id is None:
        best = _closest(ctx)
        outcome["reason"] = _miss_reason(ctx, state)
        state["best_id"] = best["id"] if best else None
        model = ctx.model(best["id"]) if best else None
        final_acc = best["accuracy"] if best else None
        finetuned = False
    else:
        state["best_id"] = chosen_id
        model = ctx.model(chosen_id)
        finetuned = chosen_id != ctx.baseline_id
        if finetuned:
            ctx.emit({"stage": "fit", "message": f"final fine-tune of {chosen_id}: "
                      f"{settings.final_epochs} epochs"})
            ctx._finetune(model, settings.final_epochs, settings.final_batches)
        final_acc = evaluate(model, ctx.bundle.val).top1
        drop = 100 * (baseline["accuracy"] - final_acc)
        allowed = ctx.budgets.max_accuracy_drop_points
        if allowed is not None and drop > allowed + 1e-9:
            before = 100 * baseline["accuracy"]
            outcome["reason"] = (f"accuracy after the final fine-tune is {100 * final_acc:.2f}%, "
                                 f"{drop:.2f} points below the unpruned {before:.2f}% "
                                 f"(allowed: {allowed:g})")
        else:
            outcome = {"met": True, "reason": "every budget met"}
    if model is not None:
        saving.save(model, run.path / "model", spec=ctx.spec, input_shape=ctx.input_shape,
                    force=True, extra={"fit": {"candidate": state["best_id"],
                                               "accuracy": final_acc}})
        export_onnx(model, ctx.measure_input, run.path / "model.onnx",
                    exporter=settings.exporter, force=True)
    state["final"] = {"candidate": state.get("best_id"), "accuracy": final_acc,
                      "finetuned": finetuned, "epochs": settings.final_epochs if finetuned else 0,
                      "onnx_input_shape": ctx.measure_input_shape()}
    state["outcome"] = outcome


def _closest(ctx: Any) -> dict[str, Any] | None:
    """The runnable measured candidate with the lowest latency: the best miss."""
    runnable = [r for r in ctx.state["candidates"] if r.get("feasible")]
    if not runnable:
        return None
    return min(runnable, key=lambda r: (ctx.latency(r) or 0.0, -r["accuracy"]))


def _miss_reason(ctx: Any, state: dict[str, Any]) -> str:
    floor = ctx.candidate(state["floor_id"]) if state.get("floor_id") else None
    if floor is not None and floor.get("feasible") and not floor["meets_budget"]:
        return ("even the smallest allowed model (every group pruned by "
                f"{ctx.max_ratio:.0%}) misses the budget: {'; '.join(ctx.misses(floor))}")
    return "no candidate found by the search meets the budget"


def _best_so_far(ctx: Any) -> str:
    meeting = [r for r in ctx.state["candidates"] if r.get("meets_budget")]
    if not meeting:
        return ""
    best = max(meeting, key=lambda r: r["accuracy"])
    return f"{best['id']} top-1 {100 * best['accuracy']:.2f}% at {_lat(ctx, best)}"


def _lat(ctx: Any, record: dict[str, Any]) -> str:
    if not record.get("feasible"):
        return "infeasible" if record.get("measured") else "not measured"
    return f"p{ctx.budgets.latency_percentile} {_ms(ctx.latency(record))}"


def _ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g} ms"


def _finish_result(run: RunDir, state: dict[str, Any]) -> FitResult:
    from edgeprune.report import render_run

    report = render_run(run.path)
    outcome = state.get("outcome", {})
    result = FitResult(out=run.path, met=bool(outcome.get("met")),
                       reason=str(outcome.get("reason", "")), report=report)
    if not result.met:
        raise FitBudgetNotMetError(f"budget cannot be met: {result.reason}", result=result,
                                   hint=f"the best candidate and the report are in {run.path}")
    return result
