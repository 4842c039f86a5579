"""The one comparison of an exported artifact with PyTorch, used by ONNX and TFLite alike.

An artifact passes when every output element satisfies ``|artifact − pytorch| <= atol +
rtol·|pytorch|`` (NaN fails) on every batch of real inputs. The runtime (onnxruntime,
ai-edge-litert) is hidden behind a callable from a batch of input tensors to its output arrays,
so both formats give the same numbers and the same errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeprune.errors import ParityError, UsageError
from edgeprune.models.cost import Inputs, as_input_tuple

__all__ = [
    "Comparison",
    "check_batches",
    "check_tolerances",
    "compare_outputs",
    "flatten_outputs",
    "tiny_output_note",
]

Batch = tuple[torch.Tensor, ...]
RunArtifact = Callable[[Batch], Sequence[Any]]  # a batch of inputs -> the artifact's outputs


@dataclass(frozen=True)
class Comparison:
    max_abs_diff: float
    max_abs_output: float  # scale of PyTorch's outputs: tiny outputs make atol meaningless


def check_tolerances(rtol: float, atol: float) -> None:
    if rtol < 0 or atol < 0:
        raise UsageError("tolerances must be >= 0", hint="pass rtol/atol such as 1e-3/1e-4")


def check_batches(
    inputs: Batch, check_inputs: Inputs | None, dynamic_batch: bool
) -> list[Batch]:
    """Split real inputs into batches the exported model accepts (``inputs`` fix its shapes)."""
    checks = inputs if check_inputs is None else as_input_tuple(check_inputs)
    if len(checks) != len(inputs):
        raise UsageError(
            f"check_inputs has {len(checks)} tensors but the model takes {len(inputs)}",
            hint="pass check inputs in the same form as example_inputs",
        )
    if dynamic_batch or all(c.shape == x.shape for c, x in zip(checks, inputs, strict=True)):
        return [checks]
    batch, total = inputs[0].shape[0], checks[0].shape[0]
    same_rest = all(c.shape[1:] == x.shape[1:] for c, x in zip(checks, inputs, strict=True))
    if not same_rest or total % batch or any(c.shape[0] != total for c in checks):
        raise UsageError(
            f"check inputs of shape {tuple(checks[0].shape)} do not fit the exported shape "
            f"{tuple(inputs[0].shape)}",
            hint="use the same shape except for a batch that is a multiple of the exported "
            "batch, or export with dynamic_batch",
        )
    return [tuple(c[i : i + batch] for c in checks) for i in range(0, total, batch)]


def flatten_outputs(output: Any) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, tuple, dict...), in the exporters' order."""
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]


def compare_outputs(
    run: RunArtifact,
    model: nn.Module,
    batches: Sequence[Inputs],
    *,
    rtol: float,
    atol: float,
    fmt: str,
    runtime: str,
    shape_hint: str = "re-export the model with the shapes you run it with",
) -> Comparison:
    """Run ``model`` (in eval mode, then back) and the artifact on every batch and compare.

    ``fmt`` ("ONNX", "TFLite") and ``runtime`` ("onnxruntime", "ai-edge-litert") name the
    artifact in the errors. Raises :class:`ParityError` when the outputs differ in number, shape
    or beyond ``atol + rtol·|pytorch|``.
    """
    import numpy as np

    max_diff, max_ref, failed = 0.0, 0.0, False
    was_training = model.training
    model.eval()
    try:
        for item in batches:
            tensors = as_input_tuple(item)
            with torch.no_grad():
                reference = flatten_outputs(model(*tensors))
            outputs = list(run(tensors))
            if len(outputs) != len(reference):
                raise ParityError(
                    f"the {fmt} model returns {len(outputs)} outputs, PyTorch {len(reference)}",
                    hint="re-export the model",
                )
            for got_any, want in zip(outputs, reference, strict=True):
                got = np.asarray(got_any)
                want_np = want.detach().cpu().numpy().astype(np.float64)
                if got.shape != want_np.shape:
                    raise ParityError(
                        f"{fmt} output shape {got.shape} differs from PyTorch {want_np.shape}",
                        hint=shape_hint,
                    )
                if not want_np.size:
                    continue
                diff = np.abs(got.astype(np.float64) - want_np)
                bad = ~(diff <= atol + rtol * np.abs(want_np))  # NaN counts as bad
                failed = failed or bool(bad.any())
                finite = np.isfinite(diff).all()
                max_diff = max(max_diff, float(diff.max()) if finite else float("inf"))
                max_ref = max(max_ref, float(np.nanmax(np.abs(want_np))))
    finally:
        model.train(was_training)
    if failed:
        raise ParityError(
            f"{runtime} output differs from PyTorch by up to {max_diff:.3g} "
            f"(tolerance atol={atol:g} + rtol={rtol:g}·|output|; outputs up to {max_ref:.3g})",
            hint="check the model for export-time-only behaviour, or loosen --atol/--rtol "
            "if the difference is numerical noise",
        )
    return Comparison(max_diff, max_ref)


def tiny_output_note(comparison: Comparison, atol: float) -> str | None:
    """A note when PyTorch's outputs are so small that ``atol`` alone would pass anything."""
    if comparison.max_abs_output >= 100 * atol:
        return None
    return (
        f"PyTorch outputs are tiny (max |output| {comparison.max_abs_output:.3g}), so "
        f"atol={atol:g} makes the parity check weak: use trained weights or real data"
    )
