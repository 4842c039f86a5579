"""Shared fixtures. The real sshd fixture lives in tests/_sshd.py (loaded as a plugin)."""

from __future__ import annotations

import functools
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


@pytest.fixture
def one_thread():
    """Small inputs are too small to share between threads; on a busy 2-core machine the
    second thread only spins. Restored afterwards so other test modules keep their setting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=1)
def digits_rgb32():
    """Real handwritten digits (sklearn, 8x8) upsampled to 32x32, normalised, replicated to RGB.

    Returns ``(images, labels)``; cached, treat as read-only.
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = (x - 0.3) / 0.4
    return x.repeat(1, 3, 1, 1), torch.tensor(bunch.target, dtype=torch.long)


@pytest.fixture(scope="module")
def flush_denormals():
    """Random-init weights produce denormal floats that make CPU convs crawl; for a module:
    ``pytestmark = pytest.mark.usefixtures("flush_denormals")``."""
    import torch

    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
