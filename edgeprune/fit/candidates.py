"""Candidates: prune to given widths, fine-tune briefly, score; export and judge on the device.

:class:`Candidates` is the :class:`edgeprune.fit.search.base.SearchContext` a strategy talks to.
The tables latency models price widths with are in :mod:`edgeprune.fit.layers`.
Records are plain dicts (they go to ``state.json`` and the report as they are); models of
measured candidates are saved under ``models/<id>`` so a resumed run finds its parents. How a
candidate is measured — beside the unpruned model for a relative budget, again when it lands near
the budget — is in :mod:`edgeprune.fit.bench`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune._signals import raise_if_interrupted
from edgeprune.fit.bench import INFEASIBLE, Bench, MeasureFn, PairedComparison, resolve_threads
from edgeprune.fit.budgets import ResolvedBudgets
from edgeprune.fit.layers import layer_costs, mac_slopes, macs_per_input
from edgeprune.fit.rundir import RunDir
from edgeprune.fit.settings import FitSettings, auto_measure_batch
from edgeprune.models import pruned_dir
from edgeprune.models.cost import count_macs, count_params
from edgeprune.pruning import engine
from edgeprune.pruning.prune import PruneConfig, prune, round_kept

Record = dict[str, Any]
Emit = Callable[[dict[str, Any]], None]


class Candidates:
    """Evaluates and measures candidates for one fit run; holds the run's mutable state."""

    def __init__(self, settings: FitSettings, run: RunDir, state: dict[str, Any],
                 base_model: nn.Module, bundle: Any, spec: str, input_shape: tuple[int, ...],
                 target: Any, profile: Any, budgets: ResolvedBudgets, emit: Emit,
                 measure: MeasureFn | None = None) -> None:
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
        self.calibration = (calibration_batches(bundle, 4, settings.finetune.batch_size,
                                                split="train", seed=settings.source.seed)
                            if settings.search.criterion in ("activation", "taylor") else None)
        self._models: dict[str, nn.Module] = {}
        self._histories: dict[str, list[dict[str, Any]]] = {}
        if "groups" not in state:
            graph = engine.build_graph(self.base_model, self.example)
            state["groups"] = {g.root: g.size for g in engine.channel_groups(graph)}
        self.groups: dict[str, int] = dict(state["groups"])
        if "measure_batch" not in state:
            macs = count_macs(self.base_model, self.example) // self.example.shape[0]
            state["measure_batch"] = settings.measure.measure_batch or auto_measure_batch(
                macs, budgets.relative)
        if "threads" not in state:
            state["threads"] = resolve_threads(settings.measure.threads, target, profile)
        self.measure_batch = int(state["measure_batch"])
        self.measure_input = _batch_of(bundle, self.measure_batch)
        self.bench = Bench(settings, target, profile, run.path, state["threads"], emit, measure)
        # kept free for the final checks: verify pairs, and the deployable beside the unpruned
        self.reserve = 2 * settings.measure.verify_pairs + 2

    # --- SearchContext surface ------------------------------------------------------------------
    @property
    def baseline_id(self) -> str:
        return str(self.state["baseline_id"])

    @property
    def floor_id(self) -> str:
        return str(self.state["floor_id"])

    @property
    def max_ratio(self) -> float:
        return self.settings.search.max_ratio

    @property
    def latency_budget_ms(self) -> float | None:
        value = self.state.get("latency_limit_ms")
        return None if value is None else float(value)

    def min_width(self, root: str) -> int:
        original = self.groups[root]
        low = max(1, math.ceil(original * (1 - self.settings.search.max_ratio) - 1e-9))
        return round_kept(low, original, self.settings.search.round_to)

    def round_width(self, root: str, kept: int) -> int:
        return round_kept(kept, self.groups[root], self.settings.search.round_to)

    def candidate(self, cid: str) -> Record:
        for record in self.state["candidates"]:
            if record["id"] == cid:
                return record
        raise KeyError(cid)

    def latency(self, record: Record) -> float | None:
        """The latency budgets are judged on: load-corrected when paired
        (see :mod:`edgeprune.fit.bench`)."""
        value = record.get("latency_ms")
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
        for name, value, limit in self.excess(record):
            if value > limit * (1 + 1e-9):
                out.append(f"{name} {value:.3g} > {limit:.3g}")
        return out

    def excess(self, record: Record) -> list[tuple[str, float, float]]:
        """(budget, value, limit) for every device budget in force that ``record`` has."""
        pct = self.budgets.latency_percentile
        out: list[tuple[str, float, float]] = []
        limit, latency = self.latency_budget_ms, self.latency(record)
        if limit is not None and latency is not None:
            out.append((f"p{pct} ms", latency, limit))
        rss, rss_limit = record.get("peak_rss_mb"), self.budgets.max_peak_rss_mb
        if rss_limit is not None and rss is not None:
            out.append(("peak RSS MB", float(rss), rss_limit))
        size_limit = self.budgets.max_model_size_mb
        if size_limit is not None and record.get("size_bytes") is not None:
            out.append(("size MB", record["size_bytes"] / 1e6, size_limit))
        return out

    def mac_slopes(self) -> dict[str, float]:
        """Per group: the fraction of the unpruned model's conv/linear MACs saved per unit
        fraction of the group's channels removed (:func:`edgeprune.fit.layers.mac_slopes`)."""
        if "mac_slopes" not in self.state:
            self.state["mac_slopes"] = mac_slopes(self.base_model, self.example,
                                                  macs_per_input(self.base_model, self.example))
        return dict(self.state["mac_slopes"])

    def layer_costs(self) -> list[dict[str, Any]]:
        """Per conv/linear layer of the unpruned model: MACs, input/output activation and weight
        elements per input, and the fraction of its input and output channels each group cuts.

        What a latency model needs to predict MACs and memory traffic of *any* widths without
        pruning (see :mod:`edgeprune.fit.search.knapsack`); computed once, cached in the state.
        """
        if "layer_costs" not in self.state:
            self.state["layer_costs"] = layer_costs(self.base_model, self.example, self.groups)
        return [dict(layer) for layer in self.state["layer_costs"]]

    def channel_scores(self) -> dict[str, list[float]]:
        """Per group: its channels' scores by the fit's criterion on the unpruned model, each
        divided by the group's mean and sorted ascending (the order pruning removes them)."""
        if "channel_scores" not in self.state:
            from edgeprune.pruning.prune import channel_scores

            raw = channel_scores(self.base_model, self.example, self.settings.search.criterion,
                                 calibration=self.calibration, seed=self.settings.source.seed)
            scores: dict[str, list[float]] = {}
            for root in self.groups:
                values = sorted(raw.get(root) or [1.0] * self.groups[root])
                mean = sum(values) / len(values) if values else 0.0
                scores[root] = ([v / mean for v in values] if mean > 0
                                else [1.0] * len(values))
            self.state["channel_scores"] = scores
        return {root: list(v) for root, v in self.state["channel_scores"].items()}

    def can_measure(self, invocations: int = 2) -> bool:
        """Whether the search may spend ``invocations`` more, keeping the final checks' share."""
        return self.bench.left - invocations >= self.reserve

    # --- evaluation -----------------------------------------------------------------------------
    def add_baseline(self) -> Record:
        from edgeprune.training.evaluate import evaluate

        accuracy = evaluate(self.base_model, self.bundle.val).top1
        record = self._record(dict(self.groups), self.base_model, kind="baseline", step=0,
                              parent=None, note="unpruned model", accuracy=accuracy)
        self._models[record["id"]] = self.base_model
        return record

    def evaluate(self, widths: Mapping[str, int], *, parent: str, kind: str, note: str,
                 step: int, predicted_latency_ms: float | None = None) -> Record:
        """Prune ``parent`` to ``widths`` and fine-tune briefly; the same widths from the same
        parent (or the parent's own widths) give back the existing record at no cost."""
        raise_if_interrupted()
        widths = dict(widths)
        parent_record = self.candidate(parent)
        if widths == parent_record["widths"]:
            return parent_record
        for record in self.state["candidates"]:
            if record["widths"] == widths and record["parent"] == parent:
                self.emit({"stage": "candidate", "id": record["id"],
                           "message": f"{note}: same widths as {record['id']}, reused"})
                return record
        parent_model = self.model(parent)
        model, steps = self._prune_to(parent_model, parent_record["widths"], widths)
        tune = self.settings.finetune
        result = self._finetune(model, tune.step_epochs, tune.step_batches)
        record = self._record(widths, model, kind=kind, step=step, parent=parent,
                              note=note, accuracy=result.final.top1,
                              predicted_latency_ms=predicted_latency_ms)
        self._models[record["id"]] = model
        self._histories[record["id"]] = [*self.history(parent), *steps]
        self.emit({"stage": "candidate", "id": record["id"],
                   "message": f"{record['id']} {note}: top-1 {100 * record['accuracy']:.2f}% "
                   "after a short fine-tune"})
        return record

    def model(self, cid: str) -> nn.Module:
        if cid not in self._models:
            if cid == self.baseline_id:
                self._models[cid] = self.base_model
            else:
                self._models[cid] = pruned_dir.load(self.run.model_dir(cid)).eval()
        return self._models[cid]

    def history(self, cid: str) -> list[dict[str, Any]]:
        """The pruning steps from the unpruned model to ``cid`` (saved in its model.json: what
        ``finetune --recipe partial`` unfreezes by default)."""
        if cid == self.baseline_id:
            return []
        if cid not in self._histories:
            directory = self.run.model_dir(cid)
            self._histories[cid] = list(pruned_dir.read_manifest(directory).history) \
                if pruned_dir.is_pruned_dir(directory) else []
        return [dict(step) for step in self._histories[cid]]

    def _prune_to(self, model: nn.Module, current: Mapping[str, int],
                  widths: Mapping[str, int]) -> tuple[nn.Module, list[dict[str, Any]]]:
        ratios = {root: (current[root] - widths[root]) / current[root]
                  for root in self.groups if widths[root] < current[root]}
        if not ratios:
            return copy.deepcopy(model), []
        config = PruneConfig(criterion=self.settings.search.criterion, layer_ratios=ratios,
                             only_listed=True, seed=self.settings.source.seed)
        result = prune(model, self.example, config, calibration=self.calibration)
        return result.model, [dict(step) for step in result.history]

    def finetune(self, model: nn.Module, epochs: int, batches: int) -> Any:
        return self._finetune(model, epochs, batches)

    def _finetune(self, model: nn.Module, epochs: int, batches: int) -> Any:
        from edgeprune.training.finetune import finetune
        from edgeprune.training.recipes import get_recipe

        tune = self.settings.finetune
        recipe = get_recipe("full", epochs=epochs, max_batches_per_epoch=batches,
                            val_max_batches=max(tune.eval_batches, 1) if epochs == 1
                            else tune.eval_batches, lr=tune.lr,
                            seed=self.settings.source.seed, restore_best=epochs > 1)
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
            "latency_ms": None, "latency_ratio": None, "ref_ms": None, "pair_ratios": [],
            "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "cv": None,
            "noisy": None, "peak_rss_mb": None, "measurements": 0, "meets_budget": None,
        }
        self.state["candidates"].append(record)
        return record

    # --- device -------------------------------------------------------------------------------
    def baseline_artifact(self, batch: int | None = None) -> Path:
        """The unpruned model's ONNX at ``batch`` (default: the measured batch), made once."""
        from edgeprune.pipeline.measuring import export_for_measuring

        batch = batch or self.measure_batch
        path = self.run.path / "scratch" / f"unpruned-b{batch}.onnx"
        if not path.is_file():
            example = self.measure_input if batch == self.measure_batch else \
                self.measure_input[:batch]
            export_for_measuring(self.base_model, example, path,
                                 exporter=self.settings.output.exporter)
        return path

    def measure(self, cid: str) -> Record:
        """Judge ``cid`` on the device (once; later calls return the record as it is).

        Relative budget: a pair (unpruned, candidate) back to back; a second pair, in the other
        order, when the ratio lands within ``noise_margin`` of the budget. Absolute budget: the
        candidate alone, again when near the budget. A device that cannot run it (out of memory,
        disk full) makes it infeasible. With the measurement budget spent, the record stays
        unmeasured (and so does not meet the budget).
        """
        raise_if_interrupted()
        from edgeprune.artifacts.files import size_on_disk
        from edgeprune.pipeline.measuring import export_for_measuring

        record = self.candidate(cid)
        if record.get("measured"):
            return record
        first = cid == self.state.get("baseline_id") and "baseline_ms" not in self.state
        paired = self.budgets.relative and not first
        if not first and cid != self.state.get("floor_id") and not self.can_measure(
                2 if paired else 1):
            record["error"] = "not measured: the fit's measurement budget is spent"
            self.emit({"stage": "measure", "id": cid, "message": f"{cid} not measured: "
                       f"{self.bench.used} of {self.bench.cap} device measurements used"})
            return record
        path = self.run.onnx_scratch(cid)
        if first:
            path = self.baseline_artifact()
        else:
            export_for_measuring(self.model(cid), self.measure_input, path,
                                 exporter=self.settings.output.exporter)
        record["size_bytes"] = size_on_disk(path)
        self.emit({"stage": "measure", "id": cid, "message": f"measuring {cid} on "
                   f"{self.target.where}" + (" beside the unpruned model" if paired else "")})
        try:
            comparison = self.bench.compare(
                path, cid=cid, role="unpruned" if first else "candidate",
                batch=self.measure_batch, percentile=self.budgets.latency_percentile,
                reference=(self.baseline_artifact(), self.baseline_id) if paired else None,
                again=self._again)
        except INFEASIBLE as exc:
            record.update(measured=True, feasible=False, error=exc.one_line(),
                          meets_budget=False)
            self.emit({"stage": "measure", "id": cid, "message": f"{cid} is infeasible on "
                       f"the device: {exc.one_line()}; the search goes on"})
            return record
        finally:
            if not first:
                _remove_onnx(path)
        base_ms = None if first else float(self.state["baseline_ms"])
        record.update(measured=True, feasible=True, **comparison.summary(base_ms))
        if first:
            record["latency_ratio"] = 1.0
            self.state["baseline_ms"] = record["latency_ms"]
        self._note_device(comparison.own[0])
        if record["kind"] != "baseline":
            pruned_dir.save(self.model(cid), self.run.model_dir(cid), spec=self.spec,
                            input_shape=self.input_shape, history=self.history(cid), force=True)
        record["meets_budget"] = self.meets(record)
        return record

    def rebase(self) -> None:
        """Relative budget: take the unpruned model's reference latency (the unit ``latency_ms``
        is shown in) as the lowest of its measurements so far — the first one alone is often
        slowed by whatever ran just before it. Ratios, and so every decision, are unchanged."""
        if not self.budgets.relative:
            return
        base_ms = self.bench.lowest(f"p{self.budgets.latency_percentile}_ms", role="unpruned",
                                    batch=self.measure_batch)
        if base_ms is None:
            return
        self.state["baseline_ms"] = base_ms
        self.state["latency_limit_ms"] = self.budgets.latency_limit_ms(base_ms)
        for record in self.state["candidates"]:
            if record.get("feasible") and record.get("latency_ratio") is not None:
                record["latency_ms"] = float(record["latency_ratio"]) * base_ms
                record["meets_budget"] = self.meets(record)

    def _again(self, comparison: PairedComparison, invocations: int) -> bool:
        """Measure once more: the result is near the budget and there is room for it."""
        return "baseline_ms" in self.state and self._near_budget(comparison) and \
            self.can_measure(invocations)

    def _near_budget(self, comparison: PairedComparison) -> bool:
        limit = self.latency_budget_ms
        if limit is None:
            return False
        latency = comparison.summary(float(self.state["baseline_ms"]))["latency_ms"]
        margin = self.settings.measure.noise_margin
        near = abs(latency / limit - 1) <= margin
        if near:
            self.emit({"stage": "measure", "message": f"{latency:.3g} ms is within "
                       f"{margin:.0%} of the budget {limit:.3g} ms: "
                       "measuring again"})
        return near

    def _note_device(self, result: Any) -> None:
        if "device" not in self.state:
            self.state["device"] = {"target": self.target.where, "runtime": result.runtime,
                                    "runtime_version": result.runtime_version,
                                    "threads": result.threads, **result.device}
            self._note_arch(str(result.device.get("machine") or ""))

    def _note_arch(self, machine: str) -> None:
        """An absolute latency budget from a profile of another architecture judges this
        machine against a device it is not: say so (once, in the report too)."""
        from edgeprune.devices.profiles import arch_mismatch

        if self.budgets.max_latency_ms is None or \
                self.budgets.sources.get("max_latency_ms", "").startswith("command line"):
            return
        note = arch_mismatch(self.profile, machine)
        if note and note not in self.state.setdefault("notes", []):
            self.state["notes"].append(note)
            self.emit({"stage": "fit", "event": "warning", "message": f"warning: {note}"})

    def judge(self, cid: str) -> Record:
        record = self.candidate(cid)
        record["meets_budget"] = self.meets(record)
        return record

    def measure_input_shape(self) -> list[int]:
        return list(self.measure_input.shape)


def _batch_of(bundle: Any, n: int) -> torch.Tensor:
    """``n`` real validation images (repeated when the split is smaller)."""
    from edgeprune.data import example_input
    from edgeprune.errors import DataSpecError

    try:
        return example_input(bundle, n)
    except DataSpecError:
        have = example_input(bundle, 1)
        size = 1
        while size * 2 <= n:
            try:
                have = example_input(bundle, size * 2)
                size *= 2
            except DataSpecError:
                break
        reps = -(-n // len(have))
        return have.repeat(reps, *([1] * (have.dim() - 1)))[:n]


def _remove_onnx(path: Path) -> None:
    """Delete a scratch ONNX export and every external-data file it declares
    (:func:`edgeprune.artifacts.files.declared_external_data`); files already gone are fine. A
    model that is gone or too broken to list its data (a torn export) takes the exporter's usual
    ``<name>.data`` with it."""
    from edgeprune.artifacts.files import declared_external_data
    from edgeprune.errors import ArtifactError

    names = [path.name + ".data"]
    if path.is_file():
        with contextlib.suppress(ArtifactError):
            names = declared_external_data(path)
    for name in names:
        (path.parent / name).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
