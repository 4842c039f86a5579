"""The fit loop: baseline → smallest allowed model → strategy steps → trade-off points → final
fine-tune → report.

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
from typing import TYPE_CHECKING, Any

from edgeprune._signals import raise_if_interrupted
from edgeprune.errors import FitBudgetNotMetError
from edgeprune.fit.bench import MeasureFn
from edgeprune.fit.budgets import ResolvedBudgets, resolve_budgets
from edgeprune.fit.rundir import RunDir
from edgeprune.fit.settings import FitSettings

if TYPE_CHECKING:
    from edgeprune.fit.candidates import Candidates
    from edgeprune.fit.search import SearchContext, Strategy

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class FitResult:
    """The outcome of a fit; ``report`` is the rendered report.json content."""

    out: Path
    met: bool
    reason: str
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "met": self.met, "reason": self.reason, **self.report}


def resume(out: str | Path, *, progress: Progress | None = None,
           measure: MeasureFn | None = None) -> FitResult:
    """Continue (or re-finish) the run in ``out`` with the settings it was started with."""
    run = RunDir(out)
    settings = FitSettings.from_dict(run.read_settings()["settings"],
                                     source=str(run.settings_file))
    return fit(settings, out, progress=progress, measure=measure)


def fit(settings: FitSettings, out: str | Path, *, force: bool = False,
        progress: Progress | None = None, measure: MeasureFn | None = None) -> FitResult:
    """Fit ``settings.source.model`` to the target's budgets; see the module docstring.

    ``progress`` receives events (``{"stage": "fit" | "candidate" | "measure", "message": ...}``;
    nothing is printed). ``measure`` replaces :func:`edgeprune.pipeline.measuring.measure` for every
    device measurement (same signature; tests inject faults with it).

    Raises :class:`FitBudgetNotMetError` (exit 3) when the budget cannot be met, after writing
    the best candidate and the full report.
    """
    from edgeprune.fit.search import get_strategy

    started = time.monotonic()
    emit = progress or (lambda _e: None)
    strategy = get_strategy(settings.search.strategy)  # unknown names fail before any work
    if settings.output.tflite:
        _require_tflite_converter()
    from edgeprune._io import refuse_overlap
    from edgeprune.data import input_paths

    source = settings.source
    refuse_overlap(out, (source.model, source.weights, *input_paths(source.data)),
                   what="run directory")
    run = RunDir(out)
    resumed = run.start(settings.to_dict(), force=force,
                        normalize=lambda stored: FitSettings.from_dict(
                            stored, source=str(run.settings_file)).to_dict())
    state = (run.read_state() if resumed else None) or _fresh_state()
    if state.get("phase") == "done":
        emit({"stage": "fit", "event": "finished-earlier",
              "message": f"{out} holds this run, finished earlier: showing its result "
              "(--force starts over)"})
        return _finish_result(run, state)
    elapsed_before = float(state.get("elapsed_s", 0.0))
    if resumed:
        emit({"stage": "fit", "event": "resume", "step": state["step"],
              "message": f"resuming {out} after step {state['step']} ({state['phase']})"})
    ctx = _context(settings, run, state, emit, measure)

    def save(event: str, message: str) -> None:
        state["elapsed_s"] = elapsed_before + time.monotonic() - started
        state["device_measurements"] = ctx.bench.used
        run.write_state(state)
        raise_if_interrupted()  # after the step is saved: resume continues from here
        best = _best_so_far(ctx)
        emit({"stage": "fit", "event": event, "step": state["step"], "phase": state["phase"],
              "best": best, "elapsed_s": round(state["elapsed_s"], 1),
              "device_measurements": state["device_measurements"],
              "message": f"[{state['elapsed_s']:6.0f}s] step {state['step']}: {message}"
              + (f" | most accurate within the device budget: {best}" if best else "")
              + f" | {state['device_measurements']}/{ctx.bench.cap} measurements"})

    if state["phase"] == "baseline":
        baseline = ctx.add_baseline()
        state["baseline_id"] = baseline["id"]
        ctx.measure(baseline["id"])
        state["latency_limit_ms"] = ctx.budgets.latency_limit_ms(state["baseline_ms"])
        ctx.judge(baseline["id"])
        state["phase"] = "floor"
        save("baseline", f"unpruned: top-1 {100 * baseline['accuracy']:.2f}%, "
             f"{_lat(ctx, baseline)} per batch of {ctx.measure_batch} "
             f"({_threads(state)}); latency budget {_ms(state['latency_limit_ms'])}")
    if state["phase"] == "floor":
        _floor_step(ctx, state, strategy)
        save("floor", f"smallest allowed model: {_lat(ctx, ctx.candidate(ctx.floor_id))}; "
             f"latency budget {_ms(state['latency_limit_ms'])}")
    while state["phase"] == "search":
        if not ctx.can_measure():
            state["phase"] = "tradeoff"
            state["search_end"] = "measurement budget spent"
            state["chosen_id"] = _chosen(ctx, strategy, state)
            save("step", "measurement budget spent: search ends")
            break
        state["step"] += 1
        state["strategy_state"], done = strategy.step(ctx, state["strategy_state"], state["step"])
        if done or state["step"] >= settings.search.max_steps:
            state["phase"] = "tradeoff"
            state["chosen_id"] = _chosen(ctx, strategy, state)
        inner = state["strategy_state"].get("inner") if isinstance(
            state["strategy_state"], dict) else None
        save("step", f"{inner or settings.search.strategy} step done")
    while state["phase"] == "tradeoff":
        from edgeprune.fit.tradeoff import step as tradeoff_step

        save("tradeoff", tradeoff_step(ctx, state))
    if state["phase"] == "final":
        from edgeprune.fit.final import finish

        finish(ctx, state)
        state["phase"] = "done"
        final = state.get("final") or {}
        save("final", f"final model written: {final.get('candidate')}"
             + (f", top-1 {100 * final['accuracy']:.2f}%" if final.get("accuracy") else ""))
    return _finish_result(run, state)


def _require_tflite_converter() -> None:
    """Fail before any work when ``tflite`` is asked for and the TFLite extra is not installed:
    :func:`edgeprune.artifacts.tflite.require_tflite_extra`, with fit's way out as the hint."""
    from edgeprune.artifacts.tflite import require_tflite_extra
    from edgeprune.errors import ExportError

    try:
        require_tflite_extra()
    except ExportError as exc:
        raise ExportError(exc.message, hint="install it (about 1.2 GB) or drop --tflite; "
                          "model.onnx is always written") from None


def _fresh_state() -> dict[str, Any]:
    return {"phase": "baseline", "step": 0, "candidates": [], "device_measurements": 0,
            "cached_measurements": 0, "elapsed_s": 0.0}


def _context(settings: FitSettings, run: RunDir, state: dict[str, Any], emit: Progress,
             measure: MeasureFn | None) -> Candidates:
    from edgeprune.devices.profiles import load_profile
    from edgeprune.devices.targets import load_target
    from edgeprune.fit.candidates import Candidates
    from edgeprune.pipeline import ModelSource, load_with_data

    device, source = settings.device, settings.source
    target = load_target(device.target, extra_files=device.targets_file,
                         profile=device.profile, identity_file=device.identity_file,
                         known_hosts=device.known_hosts,
                         accept_new=device.accept_new_host_key, python=device.python)
    profile = (load_profile(target.profile, extra_files=device.profiles_file)
               if target.profile else None)
    budgets = (ResolvedBudgets.from_dict(state["budgets"]) if "budgets" in state
               else resolve_budgets(settings, profile))
    state["budgets"] = budgets.to_dict()
    loaded, bundle = load_with_data(
        ModelSource(source.model, source.weights, source.input_shape), source.data,
        settings.finetune.batch_size, source.seed, None)
    state.setdefault("data", bundle.to_dict())
    return Candidates(settings, run, state, loaded.model, bundle, loaded.base_spec,
                      tuple(loaded.input_shape), target, profile, budgets, emit, measure)


def _floor_step(ctx: Candidates, state: dict[str, Any], strategy: Strategy) -> None:
    """Measure the smallest allowed model: if even it misses the budget, stop here."""
    from edgeprune.fit.search import uniform_widths

    baseline = ctx.candidate(ctx.baseline_id)
    if baseline["meets_budget"]:
        state.update(phase="final", chosen_id=baseline["id"], floor_id=baseline["id"])
        return
    floor = ctx.evaluate(uniform_widths(ctx, ctx.max_ratio), parent=ctx.baseline_id,
                         kind="floor", step=0,
                         note=f"smallest allowed model (uniform ratio {ctx.max_ratio:g})")
    state["floor_id"] = floor["id"]
    floor = ctx.measure(floor["id"])
    ctx.rebase()
    if floor["feasible"] and not floor["meets_budget"]:
        state.update(phase="final", chosen_id=None)
        return
    state["strategy_state"] = strategy.start(ctx)
    state["phase"] = "search"


def _chosen(ctx: SearchContext, strategy: Strategy, state: dict[str, Any]) -> str | None:
    """The strategy's choice; if it has none, the most accurate candidate that met the device
    budgets anywhere in the run (e.g. the smallest allowed model: the final fine-tune may still
    bring its accuracy back)."""
    from edgeprune.fit.search import best_meeting

    chosen = strategy.chosen(ctx, state["strategy_state"])
    if chosen is None:
        chosen = best_meeting(ctx, [r["id"] for r in state["candidates"]
                                    if r["id"] != state.get("baseline_id")])
    return chosen


def _best_so_far(ctx: Candidates) -> str:
    meeting = [r for r in ctx.state["candidates"] if r.get("meets_budget")]
    if not meeting:
        return ""
    best = max(meeting, key=lambda r: r["accuracy"])
    return (f"{best['id']} top-1 {100 * best['accuracy']:.2f}% (short fine-tune) at "
            f"{_lat(ctx, best)}")


def _lat(ctx: Candidates, record: dict[str, Any]) -> str:
    if not record.get("feasible"):
        return "infeasible" if record.get("measured") else "not measured"
    return f"p{ctx.budgets.latency_percentile} {_ms(ctx.latency(record))}"


def _threads(state: dict[str, Any]) -> str:
    threads = state.get("threads")
    return f"{threads} thread{'s' if threads != 1 else ''}" if threads else "default threads"


def _ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g} ms"


def _finish_result(run: RunDir, state: dict[str, Any]) -> FitResult:
    from edgeprune.fit.report import render_run

    report = render_run(run.path)
    outcome = state.get("outcome", {})
    result = FitResult(out=run.path, met=bool(outcome.get("met")),
                       reason=str(outcome.get("reason", "")), report=report)
    if not result.met:
        raise FitBudgetNotMetError(f"budget cannot be met: {result.reason}", result=result,
                                   hint=f"the best candidate and the report are in {run.path}")
    return result
