"""``artifacts._quiet``: one process-wide capture that several threads share safely — each caller
gets its own text and notes, everyone else's output goes where it went, and everything is put back
when the last caller leaves. Then the real thing: two ONNX exports in two threads at once."""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.artifacts._quiet import Capture, quiet


def _fd_identity() -> list[tuple[int, int]]:
    return [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)]


def _in_threads(*jobs: Callable[[], object]) -> list[object]:
    """Run each job in its own thread, all released at once; re-raise the first failure."""
    barrier = threading.Barrier(len(jobs))
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int, job: Callable[[], object]) -> None:
        try:
            barrier.wait()
            results[i] = job()
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    return results


def test_each_thread_gets_its_own_output_and_notes(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    streams = (sys.stdout, sys.stderr)
    logger = logging.getLogger("edgeprune_quiet_test.child")
    handlers = list(logging.getLogger("edgeprune_quiet_test").handlers)
    entered = threading.Barrier(3)  # both captures active, and the main thread outside them
    printed = threading.Event()
    captures: dict[str, Capture] = {}

    def job(tag: str) -> None:
        with quiet(("edgeprune_quiet_test",)) as capture:
            entered.wait(timeout=30)
            print(f"print from {tag}")
            print(f"stderr from {tag}", file=sys.stderr)
            logger.warning("logged by %s", tag)
            warnings.warn(f"warned by {tag}", UserWarning, stacklevel=1)
            printed.wait(timeout=30)
        captures[tag] = capture

    threads = [threading.Thread(target=job, args=(tag,)) for tag in ("a", "b")]
    for t in threads:
        t.start()
    entered.wait(timeout=30)
    print("main thread is not captured")
    logger.warning("main thread logs as before")
    printed.set()
    for t in threads:
        t.join(timeout=30)
    for tag in ("a", "b"):
        assert captures[tag].text.getvalue() == f"print from {tag}\nstderr from {tag}\n"
        assert captures[tag].notes == [f"logged by {tag}", f"UserWarning: warned by {tag}"]
    assert (sys.stdout, sys.stderr) == streams
    assert logging.getLogger("edgeprune_quiet_test").handlers == handlers
    assert capfd.readouterr() == ("main thread is not captured\n", "")
    # the main thread's record reached the root logger's handlers (pytest's here), as without us
    assert [r.getMessage() for r in caplog.records] == ["main thread logs as before"]


def test_parked_descriptors_are_restored_once_everyone_left(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """C++ code writes to fds 1/2 directly: parked while any caller wants that, for everyone."""
    before = _fd_identity()
    env_before = os.environ.get("EDGEPRUNE_QUIET_TEST")

    def job(tag: str) -> str:
        with quiet(fds=True, env={"EDGEPRUNE_QUIET_TEST": "0"}):
            os.write(1, f"fd 1 from {tag}\n".encode())
            os.write(2, f"fd 2 from {tag}\n".encode())
            assert os.environ["EDGEPRUNE_QUIET_TEST"] == "0"
            return tag

    assert _in_threads(lambda: job("a"), lambda: job("b")) == ["a", "b"]
    assert _fd_identity() == before
    assert os.environ.get("EDGEPRUNE_QUIET_TEST") == env_before
    os.write(1, b"visible again\n")
    assert capfd.readouterr() == ("visible again\n", "")


def test_nested_in_one_thread_the_innermost_capture_receives() -> None:
    with quiet() as outer:
        print("outer")
        with quiet() as inner:
            print("inner")
        print("outer again")
    assert (outer.text.getvalue(), inner.text.getvalue()) == ("outer\nouter again\n", "inner\n")


def _tiny_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def test_two_exports_in_two_threads_both_succeed_and_stay_quiet(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from edgeprune.artifacts.onnx_export import export_onnx, load_onnx_session
    from edgeprune.models.load import load_model

    capfd.readouterr()
    streams, fds = (sys.stdout, sys.stderr), _fd_identity()
    torch_handlers = list(logging.getLogger("torch").handlers)
    mnist = load_model("builtin:mnist-cnn").eval()
    jobs = [
        (mnist, torch.randn(2, 1, 28, 28), tmp_path / "mnist.onnx"),
        (_tiny_convnet(), torch.randn(1, 3, 16, 16), tmp_path / "tiny.onnx"),
    ]
    results = _in_threads(*[
        (lambda m=m, x=x, p=p: export_onnx(m, x, p)) for m, x, p in jobs  # type: ignore[misc]
    ])
    for (model, x, path), result in zip(jobs, results, strict=True):
        assert result.path == str(path) and result.max_abs_diff <= 1e-4  # type: ignore[union-attr]
        # tracing one at a time: neither export sees the other's side effects
        assert not any("side effects" in n for n in result.notes)  # type: ignore[union-attr]
        out = load_onnx_session(path).run(None, {"input": x.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), atol=1e-4, rtol=1e-3)
    assert capfd.readouterr() == ("", "")  # nothing leaked, from either thread
    assert (sys.stdout, sys.stderr) == streams and _fd_identity() == fds
    assert logging.getLogger("torch").handlers == torch_handlers
