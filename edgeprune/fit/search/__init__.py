"""Search strategies for ``fit``: which pruned widths to try next, registered by name.

- :mod:`~edgeprune.fit.search.base`: the :class:`Strategy` and :class:`SearchContext`
  protocols, the registry and the helpers every strategy shares;
- :mod:`~edgeprune.fit.search.uniform`: ``uniform``, the baseline (one ratio, bisected);
- :mod:`~edgeprune.fit.search.netadapt`: ``netadapt`` (NetAdapt steps, a per-group latency
  model);
- :mod:`~edgeprune.fit.search.knapsack`: ``knapsack`` (a roofline latency model and a knapsack
  over channel groups) and ``auto`` (knapsack with a latency budget, else uniform).

Importing this package registers the strategies; the strategy modules import only ``base``.
"""

from __future__ import annotations

from edgeprune.fit.search import knapsack as knapsack
from edgeprune.fit.search import netadapt as netadapt
from edgeprune.fit.search import uniform as uniform
from edgeprune.fit.search.base import SearchContext as SearchContext
from edgeprune.fit.search.base import Strategy as Strategy
from edgeprune.fit.search.base import best_meeting as best_meeting
from edgeprune.fit.search.base import get_strategy as get_strategy
from edgeprune.fit.search.base import list_strategies as list_strategies
from edgeprune.fit.search.base import measurement_weight as measurement_weight
from edgeprune.fit.search.base import register_strategy as register_strategy
from edgeprune.fit.search.base import uniform_widths as uniform_widths
from edgeprune.fit.search.knapsack import Cost as Cost
from edgeprune.fit.search.knapsack import RooflineModel as RooflineModel
from edgeprune.fit.search.knapsack import allocate as allocate
from edgeprune.fit.search.netadapt import LatencyModel as LatencyModel

__all__ = ["Cost", "LatencyModel", "RooflineModel", "SearchContext", "Strategy", "allocate",
           "best_meeting", "get_strategy", "list_strategies", "measurement_weight",
           "register_strategy", "uniform_widths"]
