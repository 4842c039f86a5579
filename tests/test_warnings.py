"""Warnings routed per thread (edgeprune._warnings): threads that silence or record warnings at
the same time never leave the process's filters changed."""

from __future__ import annotations

import threading
import warnings

import torch

from edgeprune._warnings import routed


def test_each_thread_gets_its_own_warnings_and_others_show_as_before() -> None:
    before_filters, before_show = list(warnings.filters), warnings.showwarning
    got: dict[str, list[str]] = {"a": [], "b": []}
    inside = threading.Barrier(2)

    def work(name: str) -> None:
        with routed(lambda w: got[name].append(str(w.message))):
            inside.wait()
            warnings.warn(f"from {name}", UserWarning, stacklevel=1)
            inside.wait()

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {"a": ["from a"], "b": ["from b"]}
    assert warnings.filters == before_filters and warnings.showwarning is before_show


def test_interleaved_enter_and_exit_across_threads_restore_the_filters() -> None:
    """The race catch_warnings has: A enters, B enters, A leaves, B leaves. The filters and
    showwarning afterwards are what they were, and a warning shows again."""
    before_filters, before_show = list(warnings.filters), warnings.showwarning
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        with routed(None):
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b() -> None:
        a_in.wait(5)
        with routed(None):
            b_in.set()
            a_out.wait(5)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert warnings.filters == before_filters and warnings.showwarning is before_show
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.warn("still shown", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["still shown"]


def test_the_engine_and_an_export_at_once_leave_warnings_working(tmp_path) -> None:
    """The reviewer's repro: one thread lists Torch-Pruning groups (warnings dropped) while another
    exports (warnings recorded as notes); afterwards warnings are shown again."""
    from edgeprune.artifacts.onnx_export import export_onnx
    from edgeprune.models.load import load_model
    from edgeprune.models.torchvision_compat import import_torchvision
    from edgeprune.pruning import engine

    tv = import_torchvision()
    # libraries add filters of their own when first imported (sympy, ...): import them first
    export_onnx(load_model("builtin:mnist-cnn"), torch.zeros(1, 1, 28, 28), tmp_path / "w.onnx")
    engine.build_graph(tv.models.resnet18(num_classes=10).eval(), torch.zeros(1, 3, 32, 32))
    before_filters, before_show = list(warnings.filters), warnings.showwarning
    errors: list[BaseException] = []

    def prune_side() -> None:
        try:
            for _ in range(3):
                model = tv.models.resnet18(num_classes=10).eval()
                graph = engine.build_graph(model, torch.zeros(1, 3, 32, 32))
                assert engine.channel_groups(graph)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def export_side() -> None:
        try:
            for i in range(2):
                export_onnx(load_model("builtin:mnist-cnn"), torch.zeros(1, 1, 28, 28),
                            tmp_path / f"m{i}.onnx")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=prune_side), threading.Thread(target=export_side)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert warnings.filters == before_filters and warnings.showwarning is before_show
