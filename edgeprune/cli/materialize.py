"""``edgeprune materialize``: masked / zero-filter model in, physically smaller model out.

Exit codes: 0 written; 1 model/weights error or parity above tolerance; 2 bad flags.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgeprune.cli._common import add_data, add_force, add_model_args
from edgeprune.cli._output import Output


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "materialize", help="turn masked or zeroed filters into a smaller model",
        description="Remove channels whose filters are zero or masked (torch.nn.utils.prune, "
        "with or without prune.remove) and fix every dependent layer. Truly dead channels go "
        "with identical outputs; a zero filter whose BatchNorm shift is non-zero emits a "
        "constant that is folded into the next layer where that is exact, else kept (or "
        "removed with the measured deviation reported).",
    )
    add_model_args(p)
    add_data(p, required=False,
             help="real data for the parity check and accuracy before/after")
    p.add_argument("--constant-channels", choices=("fold", "keep", "remove-and-report"),
                   default="fold", help="what to do with zero filters that emit a constant")
    p.add_argument("--tolerance", type=float, default=1e-5,
                   help="max abs output difference allowed where removal is exact")
    p.add_argument("--no-eval", action="store_true", help="skip accuracy before/after")
    p.add_argument("--out", required=True, metavar="DIR")
    add_force(p)
    return p


def run(args: argparse.Namespace, out: Output) -> int:
    from edgeprune.pipeline import ModelSource, materialize_job

    result = materialize_job(ModelSource(args.model, args.weights, args.input_shape), args.out,
                             data=args.data, constant_channels=args.constant_channels,
                             tolerance=args.tolerance, evaluate=not args.no_eval,
                             force=args.force, progress=None if out.json else out.progress)
    out.result(result, render)
    return 0


def render(r: dict[str, Any]) -> str:
    lines = [f"materialized {r['source']} → {r['out']}",
             f"  channels removed {r['removed_channels']} in {len(r['removed'])} groups",
             f"  params {r['params_before']:,} → {r['params_after']:,}",
             f"  MACs   {r['macs_before']:,} → {r['macs_after']:,}",
             f"  max |Δ output| {r['max_abs_diff']:.3g} in float64 "
             f"({r.get('max_abs_diff_float32') or 0:.3g} in float32, summation order) "
             f"on {r['parity_inputs']}"]
    if r.get("accuracy_before") and r.get("accuracy_after"):
        lines.append(f"  top-1  {100 * r['accuracy_before']['top1']:.2f}% → "
                     f"{100 * r['accuracy_after']['top1']:.2f}%")
    lines.extend(f"note: {n}" for n in r.get("notes", []))
    return "\n".join(lines)
