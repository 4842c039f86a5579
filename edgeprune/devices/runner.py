#!/usr/bin/env python3
"""edgeprune's on-device runner: time one model in this process and print one JSON result.

This file is copied to the device as is and run with the device's own Python. It must therefore
stay self-contained: the standard library, numpy, the runtime (onnxruntime, or ai_edge_litert /
tflite_runtime for .tflite) and psutil when present — and Python 3.6 syntax (Jetson Nano's
JetPack 4 ships 3.6): no dataclasses, no walrus, no ``f"{x=}"``, no ``from __future__`` imports.
A test parses it with ``ast.parse(source, feature_version=(3, 6))``.

Protocol: the last stdout line starting with ``EDGEPRUNE-RESULT `` carries the JSON document.
On failure the document is ``{"error": {"kind": ..., "message": ..., "package": ...}}`` and the
exit status is 3; kinds are runtime_missing, bad_args, load_failed, run_failed, out_of_memory.

Timing: inputs are generated before timing (numpy, fixed seed); only ``session.run`` (or
``invoke``) sits between the two ``perf_counter`` calls. First run and warm-up runs are excluded.
"""

import argparse
import glob
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback

MARKER = "EDGEPRUNE-RESULT "
RUNNER_VERSION = 1
EXIT_FAILED = 3


class RunnerError(Exception):
    def __init__(self, kind, message, package=None):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.package = package


# --- device facts ------------------------------------------------------------------------------


def _read(path, limit=4096):
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace").replace("\x00", "").strip()
    except (OSError, IOError):
        return None


def _cpu_model():
    model = _read("/proc/device-tree/model")  # Raspberry Pi and Jetson boards
    text = _read("/proc/cpuinfo", 65536) or ""
    cpu = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model", "processor") and value.strip():
            if key == "processor" and value.strip().isdigit():
                continue
            cpu = value.strip()
            break
    if cpu is None:
        cpu = platform.processor() or None
    return cpu, model


def _meminfo_mb():
    text = _read("/proc/meminfo", 8192) or ""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("MemTotal:", "MemAvailable:"):
            out[parts[0][:-1]] = round(int(parts[1]) / 1024.0, 1)
    return out.get("MemTotal"), out.get("MemAvailable")


def _cpu_freq():
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    cur = _read(base + "scaling_cur_freq")
    mx = _read(base + "cpuinfo_max_freq")
    gov = _read(base + "scaling_governor")

    def mhz(v):
        try:
            return round(int(v) / 1000.0, 1)
        except (TypeError, ValueError):
            return None

    return mhz(cur), mhz(mx), gov


def _temperatures():
    """Every readable thermal zone in degrees C (Pi: cpu-thermal; Jetson: CPU-therm, ...)."""
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        raw = _read(os.path.join(zone, "temp"))
        kind = _read(os.path.join(zone, "type")) or os.path.basename(zone)
        try:
            temps[kind] = round(int(raw) / 1000.0, 1)
        except (TypeError, ValueError):
            continue
    return temps


def device_facts():
    cpu, board = _cpu_model()
    total, available = _meminfo_mb()
    cur, mx, gov = _cpu_freq()
    temps = _temperatures()
    facts = {
        "hostname": platform.node(),
        "system": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "board": board,
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_total_mb": total,
        "memory_available_mb": available,
        "cpu_freq_mhz": cur,
        "cpu_freq_max_mhz": mx,
        "cpu_governor": gov,
        "temperature_c": max(temps.values()) if temps else None,
        "thermal_zones_c": temps,
        "python": platform.python_version(),
        "python_executable": sys.executable,
    }
    if hasattr(os, "sched_getaffinity"):
        facts["cores_usable"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        try:
            facts["load_avg_1m"] = round(os.getloadavg()[0], 2)
        except OSError:
            pass
    throttled = _read("/sys/devices/platform/soc/soc:firmware/get_throttled")  # newer Pi kernels
    if throttled is not None:
        facts["pi_throttled"] = throttled
    tegra = _read("/etc/nv_tegra_release", 512)  # Jetson L4T release line
    if tegra:
        facts["l4t_release"] = tegra.splitlines()[0]
    return facts


def _version_of(module, dist):
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib import metadata  # Python 3.8+
        return metadata.version(dist)
    except Exception:
        return None


def runtimes_present():
    """Which packages the runner can use here, with versions (``targets check``)."""
    found = {}
    for mod_name, dist in (("numpy", "numpy"), ("onnxruntime", "onnxruntime"),
                           ("ai_edge_litert", "ai-edge-litert"),
                           ("tflite_runtime", "tflite-runtime"), ("psutil", "psutil")):
        try:
            module = __import__(mod_name)
        except Exception as exc:  # ImportError, or a broken install raising something else
            found[mod_name] = {"present": False, "error": str(exc).splitlines()[0][:200]}
            continue
        entry = {"present": True, "version": _version_of(module, dist)}
        if mod_name == "onnxruntime":
            try:
                entry["providers"] = list(module.get_available_providers())
            except Exception:
                pass
        found[mod_name] = entry
    return found


# --- memory ------------------------------------------------------------------------------------


def peak_rss_mb():
    """Peak resident set size of this process in MiB, and where the number came from.

    Linux's VmHWM is the exact high-water mark; psutil has a peak only on Windows (peak_wset);
    getrusage's ru_maxrss is KiB on Linux and bytes on macOS.
    """
    text = _read("/proc/self/status", 16384) or ""
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024.0, 2), "proc-status-VmHWM"
    try:
        import psutil
        info = psutil.Process().memory_info()
        peak = getattr(info, "peak_wset", None)
        if peak:
            return round(peak / 1048576.0, 2), "psutil-peak_wset"
    except Exception:
        pass
    try:
        import resource
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1048576.0 if sys.platform == "darwin" else 1024.0
        return round(maxrss / scale, 2), "getrusage"
    except Exception:
        return None, None


def current_rss_mb():
    try:
        import psutil
        return round(psutil.Process().memory_info().rss / 1048576.0, 2)
    except Exception:
        pass
    text = _read("/proc/self/status", 16384) or ""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024.0, 2)
    return None


# --- statistics --------------------------------------------------------------------------------


def percentile(sorted_values, q):
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def summarize(times_s):
    ms = sorted(t * 1000.0 for t in times_s)
    n = len(ms)
    mean = sum(ms) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in ms) / n)
    out = {"runs": n, "mean_ms": mean, "std_ms": std, "min_ms": ms[0], "max_ms": ms[-1],
           "cv": (std / mean) if mean > 0 else 0.0}
    for q in (50, 90, 95, 99):
        out["p%d_ms" % q] = percentile(ms, q)
    # Robust coefficient of variation: IQR / 1.349 estimates the std of the bulk of the runs;
    # a single preempted run (common on a busy board) does not make a steady result "noisy".
    iqr = percentile(ms, 75) - percentile(ms, 25)
    out["robust_cv"] = (iqr / 1.349 / out["p50_ms"]) if out["p50_ms"] > 0 else 0.0
    return out


# --- inputs ------------------------------------------------------------------------------------


def parse_shape(text):
    try:
        dims = [int(d) for d in text.lower().replace(",", "x").split("x") if d.strip()]
    except ValueError:
        raise RunnerError("bad_args",
                          "cannot parse input shape %r (write it as 1x3x224x224)" % text)
    if not dims or any(d < 1 for d in dims):
        raise RunnerError("bad_args", "input shape %r must have positive dimensions" % text)
    return dims


def resolve_shape(name, declared, overrides, default_shape):
    """Concrete shape: an override for this input (or for all), else dynamic dims -> default."""
    if name in overrides:
        return overrides[name]
    if "*" in overrides:
        return overrides["*"]
    dims = []
    for i, d in enumerate(declared):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif default_shape and len(default_shape) == len(declared):
            dims.append(default_shape[i])
        else:
            dims.append(1)
    return dims


def make_input(np, rng, shape, dtype):
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.randint(0, 2, size=shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.randint(0, 10, size=shape).astype(dtype)
    raise RunnerError("bad_args", "cannot generate inputs of type %s" % dtype)


ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
             "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


# --- backends ----------------------------------------------------------------------------------


class OrtBackend(object):
    name = "onnxruntime"

    def __init__(self, args):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RunnerError("runtime_missing", "onnxruntime is not installed for %s (%s)"
                              % (sys.executable, exc), package="onnxruntime")
        self.ort = ort
        self.version = ort.__version__
        self.args = args
        providers = [p for p in (args.providers or "CPUExecutionProvider").split(",") if p]
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise RunnerError("runtime_missing", "execution provider %s not available (have: %s)"
                              % (", ".join(missing), ", ".join(available)),
                              package="an onnxruntime build with " + missing[0])
        self.providers = providers

    def options(self, profile_prefix=None):
        so = self.ort.SessionOptions()
        if self.args.threads:
            so.intra_op_num_threads = self.args.threads
            so.inter_op_num_threads = 1
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return so

    def load(self, path, profile_prefix=None):
        try:
            sess = self.ort.InferenceSession(path, sess_options=self.options(profile_prefix),
                                             providers=self.providers)
        except MemoryError:
            raise
        except Exception as exc:
            text = str(exc)
            if "bad_alloc" in text or "Failed to allocate" in text:
                raise RunnerError("out_of_memory", "onnxruntime ran out of memory loading the "
                                  "model: %s" % text.splitlines()[0][:300])
            raise RunnerError("load_failed", "onnxruntime cannot load %s: %s"
                              % (os.path.basename(path), text.strip().splitlines()[0][:400]
                                 if text.strip() else type(exc).__name__))
        self.sess = sess
        self.output_names = [o.name for o in sess.get_outputs()]
        return sess

    def inputs(self):
        return [(i.name, list(i.shape), ORT_TYPES.get(i.type)) for i in self.sess.get_inputs()]

    def feed(self, feeds):
        self.feeds = feeds

    def run_once(self):
        self.sess.run(self.output_names, self.feeds)

    def threads_used(self):
        return self.args.threads or None


TFLITE_RUNTIMES = (("ai_edge_litert.interpreter", "ai-edge-litert"),
                   ("tflite_runtime.interpreter", "tflite-runtime"))


def tflite_package_hint():
    """The TFLite runtime to install for this Python: ai-edge-litert (Python >= 3.10, 64-bit,
    numpy 2 fine) or else tflite-runtime (Python <= 3.11, numpy < 2; 32-bit Raspberry Pi OS)."""
    machine = platform.machine().lower()
    if sys.version_info >= (3, 10) and not machine.startswith(("armv6", "armv7", "arm32")):
        return "ai-edge-litert"
    return "tflite-runtime"


class TFLiteBackend(object):
    """ai_edge_litert (LiteRT) or tflite_runtime: the same ``Interpreter`` API."""

    def __init__(self, args):
        Interpreter = None
        errors = []
        for mod_name, dist in TFLITE_RUNTIMES:
            try:
                module = __import__(mod_name, fromlist=["Interpreter"])
                Interpreter = module.Interpreter
                top = __import__(mod_name.split(".")[0])
                self.name = dist
                self.version = _version_of(top, dist)
                break
            except Exception as exc:  # ImportError; or a numpy-1 build under numpy 2
                text = str(exc).strip().splitlines()
                errors.append("%s: %s" % (dist, text[0][:200] if text else type(exc).__name__))
        if Interpreter is None:
            raise RunnerError(
                "runtime_missing",
                "no TFLite runtime for %s (Python %s, %s): install ai-edge-litert (Python >= 3.10, "
                "numpy 2) or tflite-runtime (Python <= 3.11 with numpy < 2) [%s]"
                % (sys.executable, platform.python_version(), platform.machine(),
                   "; ".join(errors)),
                package=tflite_package_hint())
        self.Interpreter = Interpreter
        self.args = args
        self.providers = []
        self.threads = args.threads or None

    def load(self, path, profile_prefix=None):
        try:
            kwargs = {"model_path": path}
            if self.args.threads:
                kwargs["num_threads"] = self.args.threads
            try:
                interp = self.Interpreter(**kwargs)
            except TypeError:
                if "num_threads" not in kwargs:
                    raise
                # tflite_runtime before 2.3 has no num_threads: its default, and say so
                del kwargs["num_threads"]
                interp = self.Interpreter(**kwargs)
                self.threads = None
            interp.allocate_tensors()
        except MemoryError:
            raise
        except Exception as exc:
            text = str(exc).strip()
            if "bad_alloc" in text or "Failed to allocate" in text:
                raise RunnerError("out_of_memory", "%s ran out of memory loading the model: %s"
                                  % (self.name, text.splitlines()[0][:300]))
            raise RunnerError("load_failed", "%s cannot load %s: %s" % (
                self.name, os.path.basename(path),
                " ".join(text.split())[:400] if text else type(exc).__name__))
        self.interp = interp
        self.out_idx = [d["index"] for d in interp.get_output_details()]
        return interp

    def inputs(self):
        import numpy as np

        out = []
        for d in self.interp.get_input_details():
            sig = d.get("shape_signature")
            shape = [int(x) for x in (sig if sig is not None and len(sig) else d["shape"])]
            try:
                dt = np.dtype(d["dtype"])  # .name: "bool" under numpy 1 and 2 (not "bool_")
                dtype = dt.name if dt.kind in "fbiu" else None
            except TypeError:
                dtype = None  # strings, resources, variants: cannot generate inputs
            out.append((d["name"], [x if x > 0 else None for x in shape], dtype))
        return out

    def feed(self, feeds):
        details = self.interp.get_input_details()
        resized = False
        for d in details:
            arr = feeds[d["name"]]
            if list(d["shape"]) != list(arr.shape):
                self.interp.resize_tensor_input(d["index"], list(arr.shape))
                resized = True
        if resized:
            try:
                self.interp.allocate_tensors()
            except Exception as exc:
                text = " ".join(str(exc).split())
                raise RunnerError("bad_args", "%s cannot run the model with input shapes %s: %s"
                                  % (self.name, ", ".join("%s=%s" % (k, "x".join(
                                      str(n) for n in v.shape)) for k, v in feeds.items()),
                                     text[:300] or type(exc).__name__))
        self.pairs = [(d["index"], feeds[d["name"]]) for d in self.interp.get_input_details()]

    def run_once(self):
        interp = self.interp
        for idx, arr in self.pairs:
            interp.set_tensor(idx, arr)
        interp.invoke()
        for idx in self.out_idx:
            interp.get_tensor(idx)

    def threads_used(self):
        return self.threads


def runtime_kind(args):
    kind = args.runtime
    if kind == "auto":
        kind = "tflite" if args.model.lower().endswith(".tflite") else "onnxruntime"
    if kind not in ("onnxruntime", "tflite"):
        raise RunnerError("bad_args", "unknown runtime %r (use auto, onnxruntime or tflite)" % kind)
    return kind


def pick_backend(args):
    if runtime_kind(args) == "onnxruntime":
        return OrtBackend(args)
    return TFLiteBackend(args)


# --- per-operator breakdown (onnxruntime profiling) ---------------------------------------------


def per_op_breakdown(backend, path, feeds, runs):
    """Run a second, profiled session so profiling never slows the timed runs."""
    tmp = tempfile.mkdtemp(prefix="edgeprune-prof-")
    try:
        backend.load(path, profile_prefix=os.path.join(tmp, "ort"))
        backend.feed(feeds)
        backend.run_once()  # first run: allocations, not representative
        for _ in range(runs):
            backend.run_once()
        trace = backend.sess.end_profiling()
        with open(trace) as fh:
            events = json.load(fh)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    by_type = {}
    by_node = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        op = (ev.get("args") or {}).get("op_name", "?")
        node = ev["name"][: -len("_kernel_time")]
        dur_ms = float(ev.get("dur", 0)) / 1000.0
        t = by_type.setdefault(op, [0.0, 0])
        t[0] += dur_ms
        t[1] += 1
        n = by_node.setdefault(node, [op, 0.0])
        n[1] += dur_ms
    total = sum(v[0] for v in by_type.values()) or 1.0
    per_run = float(runs + 1)
    ops = [{"op_type": op, "calls_per_run": int(round(v[1] / per_run)),
            "mean_ms_per_run": v[0] / per_run, "share": v[0] / total}
           for op, v in by_type.items()]
    ops.sort(key=lambda d: -d["mean_ms_per_run"])
    nodes = [{"node": name, "op_type": v[0], "mean_ms_per_run": v[1] / per_run}
             for name, v in by_node.items()]
    nodes.sort(key=lambda d: -d["mean_ms_per_run"])
    return {"runs": runs + 1, "by_op_type": ops, "top_nodes": nodes[:20]}


# --- main --------------------------------------------------------------------------------------


def measure(args):
    rss_start = current_rss_mb()
    facts = device_facts()
    if not os.path.isfile(args.model):
        raise RunnerError("bad_args", "model file %r not found" % args.model)
    if args.per_op and runtime_kind(args) != "onnxruntime":
        raise RunnerError("bad_args", "per-operator timing (--per-op) is ONNX-only (onnxruntime "
                          "profiling); TFLite has no per-operator breakdown here: measure %s "
                          "without --per-op, or measure the model's .onnx export with --per-op"
                          % os.path.basename(args.model))
    try:
        import numpy as np
    except ImportError as exc:
        raise RunnerError("runtime_missing", "numpy is not installed for %s (%s)"
                          % (sys.executable, exc), package="numpy")
    t0 = time.perf_counter()
    backend = pick_backend(args)
    import_ms = (time.perf_counter() - t0) * 1000.0
    rss_before_load = current_rss_mb()

    t0 = time.perf_counter()
    backend.load(args.model)
    session_create_ms = (time.perf_counter() - t0) * 1000.0

    overrides = {}
    for item in args.input_shape or []:
        name, sep, shape = item.rpartition("=")
        overrides[name if sep else "*"] = parse_shape(shape)
    default_shape = parse_shape(args.default_shape) if args.default_shape else None
    rng = np.random.RandomState(args.seed)
    feeds = {}
    shapes = {}
    for name, declared, dtype_name in backend.inputs():
        if dtype_name is None:
            raise RunnerError("bad_args", "input %r has an unsupported type" % name)
        shape = resolve_shape(name, declared, overrides, default_shape)
        feeds[name] = make_input(np, rng, shape, np.dtype(dtype_name))
        shapes[name] = {"shape": shape, "dtype": dtype_name,
                        "declared": [d if isinstance(d, int) else str(d) for d in declared]}
    backend.feed(feeds)

    run = backend.run_once
    perf = time.perf_counter
    try:
        t0 = perf()
        run()
        first_run_ms = (perf() - t0) * 1000.0
        for _ in range(args.warmup):
            run()
        times = []
        cap = args.max_seconds
        min_runs = min(args.runs, args.min_runs)
        start = perf()
        for _ in range(args.runs):
            t0 = perf()
            run()
            t1 = perf()
            times.append(t1 - t0)
            if cap and t1 - start > cap and len(times) >= min_runs:
                break
    except (MemoryError, RunnerError):
        raise
    except Exception as exc:
        text = str(exc).strip()
        raise RunnerError("run_failed", "%s failed running the model: %s" % (
            backend.name, text.splitlines()[0][:400] if text else type(exc).__name__))
    stats = summarize(times)
    peak, peak_source = peak_rss_mb()
    cur_after, _max, _gov = _cpu_freq()
    temps_after = _temperatures()
    result = {
        "runner_version": RUNNER_VERSION,
        "model": os.path.basename(args.model),
        "runtime": backend.name,
        "runtime_version": backend.version,
        "providers": backend.providers,
        "threads": backend.threads_used(),
        "numpy_version": np.__version__,
        "inputs": shapes,
        "warmup": args.warmup,
        "runs_requested": args.runs,
        "capped": len(times) < args.runs,
        "import_ms": import_ms,
        "session_create_ms": session_create_ms,
        "first_run_ms": first_run_ms,
        "peak_rss_mb": peak,
        "peak_rss_source": peak_source,
        "rss_start_mb": rss_start,
        "rss_before_load_mb": rss_before_load,
        "rss_end_mb": current_rss_mb(),
        "device": facts,
        "cpu_freq_end_mhz": cur_after,
        "temperature_end_c": max(temps_after.values()) if temps_after else None,
        "times_ms": [round(t * 1000.0, 4) for t in times] if args.keep_times else None,
    }
    result.update(stats)
    if args.per_op:  # onnxruntime only: refused above for TFLite
        result["per_op"] = per_op_breakdown(backend, args.model, feeds,
                                            max(1, min(args.runs, 20)))
    return result


def build_parser():
    p = argparse.ArgumentParser(description="edgeprune on-device runner")
    p.add_argument("--model", help="path to the .onnx or .tflite file")
    p.add_argument("--probe", action="store_true", help="report device facts and runtimes only")
    p.add_argument("--runtime", default="auto", help="auto, onnxruntime or tflite")
    p.add_argument("--providers", default=None, help="onnxruntime providers, comma-separated")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = default)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--min-runs", type=int, default=10, help="runs kept even past --max-seconds")
    p.add_argument("--max-seconds", type=float, default=60.0, help="cap on timed runs (0 = none)")
    p.add_argument("--input-shape", action="append", help="NAME=1x3x224x224 or 1x3x224x224")
    p.add_argument("--default-shape", default=None, help="fills dynamic dims of same-rank inputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-op", action="store_true",
                   help="onnxruntime per-operator breakdown (ONNX only)")
    p.add_argument("--keep-times", action="store_true", help="include every run's time")
    return p


def emit(doc):
    sys.stdout.write("\n" + MARKER + json.dumps(doc, sort_keys=False) + "\n")
    sys.stdout.flush()


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.probe:
            emit({"runner_version": RUNNER_VERSION, "device": device_facts(),
                  "runtimes": runtimes_present()})
            return 0
        if not args.model:
            raise RunnerError("bad_args", "--model is required")
        if args.runs < 1 or args.warmup < 0:
            raise RunnerError("bad_args", "--runs must be >= 1 and --warmup >= 0")
        emit(measure(args))
        return 0
    except RunnerError as exc:
        emit({"error": {"kind": exc.kind, "message": exc.message, "package": exc.package}})
    except MemoryError:
        emit({"error": {"kind": "out_of_memory", "message": "MemoryError in the runner",
                        "package": None}})
    except Exception as exc:
        emit({"error": {"kind": "internal", "message": "%s: %s" % (type(exc).__name__, exc),
                        "package": None, "traceback": traceback.format_exc()[-2000:]}})
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
