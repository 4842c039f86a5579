"""The gate's result: one :class:`Check` per budget per artifact, as data.

The CLI renders the table, the JSON document (also what ``--write-baseline`` records and
:func:`load_baseline` reads back) and the JUnit XML from one :class:`GateResult`, so the three
always agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgeprune.errors import ConfigError, NotFoundError
from edgeprune.release.budgets import GateBudgets, Tolerance
from edgeprune.release.metrics import ArtifactMetrics

__all__ = ["RESULT_FORMAT", "RESULT_VERSION", "Check", "GateResult", "Status", "fmt_value",
           "load_baseline"]

Status = Literal["pass", "fail", "skipped"]
RESULT_FORMAT = "edgeprune.gate-result"
RESULT_VERSION = 1


@dataclass(frozen=True)
class Check:
    """One budget on one artifact. ``margin`` = limit − value (negative: over budget)."""

    artifact: str
    budget: str
    limit: float | None
    value: float | None
    unit: str
    margin: float | None
    status: Status
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GateResult:
    checks: tuple[Check, ...]
    artifacts: tuple[ArtifactMetrics, ...]
    budgets: GateBudgets
    tolerance: Tolerance
    target: str | None = None
    reference: ArtifactMetrics | None = None
    baseline: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def exit_code(self) -> int:
        from edgeprune.errors import EXIT_GATE_FAILED, EXIT_OK

        return EXIT_OK if self.passed else EXIT_GATE_FAILED

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "skipped")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT, "version": RESULT_VERSION,
            "passed": self.passed, "exit_code": self.exit_code, "counts": self.counts(),
            "target": self.target, "baseline": self.baseline,
            "budgets": self.budgets.to_dict(), "tolerance": self.tolerance.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "artifacts": [a.to_dict() for a in self.artifacts],
            "reference": self.reference.to_dict() if self.reference else None,
            "notes": list(self.notes),
        }

    def to_junit(self) -> str:
        """JUnit XML: one ``<testsuite>`` per artifact, one ``<testcase>`` per budget."""
        import xml.etree.ElementTree as ET

        counts = self.counts()
        root = ET.Element("testsuites", name="edgeprune gate", tests=str(len(self.checks)),
                          failures=str(counts["fail"]), skipped=str(counts["skipped"]),
                          errors="0")
        for metrics in self.artifacts:
            checks = [c for c in self.checks if c.artifact == metrics.artifact]
            suite = ET.SubElement(
                root, "testsuite", name=metrics.artifact, tests=str(len(checks)),
                failures=str(sum(c.status == "fail" for c in checks)),
                skipped=str(sum(c.status == "skipped" for c in checks)), errors="0")
            for c in checks:
                case = ET.SubElement(suite, "testcase", name=c.budget,
                                     classname="edgeprune.gate." + metrics.name.replace(".", "_"))
                if c.status == "fail":
                    ET.SubElement(case, "failure", message=c.reason, type="BudgetExceeded")
                elif c.status == "skipped":
                    ET.SubElement(case, "skipped", message=c.reason)
                ET.SubElement(case, "system-out").text = (
                    f"value={fmt_value(c.value)} {c.unit} limit={fmt_value(c.limit)} {c.unit} "
                    f"margin={fmt_value(c.margin)} {c.unit}")
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def load_baseline(path: str | os.PathLike[str]) -> dict[str, ArtifactMetrics]:
    """Artifact name -> metrics from a previous result's JSON (``--write-baseline``/``--format
    json`` output)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"baseline {str(path)!r} does not exist",
                            hint="record one with --write-baseline FILE") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"baseline {str(path)!r} is not readable JSON: {exc}".splitlines()[0],
                          hint="record it again with --write-baseline FILE") from None
    if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
        raise ConfigError(f"baseline {str(path)!r} is not an edgeprune gate result",
                          hint="record one with --write-baseline FILE")
    try:
        items = [ArtifactMetrics.from_dict(a) for a in data.get("artifacts", [])]
    except TypeError as exc:
        raise ConfigError(f"baseline {str(path)!r} is damaged: {exc}",
                          hint="record it again with --write-baseline FILE") from None
    return {a.name: a for a in items}


def fmt_value(value: float | None) -> str:
    """A number as the gate shows it: thousands grouped, else 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.4g}"
