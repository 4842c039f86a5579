"""Candidates: prune to given widths, fine-tune briefly, score; export and measure on demand.

:class:`Candidates` is the :class:`edgeprune.search.SearchContext` a strategy talks to. Records are
plain dicts (they go to ``state.json`` and the report as they are); models of measured candidates
are saved under ``models/<id>`` so a resumed run finds its parents.
"""

from __future__ import annotations

import copy
import math
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from edgeprune import engine, saving
from edgeprune.errors import DeviceDiskFullError, DeviceOutOfMemoryError
from edgeprune.fit._rundir import RunDir
from edgeprune.fit._settings import FitSettings, ResolvedBudgets
from edgeprune.prune import PruneConfig, prune, round_kept
from edgeprune.stats import count_macs, count_params

Record = dict[str, Any]
Emit = Callable[[dict[str, Any]], None]

# The measuring function, looked up at call time so tests can inject device faults.
MEASURE_HOOK: dict[str, Callable[..., Any]] = {}


class Candidates:
    """Evaluates and measures candidates for one fit run; holds the run's mutable state."""

    def __init__(self, settings: FitSettings, run: RunDir, state: dict[str, Any],
                 base_model: nn.Module, bundle: Any, spec: str, input_shape: tuple[int, ...],
                 target: Any, profile: Any, budgets: ResolvedBudgets, emit: Emit) -> None:
        from edgeprune.data import calibration_batches, example_input

        self.settings = settings
        self.run = run
        self.state = state
        self.base_model = base_model.eval()
        self.bundle = bundle
        self.spec = spec
        self.input_shape = input_shape
        self.target = target
        self.profile = profile
        self.budgets = budgets
        self.emit = emit
        self.example = example_input(bundle, 2)
        self.measure_input = example_input(bundle, settings.measure_batch)
        self.calibration = (calibration_batches(bundle, 4, settings.batch_size, split="train",
                                                seed=settings.seed)
                            if settings.criterion in ("activation", "taylor") else None)
        self._models: dict[str, nn.Module] = {}
        self._macs: dict[tuple[int, ...], int] = {}
        if "groups" not in state:
            graph = engine.build_graph(self.base_model, self.example)
            state["groups"] = {g.root: g.size for g in engine.channel_groups(graph)}
        self.groups: dict[str, int] = dict(state["groups"])

    # --- SearchContext surface ------------------------------------------------------------------
    @property
    def baseline_id(self) -> str:
        return str(self.state["baseline_id"])

    @property
    def floor_id(self) -> str:
        return str(self.state["floor_id"])

    @property
    def max_ratio(self) -> float:
        return self.settings.max_ratio

    @property
    def latency_budget_ms(self) -> float | None:
        value = self.state.get("latency_limit_ms")
        return None if value is None else float(value)

    def min_width(self, root: str) -> int:
        original = self.groups[root]
        low = max(1, math.ceil(original * (1 - self.settings.max_ratio) - 1e-9))
        return round_kept(low, original, self.settings.round_to)

    def round_width(self, root: str, kept: int) -> int:
        return round_kept(kept, self.groups[root], self.settings.round_to)

    def candidate(self, cid: str) -> Record:
        for record in self.state["candidates"]:
            if record["id"] == cid:
                return record
        raise KeyError(cid)

    def latency(self, record: Record) -> float | None:
        value = record.get(f"p{self.budgets.latency_percentile}_ms")
        return None if value is None else float(value)

    def meets(self, record: Record) -> bool:
        """Measured, runnable, and within every device budget (accuracy is judged at the end)."""
        return not self.misses(record)

    def misses(self, record: Record) -> list[str]:
        """The device budgets ``record`` misses, each as a short phrase (empty: it meets all)."""
        if not record.get("measured"):
            return ["not measured"]
        if not record.get("feasible"):
            return [f"cannot run on the device ({record.get('error')})"]
        out: list[str] = []
        pct = self.budgets.latency_percentile
        limit = self.latency_budget_ms
        latency = self.latency(record)
        if limit is not None and latency is not None and latency > limit:
            out.append(f"p{pct} {latency:.3g} ms > {limit:.3g} ms")
        rss, rss_limit = record.get("peak_rss_mb"), self.budgets.max_peak_rss_mb
        if rss_limit is not None and rss is not None and rss > rss_limit:
            out.append(f"peak RSS {rss:.1f} MB > {rss_limit:g} MB")
        size_mb, size_limit = record["size_bytes"] / 1e6, self.budgets.max_model_size_mb
        if size_limit is not None and size_mb > size_limit:
            out.append(f"size {size_mb:.2f} MB > {size_limit:g} MB")
        return out

    def macs_of(self, widths: Mapping[str, int]) -> int:
        key = tuple(widths[g] for g in self.groups)
        if key not in self._macs:
            model = self._prune_to(self.base_model, dict(self.groups), dict(widths))
            self._macs[key] = count_macs(model, self.example)
        return self._macs[key]

    # --- evaluation -----------------------------------------------------------------------------
    def add_baseline(self) -> Record:
        from edgeprune.evaluate import evaluate

        accuracy = evaluate(self.base_model, self.bundle.val).top1
        record = self._record(dict(self.groups), self.base_model, kind="baseline", step=0,
                              parent=None, note="unpruned model", accuracy=accuracy)
        self._models[record["id"]] = self.base_model
        return record

    def evaluate(self, widths: Mapping[str, int], *, parent: str, kind: str, note: str,
                 step: int, predicted_latency_ms: float | None = None) -> Record:
        parent_model = self.model(parent)
        model = self._prune_to(parent_model, self.candidate(parent)["widths"], dict(widths))
        result = self._finetune(model, self.settings.step_epochs, self.settings.step_batches)
        record = self._record(dict(widths), model, kind=kind, step=step, parent=parent,
                              note=note, accuracy=result.final.top1,
                              predicted_latency_ms=predicted_latency_ms)
        self._models[record["id"]] = model
        self.emit({"stage": "candidate", "id": record["id"],
                   "message": f"{record['id']} {note}: top-1 {100 * record['accuracy']:.2f}% "
                   "after a short fine-tune"})
        return record

    def model(self, cid: str) -> nn.Module:
        if cid not in self._models:
            if cid == self.baseline_id:
                self._models[cid] = self.base_model
            else:
                self._models[cid] = saving.load(self.run.model_dir(cid)).eval()
        return self._models[cid]

    def _prune_to(self, model: nn.Module, current: Mapping[str, int],
                  widths: Mapping[str, int]) -> nn.Module:
        ratios = {root: (current[root] - widths[root]) / current[root]
                  for root in self.groups if widths[root] < current[root]}
        if not ratios:
            return copy.deepcopy(model)
        config = PruneConfig(criterion=self.settings.criterion, layer_ratios=ratios,
                             only_listed=True, seed=self.settings.seed)
        return prune(model, self.example, config, calibration=self.calibration).model

    def _finetune(self, model: nn.Module, epochs: int, batches: int) -> Any:
        from edgeprune.train import finetune, get_recipe

        recipe = get_recipe("full", epochs=epochs, max_batches_per_epoch=batches,
                            val_max_batches=max(self.settings.eval_batches, 1) if epochs == 1
                            else self.settings.eval_batches, lr=self.settings.lr,
                            seed=self.settings.seed, restore_best=epochs > 1)
        return finetune(model, self.bundle.train, self.bundle.val, recipe)

    def _record(self, widths: dict[str, int], model: nn.Module, *, kind: str, step: int,
                parent: str | None, note: str, accuracy: float,
                predicted_latency_ms: float | None = None) -> Record:
        cid = f"c{len(self.state['candidates']):03d}"
        record: Record = {
            "id": cid, "step": step, "kind": kind, "parent": parent, "note": note,
            "widths": widths, "params": count_params(model),
            "macs": count_macs(model, self.example) // self.example.shape[0],
            "accuracy": float(accuracy), "predicted_latency_ms": predicted_latency_ms,
            "measured": False, "feasible": None, "error": None, "size_bytes": None,
            "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "cv": None,
            "noisy": None, "peak_rss_mb": None, "cached": None, "meets_budget": None,
        }
        self.state["candidates"].append(record)
        return record

    # --- device -------------------------------------------------------------------------------
    def measure(self, cid: str) -> Record:
        """Export and measure ``cid``; a device that cannot run it makes it infeasible."""
        from edgeprune.export import export_onnx
        from edgeprune.measure import MeasureSettings
        from edgeprune.measure import measure as real_measure
        from edgeprune.stats import size_on_disk

        record = self.candidate(cid)
        model = self.model(cid)
        path = self.run.onnx_scratch(cid)
        export_onnx(model, self.measure_input, path, exporter=self.settings.exporter, force=True)
        record["size_bytes"] = size_on_disk(path)
        settings = MeasureSettings(runs=self.settings.runs, warmup=self.settings.warmup,
                                   max_repeats=self.settings.max_repeats, seed=self.settings.seed)
        measure_fn = MEASURE_HOOK.get("measure", real_measure)
        self.emit({"stage": "measure", "id": cid,
                   "message": f"measuring {cid} on {self.target.where}"})
        try:
            result = measure_fn(path, self.target, settings, profile=self.profile)
        except (DeviceOutOfMemoryError, DeviceDiskFullError) as exc:
            self.state["device_measurements"] += 1
            record.update(measured=True, feasible=False, error=exc.one_line(), meets_budget=False)
            self.emit({"stage": "measure", "id": cid, "message": f"{cid} is infeasible on "
                       f"the device: {exc.one_line()}; the search goes on"})
            return record
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        key = "cached_measurements" if result.cached else "device_measurements"
        self.state[key] += 1
        record.update(measured=True, feasible=True, p50_ms=result.p50_ms, p90_ms=result.p90_ms,
                      p99_ms=result.p99_ms, mean_ms=result.mean_ms, cv=result.cv,
                      noisy=result.noisy, peak_rss_mb=result.peak_rss_mb, cached=result.cached)
        if "device" not in self.state:
            self.state["device"] = {"target": self.target.where, "runtime": result.runtime,
                                    "runtime_version": result.runtime_version,
                                    "threads": result.threads, **result.device}
        if record["kind"] != "baseline":
            saving.save(model, self.run.model_dir(cid), spec=self.spec,
                        input_shape=self.input_shape, force=True)
        record["meets_budget"] = self.meets(record)
        return record

    def judge(self, cid: str) -> Record:
        record = self.candidate(cid)
        record["meets_budget"] = self.meets(record)
        return record

    def measure_input_shape(self) -> list[int]:
        return list(self.measure_input.shape)
