"""Shared fixtures. The real sshd fixture lives in tests/_sshd.py (loaded as a plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests._sshd"] if (Path(__file__).parent / "_sshd.py").exists() else []


@pytest.fixture(scope="session")
def digits_images():
    """Real data: sklearn's 1,797 8x8 handwritten digits as float tensors in [0, 1]."""
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    return x, y


def real_images(digits, n: int, channels: int, size: int):
    """``n`` real digit images resized to ``size`` and replicated to ``channels`` channels."""
    import torch.nn.functional as F

    x = digits[0][:n]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.repeat(1, channels, 1, 1)
