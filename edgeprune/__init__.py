"""edgeprune: fit trained PyTorch vision models onto ARM edge devices.

The public API is re-exported here lazily, so ``import edgeprune`` (and ``edgeprune --help``)
does not import torch until a name that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "EdgepruneError": "edgeprune.errors",
    "load_model": "edgeprune.models.load",
    "parse_model_spec": "edgeprune.models.spec",
    "ModelSpec": "edgeprune.models.spec",
    "save": "edgeprune.models.pruned_dir",
    "load": "edgeprune.models.pruned_dir",
    "load_data": "edgeprune.data",
    "evaluate": "edgeprune.training.evaluate",
    "prune": "edgeprune.pruning.prune",
    "PruneConfig": "edgeprune.pruning.prune",
    "materialize": "edgeprune.pruning.materialize",
    "export_onnx": "edgeprune.artifacts.onnx_export",
    "export_tflite": "edgeprune.artifacts.tflite",
    "finetune": "edgeprune.training.finetune",
    "get_recipe": "edgeprune.training.recipes",
    "run_schedule": "edgeprune.pruning.schedules",
    "FitSettings": "edgeprune.fit",
    "measure": "edgeprune.pipeline.measuring",
    "MeasureSettings": "edgeprune.devices.measure",
    "load_target": "edgeprune.devices.targets",
    "load_profile": "edgeprune.devices.profiles",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
