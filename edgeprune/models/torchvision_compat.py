"""Import torchvision even when its compiled operators do not match the installed torch.

A CPU-only torch paired with torchvision's CUDA wheel (common on CPU boxes, Jetson images and
mixed installs) fails at import with ``operator torchvision::nms does not exist``: torchvision
registers fake kernels for operators its missing C++ library would have defined. The model
definitions are pure Python, so we define the operator *schemas* ourselves before the import;
calling one of those operators (nms, roi_align, deform_conv2d, ...) still fails, which the
classification architectures never do. A single warning says so.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

from edgeprune.errors import ModelSpecError

# Schemas of the operators torchvision's Python side registers fake kernels for at import time,
# matching torchvision's C++ definitions (torchvision/csrc/ops/*.cpp).
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
    "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
)

_state: dict[str, object] = {"module": None, "patched": False}
_library: object | None = None  # keeps the torch.library.Library alive


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module, patching the operator mismatch once if needed."""
    cached = _state["module"]
    if cached is not None:
        return cached  # type: ignore[return-value]
    try:
        module = importlib.import_module("torchvision")
    except ModuleNotFoundError as exc:
        raise ModelSpecError(
            "torchvision is not installed",
            hint="install it without dependencies: pip install --no-deps torchvision "
            "(the release matching your torch, e.g. 0.28.0 for torch 2.13)",
        ) from exc
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        _purge_partial_import()
        _define_missing_schemas()
        module = importlib.import_module("torchvision")
        _state["patched"] = True
        warnings.warn(
            "torchvision's compiled operators do not match this torch build "
            f"({exc}); edgeprune defined their schemas so the model architectures load. "
            "Detection ops (nms, roi_align, deform_conv2d) stay unavailable.",
            RuntimeWarning,
            stacklevel=2,
        )
    _state["module"] = module
    return module


def compat_patched() -> bool:
    """True when torchvision only imported thanks to the schema patch."""
    return bool(_state["patched"])


def _purge_partial_import() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def _define_missing_schemas() -> None:
    global _library
    import torch

    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        name = schema.split("(", 1)[0]
        if not _op_exists(name):
            lib.define(schema)
    _library = lib


def _op_exists(name: str) -> bool:
    import torch

    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True
