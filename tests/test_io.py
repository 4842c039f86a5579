"""Atomic writes keep the modes a plain write would give (temp files are created private)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch

from edgeprune._io import atomic_write_text
from edgeprune.models import pruned_dir


def test_atomic_writes_and_saved_models_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.json", "{}\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        out = pruned_dir.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), tmp_path / "model",
                          spec="builtin:x", input_shape=(1, 2))
        assert stat.S_IMODE(Path(out).stat().st_mode) == 0o755
        for child in Path(out).iterdir():
            assert stat.S_IMODE(child.stat().st_mode) == 0o644, child.name
    finally:
        os.umask(old)
