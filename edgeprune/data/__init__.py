"""Data specs → train/val loaders, shipped real data sets, calibration subsets.

The public surface; the machinery lives in the private modules next to this one:
``_spec`` (grammar), ``_builtin`` (data shipped in packages), ``_folders`` (image folders and
CIFAR-10 batches), ``_factory`` (user code), ``_safe_pickle`` (restricted unpickling),
``_tensors`` (in-memory tensors, resizing, splits, statistics) and ``_bundle`` (``load_data``).
See docs/data.md for the spec grammar, splits and normalisation of each data set.
"""

from __future__ import annotations

from edgeprune.data._builtin import BUILTINS as BUILTINS
from edgeprune.data._bundle import IMAGENET_MEAN as IMAGENET_MEAN
from edgeprune.data._bundle import IMAGENET_STD as IMAGENET_STD
from edgeprune.data._bundle import DataBundle as DataBundle
from edgeprune.data._bundle import calibration_batches as calibration_batches
from edgeprune.data._bundle import example_input as example_input
from edgeprune.data._bundle import load_data as load_data
from edgeprune.data._spec import BUILTIN_NAMES as BUILTIN_NAMES
from edgeprune.data._spec import DataSpec as DataSpec
from edgeprune.data._spec import input_paths as input_paths
from edgeprune.data._spec import parse_data_spec as parse_data_spec
from edgeprune.errors import DataSpecError as DataSpecError
from edgeprune.errors import ForbiddenPickleError as ForbiddenPickleError

__all__ = [
    "BUILTINS",
    "BUILTIN_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataBundle",
    "DataSpec",
    "DataSpecError",
    "ForbiddenPickleError",
    "calibration_batches",
    "example_input",
    "input_paths",
    "load_data",
    "parse_data_spec",
]
