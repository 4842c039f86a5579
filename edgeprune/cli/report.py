"""``edgeprune report DIR``: re-render a fit run's report.json, candidates.csv and report.html.

Exit codes: 0 rendered; 1 not a run directory or unreadable.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgeprune.cli._output import Output


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="re-render the report of a fit run directory",
        description="Render report.json, candidates.csv and a self-contained report.html "
        "(accuracy vs measured latency, Pareto front, widths, device facts) from a fit run's "
        "data.", epilog="Example: edgeprune report runs/fit1")
    p.add_argument("run_dir", metavar="DIR", help="the --out directory of edgeprune fit")
    return p


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune.fit.report import render_run, summary_text

    report = render_run(args.run_dir)
    out.result(report, lambda d: summary_text(d) + f"\nwrote {args.run_dir}/report.html")
    return 0
