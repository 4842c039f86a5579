"""``fit``: prune a trained model until it meets a device's budgets, measured on the device.

The public surface of the package; the machinery lives in the private modules next to this one:
``_settings`` (what a run is asked to do, budgets), ``_rundir`` (files and resumable state),
``_candidates`` (prune, fine-tune, export, judge one candidate), ``_measuring`` (side-by-side
comparisons, the measurement log and cap), ``_loop`` (the steps) and ``_final`` (final fine-tune,
artifacts, the re-measure that decides, the best miss).
Strategies live in :mod:`edgeprune.search`, the report in :mod:`edgeprune.report`.
"""

from __future__ import annotations

from edgeprune.errors import FitBudgetNotMetError as FitBudgetNotMetError
from edgeprune.fit.loop import FitResult as FitResult
from edgeprune.fit.loop import fit as fit
from edgeprune.fit.loop import resume as resume
from edgeprune.fit.settings import FitSettings as FitSettings
from edgeprune.fit.settings import ResolvedBudgets as ResolvedBudgets
from edgeprune.fit.settings import load_fit_table as load_fit_table

__all__ = ["FitBudgetNotMetError", "FitResult", "FitSettings", "ResolvedBudgets", "fit",
           "load_fit_table", "resume"]
