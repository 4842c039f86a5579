"""Release: the pre-release gate (:func:`edgeprune.release.gate.gate`) — budgets, metrics,
checks and a result CI reads as a table, JSON or JUnit."""
