"""Does structured pruning make models faster in proportion to the MACs it removes?

For ResNet-18 and MobileNetV2 at 224×224, channel ratios 0.25 / 0.5 / 0.75 and ``round_to``
1 / 8 / 16: prune (L2 criterion), export both models to ONNX (parity-checked on real images),
then time the unpruned (A) and pruned (B) onnxruntime CPU sessions *interleaved* in one process
(A, B, A, B, ...) at fixed intra-op thread counts and report medians. Goal: at ratio 0.5 the
measured speed-up is at least 0.9 × the MAC reduction (``efficiency = speed-up / MAC reduction``).

Weights: no trained ImageNet weights are available offline, so the models are random-init with
BatchNorm statistics calibrated on real images (sklearn digits, upsampled, 3 channels) — outputs
are O(1), not vanishing — and denormals are flushed in PyTorch and in onnxruntime
(``session.set_denormal_as_zero``), so timings do not hit the denormal slow path.

    .venv/bin/python scripts/bench_prune.py [--quick] [--runs 60] [--threads 1,2]
        [--out bench-results/prune.json] [--md bench-results/prune.md]

Writes JSON to ``--out`` and a Markdown table to stdout (and ``--md``). Not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ARCHS = ("resnet18", "mobilenet_v2")
RATIOS = (0.25, 0.5, 0.75)
ROUND_TO = (1, 8, 16)
GOAL_RATIO = 0.5
GOAL_EFFICIENCY = 0.9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated torchvision names")
    p.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    p.add_argument("--round-to", default=",".join(map(str, ROUND_TO)))
    p.add_argument("--threads", default="1,2", help="intra-op thread counts to time at")
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--runs", type=int, default=60, help="timed runs per session and setting")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per session first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench-results/prune.json", help="JSON results")
    p.add_argument("--md", help="also write the Markdown table here")
    p.add_argument("--workdir", help="keep the ONNX files here (default: a temp dir)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: resnet18, ratio 0.5, round_to 8, 1 thread, 15 runs",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.archs, args.ratios, args.round_to, args.threads = "resnet18", "0.5", "8", "1"
        args.runs, args.warmup = min(args.runs, 15), min(args.warmup, 3)
    return args


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


# --- models and data ---------------------------------------------------------------------------


def real_images(n: int, size: int) -> Any:
    """``n`` real digits (sklearn), upsampled to ``size``, 3 channels, roughly standardised."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = torch.tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(digits, size=(size, size), mode="bilinear", align_corners=False)
    return ((x - 0.3) / 0.4).repeat(1, 3, 1, 1)


def calibrate_bn(model: Any, images: Any) -> Any:
    """BatchNorm running statistics from real images (cumulative average), then eval mode."""
    import torch
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for chunk in images.split(16):
            model(chunk)
    return model.eval()


def build(arch: str, images: Any, seed: int) -> Any:
    import torch

    from edgeprune.models.load import load_model

    torch.manual_seed(seed)
    return calibrate_bn(load_model(f"torchvision:{arch}"), images)


# --- timing --------------------------------------------------------------------------------------


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_interleaved(
    path_a: Path, path_b: Path, feed: Any, threads: int, runs: int, warmup: int
) -> dict[str, Any]:
    """Medians (ms) of A and B timed alternately, so drift and heat hit both equally."""
    sessions = [session(path_a, threads), session(path_b, threads)]
    names = [s.get_inputs()[0].name for s in sessions]
    for _ in range(warmup):
        for s, n in zip(sessions, names, strict=True):
            s.run(None, {n: feed})
    times: list[list[float]] = [[], []]
    for i in range(runs):
        order = (0, 1) if i % 2 == 0 else (1, 0)  # ABBA: neither always runs first
        for k in order:
            start = time.perf_counter_ns()
            sessions[k].run(None, {names[k]: feed})
            times[k].append((time.perf_counter_ns() - start) / 1e6)
    # each pair ran back to back: the median of per-pair ratios cancels bursts of load
    pairs = [a / b for a, b in zip(times[0], times[1], strict=True) if b > 0]
    return {
        "a": _summary(times[0]),
        "b": _summary(times[1]),
        "paired_speedup": statistics.median(pairs),
    }


def _summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    q = statistics.quantiles(ordered, n=10) if len(ordered) >= 2 else [ordered[0]] * 9
    mean = statistics.fmean(ordered)
    std = statistics.pstdev(ordered)
    return {
        "median_ms": statistics.median(ordered),
        "p10_ms": q[0],
        "p90_ms": q[8],
        "mean_ms": mean,
        "cv": std / mean if mean else 0.0,
        "runs": len(ordered),
    }


# --- the benchmark -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime
    import torch

    from edgeprune.artifacts.onnx_export import export_onnx
    from edgeprune.models.cost import count_macs, count_params
    from edgeprune.pruning.prune import PruneConfig, prune

    torch.manual_seed(args.seed)
    torch.set_flush_denormal(True)
    torch.set_num_threads(max(_ints(args.threads)))
    images = real_images(64, args.size)
    example, check, feed = images[:1], images[:4], images[1:2].numpy()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-prune-"))
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for arch in args.archs.split(","):
        model = build(arch, images, args.seed)
        base_path = workdir / f"{arch}.onnx"
        base = export_onnx(model, example, base_path, check_inputs=check, force=True)
        base_macs, base_params = count_macs(model, example), count_params(model)
        for ratio in _floats(args.ratios):
            for round_to in _ints(args.round_to):
                config = PruneConfig(ratio=ratio, criterion="l2", round_to=round_to)
                started = time.perf_counter()
                pruned = prune(model, example, config).model.eval()
                prune_s = time.perf_counter() - started
                path = workdir / f"{arch}-r{ratio}-rt{round_to}.onnx"
                exported = export_onnx(pruned, example, path, check_inputs=check, force=True)
                macs, params = count_macs(pruned, example), count_params(pruned)
                for threads in _ints(args.threads):
                    timing = time_interleaved(
                        base_path, path, feed, threads, args.runs, args.warmup
                    )
                    speedup = timing["a"]["median_ms"] / timing["b"]["median_ms"]
                    mac_reduction = base_macs / macs
                    row = {
                        "arch": arch,
                        "ratio": ratio,
                        "round_to": round_to,
                        "threads": threads,
                        "params_before": base_params,
                        "params_after": params,
                        "macs_before": base_macs,
                        "macs_after": macs,
                        "mac_reduction": mac_reduction,
                        "latency_before_ms": timing["a"]["median_ms"],
                        "latency_after_ms": timing["b"]["median_ms"],
                        "speedup": speedup,
                        "efficiency": speedup / mac_reduction,
                        "speedup_paired": timing["paired_speedup"],
                        "efficiency_paired": timing["paired_speedup"] / mac_reduction,
                        "timing": timing,
                        "size_before_bytes": base.size_bytes,
                        "size_after_bytes": exported.size_bytes,
                        "export_max_abs_diff": exported.max_abs_diff,
                        "exporter": exported.exporter,
                        "prune_seconds": prune_s,
                    }
                    rows.append(row)
                    print(_progress_line(row), file=sys.stderr, flush=True)
    return {
        "benchmark": "prune-speedup",
        "goal": f"speed-up >= {GOAL_EFFICIENCY} x MAC reduction at ratio {GOAL_RATIO}",
        "settings": {
            "input_shape": [1, 3, args.size, args.size],
            "runs": args.runs,
            "warmup": args.warmup,
            "interleaving": "ABBA per pair, same process",
            "criterion": "l2",
            "weights": "random init, BatchNorm calibrated on real digits images",
            "flush_denormal": True,
            "ort_denormal_as_zero": True,
            "seed": args.seed,
        },
        "environment": {
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            # other work on the machine skews absolute numbers (interleaving protects ratios)
            "load_average_before": list(load_before),
            "load_average_after": list(os.getloadavg()),
        },
        "rows": rows,
    }


def _progress_line(row: dict[str, Any]) -> str:
    return (
        f"{row['arch']} ratio {row['ratio']} round_to {row['round_to']} "
        f"threads {row['threads']}: {row['latency_before_ms']:.2f} → "
        f"{row['latency_after_ms']:.2f} ms, speed-up {row['speedup']:.2f}× vs MACs "
        f"{row['mac_reduction']:.2f}× (efficiency {row['efficiency']:.2f})"
    )


NOISY_CV = 0.15  # coefficient of variation above which a row's timings are flagged


def _noisy(row: dict[str, Any]) -> str:
    cv = max(row["timing"]["a"]["cv"], row["timing"]["b"]["cv"])
    return f" ⚠ cv {cv:.2f}" if cv > NOISY_CV else ""


def markdown(data: dict[str, Any]) -> str:
    head = (
        "| arch | ratio | round_to | threads | params | MACs (G) | MAC red. | "
        "latency ms (A → B) | speed-up | efficiency | paired speed-up (eff.) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in data["rows"]:
        goal = r["ratio"] == GOAL_RATIO
        eff = f"{r['efficiency']:.2f}"
        if goal:
            eff += " ✓" if r["efficiency"] >= GOAL_EFFICIENCY else " ✗"
        lines.append(
            f"| {r['arch']} | {r['ratio']} | {r['round_to']} | {r['threads']} | "
            f"{r['params_before'] / 1e6:.2f}M → {r['params_after'] / 1e6:.2f}M | "
            f"{r['macs_before'] / 1e9:.3f} → {r['macs_after'] / 1e9:.3f} | "
            f"{r['mac_reduction']:.2f}× | "
            f"{r['latency_before_ms']:.2f} → {r['latency_after_ms']:.2f}{_noisy(r)} | "
            f"{r['speedup']:.2f}× | {eff} | "
            f"{r['speedup_paired']:.2f}× ({r['efficiency_paired']:.2f}) |"
        )
    s = data["settings"]
    lines.append("")
    lines.append(
        f"Input {'×'.join(map(str, s['input_shape']))}, median of {s['runs']} interleaved runs "
        f"per session (warm-up {s['warmup']}), onnxruntime {data['environment']['onnxruntime']} "
        f"CPU, {data['environment']['cpu_count']} cores. Speed-up = ratio of medians; paired = "
        "median of back-to-back A/B ratios. Efficiency = speed-up / MAC reduction; "
        f"goal ≥ {GOAL_EFFICIENCY} at ratio {GOAL_RATIO} (✓/✗). ⚠ marks timings whose "
        f"coefficient of variation exceeds {NOISY_CV}."
    )
    env = data["environment"]
    load = max(env["load_average_before"][0], env["load_average_after"][0])
    if env["cpu_count"] and load > env["cpu_count"]:
        lines.append(
            f"**Warning:** load average {load:.1f} on {env['cpu_count']} cores during the run: "
            "other processes competed for the CPU, absolute latencies (and multi-thread "
            "numbers most) are inflated; re-run on an idle machine."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from edgeprune._io import atomic_write_json, atomic_write_text

    data = run(args)
    atomic_write_json(args.out, data)
    table = markdown(data)
    if args.md:
        atomic_write_text(args.md, table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
