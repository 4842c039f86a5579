"""Structural pruning: the Torch-Pruning adapter (``engine``, the only torch_pruning importer),
importance criteria, ``prune`` (configured by ``prune_config``), masks and dead channels turned
into smaller models (``masks``, ``dead_channels``, ``materialize``), unstructured sparsity,
per-layer ``sensitivity``, and the pruning ``schedules`` (``soft`` filter pruning among them)."""
