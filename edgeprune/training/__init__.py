"""Training any model, pruned or not: ``evaluate``, fine-tuning ``recipes``, the ``finetune`` loop
and its pickle-free resumable ``checkpoints``. Never imports ``pruning`` (pruning uses training)."""
