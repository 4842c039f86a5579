"""Resumable fine-tuning checkpoints without pickles.

``DIR/epoch-NNNN/`` holds the weights, the optimizer's tensors and the best weights as safetensors
files, and everything else (optimizer hyper-parameters, RNG states of Python and numpy, the
loop's history, a schedule hook's state) as JSON in ``state.json``; ``DIR/latest.json`` points at
the newest complete one. Storing the RNG states (torch's, the train loader's shuffle generator,
Python's, numpy's) is what lets a resumed run end with the weights of one never interrupted.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from edgeprune._io import atomic_write_bytes, atomic_write_json
from edgeprune.errors import CheckpointError
from edgeprune.training.recipes import Recipe

__all__ = ["CHECKPOINT_VERSION", "Checkpoints", "EpochRecord", "LoopState", "Resumable",
           "loader_generator"]

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_top1: float
    val_loss: float
    lr: float
    n_batches: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class LoopState:
    """What the loop carries across epochs and what a checkpoint restores."""

    epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_top1: float = -1.0
    best_weights: dict[str, torch.Tensor] | None = None
    stale_epochs: int = 0
    stopped_early: bool = False
    finished: bool = False


@runtime_checkable
class Resumable(Protocol):
    """What a checkpoint stores of a hook: ``state()`` (JSON data), and ``restore(state, model)``
    called on resume before the weights load (so it can rebuild the architecture)."""

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any], model: nn.Module) -> None: ...


def loader_generator(loader: Iterable[Any]) -> torch.Generator | None:
    """The generator that drives a DataLoader's shuffle (None: it uses torch's global RNG)."""
    sampler = getattr(loader, "sampler", None)
    gen = getattr(sampler, "generator", None) or getattr(loader, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None


class Checkpoints:
    """``DIR/epoch-NNNN/`` (weights, optimizer tensors, best weights, state.json) + ``latest.json``.

    Each epoch directory is written under a temporary name and renamed into place; then
    ``latest.json`` is replaced atomically to point at it; then older epoch directories go.
    A crash at any point leaves the previous complete checkpoint readable.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def clear(self) -> None:
        if not self.root.exists():
            return
        (self.root / "latest.json").unlink(missing_ok=True)
        for path in self.root.glob("epoch-*"):
            shutil.rmtree(path, ignore_errors=True)

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, state: LoopState,
             recipe: Recipe, loader: Iterable[Any], hook: Resumable | None) -> None:
        from safetensors.torch import save

        self.root.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{state.epoch:04d}" + ("-final" if optimizer is None else "")
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        opt_json: dict[str, Any] | None = None
        rng: dict[str, torch.Tensor] = {"torch": torch.get_rng_state()}
        gen = loader_generator(loader)
        if gen is not None:
            rng["loader"] = gen.get_state()
        if optimizer is not None:
            opt_tensors, opt_json = _split_optimizer(optimizer.state_dict())
            atomic_write_bytes(tmp / "optimizer.safetensors", save(opt_tensors))
        atomic_write_bytes(tmp / "weights.safetensors", save(_plain(model.state_dict())))
        atomic_write_bytes(tmp / "rng.safetensors", save(rng))
        if state.best_weights is not None:
            atomic_write_bytes(tmp / "best.safetensors", save(_plain(state.best_weights)))
        py_state = random.getstate()
        np_state = np.random.get_state()
        atomic_write_json(tmp / "state.json", {
            "version": CHECKPOINT_VERSION,
            "recipe": recipe.to_dict(),
            "epoch": state.epoch,
            "history": [r.to_dict() for r in state.history],
            "best_epoch": state.best_epoch,
            "best_top1": state.best_top1,
            "stale_epochs": state.stale_epochs,
            "stopped_early": state.stopped_early,
            "finished": state.finished,
            "optimizer": opt_json,
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "hook": hook.state() if hook is not None and hasattr(hook, "state") else None,
        })
        final = self.root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_json(self.root / "latest.json", {"dir": name, "epoch": state.epoch})
        for old in self.root.glob("epoch-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, model: nn.Module, recipe: Recipe, loader: Iterable[Any],
             hook: Resumable | None) -> tuple[LoopState, dict[str, Any] | None] | None:
        from safetensors.torch import load_file

        pointer = self.root / "latest.json"
        if not pointer.is_file():
            return None
        try:
            where = self.root / json.loads(pointer.read_text())["dir"]
            data = json.loads((where / "state.json").read_text())
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"checkpoint in {str(self.root)!r} is unreadable: {exc}",
                                  hint="delete the directory or start over (resume=False / "
                                  "--force)") from None
        if data.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint in {str(self.root)!r} has version "
                                  f"{data.get('version')}", hint="start over with --force")
        if data["recipe"] != recipe.to_dict():
            changed = sorted(k for k, v in recipe.to_dict().items() if data["recipe"].get(k) != v)
            raise CheckpointError(f"checkpoint in {str(self.root)!r} was written with another "
                                  f"recipe (differs in: {', '.join(changed)})",
                                  hint="resume with the same recipe, or start over "
                                  "(resume=False / --force)")
        if hook is not None and data.get("hook") is not None and hasattr(hook, "restore"):
            hook.restore(data["hook"], model)
        weights = load_file(str(where / "weights.safetensors"))
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint in {str(self.root)!r} does not fit the model: "
                                  f"{first}", hint="resume with the model the run started from, "
                                  "or start over (resume=False / --force)") from None
        rng = load_file(str(where / "rng.safetensors"))
        torch.set_rng_state(rng["torch"])
        gen = loader_generator(loader)
        if gen is not None and "loader" in rng:
            gen.set_state(rng["loader"])
        py = data["python_rng"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        npr = data["numpy_rng"]
        np.random.set_state((npr[0], np.asarray(npr[1], dtype=np.uint32), *npr[2:]))
        best = where / "best.safetensors"
        state = LoopState(
            epoch=int(data["epoch"]),
            history=[EpochRecord(**r) for r in data["history"]],
            best_epoch=int(data["best_epoch"]), best_top1=float(data["best_top1"]),
            best_weights=load_file(str(best)) if best.is_file() else None,
            stale_epochs=int(data["stale_epochs"]), stopped_early=bool(data["stopped_early"]),
            finished=bool(data["finished"]))
        opt_state = None
        if data.get("optimizer") is not None:
            tensors = load_file(str(where / "optimizer.safetensors"))
            opt_state = _join_optimizer(tensors, data["optimizer"])
        return state, opt_state


def _plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous, unshared CPU copies (safetensors refuses shared storage)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def _split_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor],
                                                             dict[str, Any]]:
    """Optimizer state → (tensors keyed ``"<param>/<name>"``, JSON for everything else)."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        plain[str(index)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{key}"] = value.detach().cpu().clone().contiguous()
            else:
                plain[str(index)][key] = value
    groups = json.loads(json.dumps(state_dict["param_groups"]))
    return tensors, {"state": plain, "param_groups": groups}


def _join_optimizer(tensors: Mapping[str, torch.Tensor],
                    data: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in data["state"].items()}
    for key, tensor in tensors.items():
        index, _, name = key.partition("/")
        state.setdefault(int(index), {})[name] = tensor
    groups = copy.deepcopy(list(data["param_groups"]))
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}
