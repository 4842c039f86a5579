"""Helpers shared by test modules (fixtures shared by all of them live in conftest.py)."""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.models.torchvision_compat import import_torchvision


def torchvision_model(arch: str, **kwargs: object) -> nn.Module:
    """A seeded, random-init 10-class torchvision ``arch`` in eval mode, with trained-looking
    BatchNorm statistics so that a misaligned channel slice shows up in the outputs."""
    torch.manual_seed(0)
    model = getattr(import_torchvision().models, arch)(num_classes=10, **kwargs).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model
