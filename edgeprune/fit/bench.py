"""Device measurements of a fit: fixed settings, side-by-side comparisons, a log, a cap.

Why side by side: on a shared machine (or a device that heats up) the same model measures
slower when something else runs. A relative budget ("2× faster than the unpruned model") is
therefore judged on the *ratio* of the candidate's latency to the unpruned model's, both
measured back to back in one window — A then B, and when a second pair is needed B then A, so a
drift inside the window cancels too. The ratios of the pairs are combined by their geometric
mean. An absolute budget cannot cancel the load; a result near it is measured again instead.

Every runner invocation that is not a cache hit is one *device measurement*: each is appended to
``measurements.jsonl`` in the run directory the moment it finishes, so measurements of a step
interrupted by Ctrl-C (and repeated on resume) are still counted. The fit never reuses cached
timings — a comparison is only meaningful inside one window.

What measures is :func:`edgeprune.pipeline.measuring.measure` unless a ``measure`` callable of the
same signature is passed down (``fit(..., measure=...)``): tests inject device faults and replay
timings that way.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgeprune.errors import DeviceDiskFullError, DeviceOutOfMemoryError
from edgeprune.fit.settings import FitSettings

Emit = Callable[[dict[str, Any]], None]
# (artifact path, target, MeasureSettings, *, profile) -> MeasureResult (pipeline.measuring.measure)
MeasureFn = Callable[..., Any]
INFEASIBLE = (DeviceOutOfMemoryError, DeviceDiskFullError)
LOG = "measurements.jsonl"


def resolve_threads(settings_threads: int | None, target: Any, profile: Any) -> int | None:
    """Intra-op threads for every measurement of the fit (see :class:`FitSettings`)."""
    if settings_threads is not None:
        return settings_threads
    if profile is not None and getattr(profile, "threads", None):
        return int(profile.threads)
    return 1 if target.is_local else None


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


class Bench:
    """Runs the fit's measurements with one fixed :class:`MeasureSettings`; logs and counts."""

    def __init__(self, settings: FitSettings, target: Any, profile: Any, run_path: Path,
                 threads: int | None, emit: Emit, measure: MeasureFn | None = None) -> None:
        from edgeprune.devices.measure import MeasureSettings

        if measure is None:
            from edgeprune.pipeline.measuring import measure
        self.measure_fn: MeasureFn = measure
        self.target = target
        self.profile = profile
        self.emit = emit
        self.log_path = run_path / LOG
        meas = settings.measure
        self.cap = int(meas.max_measurements)
        self.measure_settings = MeasureSettings(
            runs=meas.runs, warmup=meas.warmup, threads=threads,
            max_repeats=meas.max_repeats, seed=settings.source.seed, use_cache=False)

    # --- the count ------------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every logged measurement (a torn last line from a crash is skipped)."""
        if not self.log_path.is_file():
            return []
        out = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    @property
    def used(self) -> int:
        return sum(int(e.get("runner_invocations", 1)) for e in self.entries())

    @property
    def left(self) -> int:
        return self.cap - self.used

    # --- one measurement ------------------------------------------------------------------------
    def run(self, path: Path, *, cid: str, role: str, batch: int) -> Any:
        """Measure ``path`` once; infeasible-on-device errors are logged, then re-raised."""
        from edgeprune._signals import raise_if_interrupted

        raise_if_interrupted()
        started = time.monotonic()
        entry: dict[str, Any] = {"cid": cid, "role": role, "batch": batch,
                                 "threads": self.measure_settings.threads,
                                 "load_avg_1m": _load_avg(), "at": time.time()}
        try:
            result = self.measure_fn(path, self.target, self.measure_settings, profile=self.profile)
        except INFEASIBLE as exc:
            self._append({**entry, "runner_invocations": 1, "error": exc.one_line(),
                          "wall_s": round(time.monotonic() - started, 2)})
            raise
        self._append({**entry, "runner_invocations": 0 if result.cached else result.attempts,
                      "cached": result.cached, "p50_ms": result.p50_ms,
                      "p90_ms": result.p90_ms, "p99_ms": result.p99_ms,
                      "mean_ms": result.mean_ms, "cv": result.cv,
                      "robust_cv": getattr(result, "robust_cv", None), "noisy": result.noisy,
                      "peak_rss_mb": result.peak_rss_mb,
                      "wall_s": round(time.monotonic() - started, 2)})
        return result

    def compare(self, path: Path, *, cid: str, role: str, batch: int, percentile: int,
                reference: tuple[Path, str] | None,
                again: Callable[[PairedComparison, int], bool]) -> PairedComparison:
        """Judge ``path``: beside the ``reference`` artifact (its path and id) as a pair, and a
        second pair in the other order when ``again(comparison, 2)``; or alone (``reference``
        None), once more when ``again(comparison, 1)``. ``again`` says whether the result is near
        enough to the budget to be measured again and there is room for ``n`` more."""
        comparison = PairedComparison(percentile)
        if reference is not None:
            ref_path, ref_id = reference
            ref = self.run(ref_path, cid=ref_id, role="unpruned", batch=batch)
            own = self.run(path, cid=cid, role=role, batch=batch)
            comparison.add_pair(own, ref)
            if again(comparison, 2):
                own = self.run(path, cid=cid, role=role, batch=batch)
                ref = self.run(ref_path, cid=ref_id, role="unpruned", batch=batch)
                comparison.add_pair(own, ref)
            return comparison
        comparison.add_own(self.run(path, cid=cid, role=role, batch=batch))
        if again(comparison, 1):
            comparison.add_own(self.run(path, cid=cid, role=role, batch=batch))
        return comparison

    def lowest(self, key: str, *, role: str, batch: int) -> float | None:
        """The lowest ``key`` (e.g. ``p90_ms``) logged for ``role`` at ``batch``, if any."""
        values = [float(e[key]) for e in self.entries()
                  if e.get("role") == role and e.get("batch") == batch and e.get(key)]
        return min(values) if values else None

    def _append(self, entry: dict[str, Any]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _max_or_none(values: Any) -> float | None:
    found = [float(v) for v in values if v is not None]
    return max(found) if found else None


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class PairedComparison:
    """The measurements that judge one artifact: its own, and the unpruned model's beside it."""

    def __init__(self, percentile: int) -> None:
        self.key = f"p{percentile}_ms"
        self.own: list[Any] = []
        self.ref: list[Any] = []
        self.ratios: list[float] = []

    def add_pair(self, own: Any, ref: Any) -> None:
        self.own.append(own)
        self.ref.append(ref)
        self.ratios.append(getattr(own, self.key) / getattr(ref, self.key))

    def add_own(self, own: Any) -> None:
        self.own.append(own)

    def ratio(self) -> float | None:
        return geomean(self.ratios) if self.ratios else None

    def summary(self, base_ms: float | None) -> dict[str, Any]:
        """Record fields: the artifact's own numbers (median over its measurements), the
        reference beside it, and ``latency_ms`` — the latency budgets are judged on: the ratio
        times the unpruned model's first measurement when paired, else its own percentile."""

        def med(values: list[float]) -> float:
            values = sorted(values)
            mid = len(values) // 2
            return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

        own = {k: med([float(getattr(r, k)) for r in self.own])
               for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")}
        ratio = self.ratio()
        if ratio is not None and base_ms is not None:
            latency = ratio * base_ms
        else:
            latency = own[self.key]
            ratio = latency / base_ms if base_ms else None
        rss = [r.peak_rss_mb for r in self.own if r.peak_rss_mb is not None]
        return {
            **own, "latency_ms": latency, "latency_ratio": ratio,
            "ref_ms": geomean([getattr(r, self.key) for r in self.ref]) if self.ref else None,
            "pair_ratios": [round(x, 4) for x in self.ratios],
            "cv": max(float(r.cv) for r in self.own),
            "robust_cv": _max_or_none(getattr(r, "robust_cv", None) for r in self.own),
            "noisy": any(bool(r.noisy) for r in self.own),
            "cv_threshold": float(self.own[0].cv_threshold),
            "peak_rss_mb": max(rss) if rss else None,
            "measurements": len(self.own) + len(self.ref),
        }
