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
    "load_model": "edgeprune.models",
    "parse_model_spec": "edgeprune.models",
    "ModelSpec": "edgeprune.models",
    "save": "edgeprune.saving",
    "load": "edgeprune.saving",
    "load_data": "edgeprune.data",
    "evaluate": "edgeprune.evaluate",
    "prune": "edgeprune.prune",
    "PruneConfig": "edgeprune.prune",
    "materialize": "edgeprune.materialize",
    "export_onnx": "edgeprune.export",
    "export_tflite": "edgeprune.export",
    "finetune": "edgeprune.train",
    "get_recipe": "edgeprune.train",
    "run_schedule": "edgeprune.schedules",
    "FitSettings": "edgeprune.fit",
    "measure": "edgeprune.measure",
    "MeasureSettings": "edgeprune.measure",
    "load_target": "edgeprune.targets",
    "load_profile": "edgeprune.profiles",
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
