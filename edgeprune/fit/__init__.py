"""``fit``: prune a trained model until it meets a device's budgets, measured on the device.

The public surface of the package; the machinery lives in the modules next to this one:
``settings`` (what a run is asked to do, in sections), ``budgets``, ``rundir`` (files and resumable
state), ``candidates`` (prune, fine-tune, export, judge one candidate), ``layers`` (the layer
tables latency models price widths with), ``bench`` (side-by-side comparisons, the
measurement log and cap), ``loop`` (the steps), ``tradeoff`` (points added for the report's
curve) and ``final`` (final fine-tune, artifacts, the re-measure that decides, the best miss).
Strategies live in :mod:`edgeprune.fit.search`, the report in :mod:`edgeprune.fit.report`.
"""

from __future__ import annotations

from edgeprune.errors import FitBudgetNotMetError as FitBudgetNotMetError
from edgeprune.fit.budgets import ResolvedBudgets as ResolvedBudgets
from edgeprune.fit.loop import FitResult as FitResult
from edgeprune.fit.loop import fit as fit
from edgeprune.fit.loop import resume as resume
from edgeprune.fit.settings import FitBudget as FitBudget
from edgeprune.fit.settings import FitDevice as FitDevice
from edgeprune.fit.settings import FitFinetune as FitFinetune
from edgeprune.fit.settings import FitMeasure as FitMeasure
from edgeprune.fit.settings import FitOutput as FitOutput
from edgeprune.fit.settings import FitSearch as FitSearch
from edgeprune.fit.settings import FitSettings as FitSettings
from edgeprune.fit.settings import FitSource as FitSource
from edgeprune.fit.settings import load_fit_table as load_fit_table

__all__ = ["FitBudget", "FitBudgetNotMetError", "FitDevice", "FitFinetune", "FitMeasure",
           "FitOutput", "FitResult", "FitSearch", "FitSettings", "FitSource", "ResolvedBudgets",
           "fit", "load_fit_table", "resume"]
