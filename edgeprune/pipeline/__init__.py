"""Spec -> model + data -> artifact: the glue every job shares.

``sources`` turns model and data specs into objects (one way, with one rule for the input
shape); ``measuring`` is the one path from a model to the artifact a device measures; ``oneshot``
holds the one-shot ``prune`` / ``materialize`` jobs behind the CLI. Above ``devices``,
``artifacts``, ``pruning`` and ``training``; below ``fit``, ``release`` and the CLI.
"""

from __future__ import annotations

from edgeprune.pipeline.measuring import export_for_measuring as export_for_measuring
from edgeprune.pipeline.oneshot import materialize_job as materialize_job
from edgeprune.pipeline.oneshot import prune_job as prune_job
from edgeprune.pipeline.oneshot import schedule_job as schedule_job
from edgeprune.pipeline.sources import Loaded as Loaded
from edgeprune.pipeline.sources import ModelSource as ModelSource
from edgeprune.pipeline.sources import load_source as load_source
from edgeprune.pipeline.sources import load_with_data as load_with_data
from edgeprune.pipeline.sources import with_batch as with_batch

__all__ = ["Loaded", "ModelSource", "export_for_measuring", "load_source",
           "load_with_data", "materialize_job", "prune_job", "schedule_job", "with_batch"]
