"""Benchmark edgeprune's measurement against a bare onnxruntime timing loop.

For each artifact, in interleaved rounds: (1) a bare loop in a fresh process — onnxruntime
InferenceSession, same input, warm-up, then ``perf_counter`` around ``session.run``; (2)
``edgeprune.devices.measure.measure_files`` on the ``local`` target (runner in a subprocess,
this venv's Python); (3) ``measure_files`` over SSH to a loopback sshd (started here with
tests/_sshd.py, system python3 + the device package dir). Reported: median p50 over the
rounds, the ratio of each edgeprune p50 to the bare p50 (goal: within ±10 %), and the wall time
of a whole measurement (SSH overhead = SSH wall − local wall, with connect/upload/run
breakdown).

    .venv/bin/python scripts/bench_measure.py [--rounds 3] [--runs 100] [--out PATH.json]

Needs root (or a usable sshd) for the SSH column; without it the SSH column is skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def build_models(folder: Path) -> list[tuple[str, Path, tuple[int, ...]]]:
    """Two conv stacks of different cost, made with onnx.helper (no torch needed)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def convnet(name: str, widths: list[int], size: int) -> tuple[str, Path, tuple[int, ...]]:
        rng = np.random.RandomState(0)
        inits, nodes, prev, cin = [], [], "x", 3
        for i, cout in enumerate(widths):
            w = (rng.randn(cout, cin, 3, 3) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
            inits += [numpy_helper.from_array(w, f"w{i}"),
                      numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")]
            stride = 2 if i % 2 == 0 else 1
            nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"],
                                       pads=[1, 1, 1, 1], strides=[stride, stride]),
                      helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
            prev, cin = f"r{i}", cout
        nodes.append(helper.make_node("GlobalAveragePool", [prev], ["y"]))
        shape = (1, 3, size, size)
        graph = helper.make_graph(
            nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = folder / f"{name}.onnx"
        onnx.save_model(model, str(path))
        return name, path, shape

    return [convnet("convnet-small", [16, 32, 32, 64], 112),
            convnet("convnet-medium", [32, 64, 64, 128, 128, 256], 224)]


BARE = """
import json, sys, time, statistics
import numpy as np
import onnxruntime as ort
path, shape, warmup, runs = sys.argv[1], [int(d) for d in sys.argv[2].split("x")], \\
    int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
feed = {"x": np.random.RandomState(0).standard_normal(shape).astype(np.float32)}
for _ in range(warmup + 1):
    sess.run(None, feed)
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    sess.run(None, feed)
    times.append(time.perf_counter() - t0)
print(statistics.median(times) * 1000.0)
"""


def bare_p50(path: Path, shape: tuple[int, ...], warmup: int, runs: int) -> float:
    """The independent reference: a minimal loop in its own fresh process (this venv)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", BARE, str(path), "x".join(map(str, shape)),
                          str(warmup), str(runs)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", default="bench-results/measure.json")
    ap.add_argument("--no-ssh", action="store_true")
    args = ap.parse_args()

    os.environ["EDGEPRUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgeprune-bench-cache-")
    from edgeprune.devices.measure import MeasureSettings, measure_files
    from edgeprune.devices.targets import load_target

    tmp = Path(tempfile.mkdtemp(prefix="edgeprune-bench-"))
    models = build_models(tmp)
    settings = MeasureSettings(runs=args.runs, warmup=args.warmup, max_repeats=0,
                               use_cache=False, cv_threshold=1.0)
    local = dataclasses.replace(load_target("local"), profile=None)
    server = None
    ssh_target = None
    if not args.no_ssh:
        from tests._sshd import SSHServer, skip_reason

        reason = skip_reason()
        if reason is None:
            server = SSHServer().start()
            ssh_target = server.target(server.write_known_hosts(server.root / "known_hosts"))
        else:
            print(f"SSH column skipped: {reason}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    try:
        for name, path, shape in models:
            shp = "x".join(map(str, shape))
            s = dataclasses.replace(settings, input_shapes=(shp,))
            samples: dict[str, list[float]] = {"bare": [], "local": [], "ssh": []}
            walls: dict[str, list[float]] = {"local": [], "ssh": []}
            breakdown: dict[str, float] = {}
            for rnd in range(args.rounds):
                print(f"{name}: round {rnd + 1}/{args.rounds}", file=sys.stderr)
                samples["bare"].append(bare_p50(path, shape, args.warmup, args.runs))
                r = measure_files(path, local, s)
                samples["local"].append(r.p50_ms)
                walls["local"].append(r.wall_s)
                if ssh_target is not None:
                    r = measure_files(path, ssh_target, s)
                    samples["ssh"].append(r.p50_ms)
                    walls["ssh"].append(r.wall_s)
                    breakdown = r.timings_s
            bare = statistics.median(samples["bare"])
            row: dict[str, Any] = {"model": name, "input": shp, "runs": args.runs,
                                   "rounds": args.rounds, "bare_p50_ms": bare,
                                   "local_p50_ms": statistics.median(samples["local"]),
                                   "samples_p50_ms": samples,
                                   "local_wall_s": statistics.median(walls["local"])}
            row["local_ratio"] = row["local_p50_ms"] / bare
            if samples["ssh"]:
                row["ssh_p50_ms"] = statistics.median(samples["ssh"])
                row["ssh_ratio"] = row["ssh_p50_ms"] / bare
                row["ssh_wall_s"] = statistics.median(walls["ssh"])
                row["ssh_overhead_wall_s"] = row["ssh_wall_s"] - row["local_wall_s"]
                row["ssh_last_breakdown_s"] = breakdown
            rows.append(row)
    finally:
        if server is not None:
            server.cleanup()
    doc = {"what": "median over rounds of p50 latency; bare = minimal onnxruntime loop in a "
           "fresh process (venv Python); local = edgeprune local target (runner subprocess, venv "
           "Python); ssh = edgeprune over loopback sshd (system /usr/bin/python3 with the "
           "device package dir); same onnxruntime version, default threads, CPU provider",
           "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
           "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(rows)
    out.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"\nwrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | input | bare p50 ms | local p50 ms (ratio) | ssh p50 ms (ratio) | "
             "local wall s | ssh wall s | ssh overhead s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ssh = (f"{r['ssh_p50_ms']:.3f} ({r['ssh_ratio']:.3f})" if "ssh_p50_ms" in r else "-")
        lines.append(
            f"| {r['model']} | {r['input']} | {r['bare_p50_ms']:.3f} | "
            f"{r['local_p50_ms']:.3f} ({r['local_ratio']:.3f}) | {ssh} | "
            f"{r['local_wall_s']:.2f} | {r.get('ssh_wall_s', float('nan')):.2f} | "
            f"{r.get('ssh_overhead_wall_s', float('nan')):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
