"""Save and load pruned models without pickles.

A pruned model is a directory::

    model.json           manifest: model spec, per-layer widths, input shape, history, checksums
    weights.safetensors  the state dict

:func:`load` rebuilds the unpruned architecture from the spec, resizes every layer to the widths
recorded in the manifest and loads the weights: no arbitrary code is unpickled. It builds through
:mod:`edgeprune.models.build` and never the other way round (``edgeprune.models.load`` dispatches
a directory spec here). (A spec naming a
user's own ``file.py:factory`` does import that file, as it did when the model was first built.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune._io import default_mode
from edgeprune.errors import CheckpointError, ModelSpecError, NotFoundError, OutputExistsError
from edgeprune.models.build import build_model
from edgeprune.models.spec import MANIFEST, absolute_spec, is_pruned_dir, parse_model_spec

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "WEIGHTS",
    "Manifest",
    "is_pruned_dir",
    "load",
    "read_manifest",
    "save",
]

FORMAT = "edgeprune.pruned-model"
VERSION = 1
WEIGHTS = "weights.safetensors"

# Attributes that structural pruning rewrites, per module; recorded and restored on load.
_SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features",
                "num_features", "normalized_shape", "num_channels", "num_groups")


@dataclass(frozen=True)
class Manifest:
    spec: str
    input_shape: tuple[int, ...] | None
    modules: Mapping[str, Mapping[str, Any]]
    weights_sha256: str
    history: Sequence[Any] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    edgeprune_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "spec": self.spec,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "weights": WEIGHTS, "weights_sha256": self.weights_sha256,
            "edgeprune_version": self.edgeprune_version,
            "modules": {k: dict(v) for k, v in self.modules.items()},
            "history": list(self.history), "extra": dict(self.extra),
        }


def _written_by_us(path: Path) -> bool:
    """A directory whose model.json is an edgeprune manifest (another tool's model.json, e.g. a
    TF.js model folder, does not make a directory ours to replace)."""
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _module_shapes(model: Any) -> dict[str, dict[str, Any]]:
    shapes: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        attrs = {a: _jsonable(getattr(module, a)) for a in _SHAPE_ATTRS if hasattr(module, a)}
        attrs = {k: v for k, v in attrs.items() if v is not None}
        if attrs:
            shapes[name] = {"type": type(module).__name__, **attrs}
    return shapes


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def save(model: Any, path: str | os.PathLike[str], *, spec: str,
         input_shape: Sequence[int] | None = None, history: Sequence[Any] = (),
         extra: Mapping[str, Any] | None = None, force: bool = False) -> Path:
    """Write ``model`` as a pruned-model directory, atomically (a temp dir renamed into place).

    A ``file.py:factory`` spec is stored with the file's absolute path, so the directory loads
    from any working directory.
    """
    from safetensors.torch import save_file

    from edgeprune import __version__

    spec = absolute_spec(spec)

    out = Path(path)
    if out.exists() and not force:
        raise OutputExistsError(f"output {str(out)!r} exists already",
                                hint="choose another --out or pass --force to replace it")
    if out.exists() and not (is_pruned_dir(out) and _written_by_us(out)) and any(out.iterdir()):
        raise OutputExistsError(f"{str(out)!r} is a non-empty directory that is not a pruned "
                                "model; refusing to replace it", hint="choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        manifest = Manifest(
            spec=spec, input_shape=tuple(input_shape) if input_shape else None,
            modules=_module_shapes(model), weights_sha256=_sha256(tmp / WEIGHTS),
            history=list(history), extra=dict(extra or {}), edgeprune_version=__version__,
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        tmp.chmod(default_mode(directory=True))  # mkdtemp made it 0700, safetensors 0600
        for child in tmp.iterdir():
            child.chmod(default_mode())
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_dir(new: Path, dest: Path) -> None:
    if dest.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
        os.replace(dest, trash / "old")
        os.replace(new, dest)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, dest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    p = Path(path)
    if not is_pruned_dir(p):
        raise NotFoundError(f"{str(p)!r} is not a pruned model directory (no {MANIFEST})",
                            hint="pass a directory written by 'edgeprune prune' or 'fit'")
    try:
        data = json.loads((p / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {str(p / MANIFEST)!r}: {exc}",
                              hint="the directory is damaged; write it again") from None
    if data.get("format") != FORMAT or not isinstance(data.get("version"), int):
        raise CheckpointError(f"{str(p / MANIFEST)!r} is not an edgeprune model manifest",
                              hint="pass a directory written by edgeprune")
    if data["version"] > VERSION:
        raise CheckpointError(f"{str(p)!r} was written by a newer edgeprune "
                              f"(format {data['version']})", hint="upgrade edgeprune")
    shape = data.get("input_shape")
    return Manifest(spec=_locate_spec(data["spec"], p), input_shape=tuple(shape) if shape else None,
                    modules=data.get("modules", {}), weights_sha256=data.get("weights_sha256", ""),
                    history=data.get("history", []), extra=data.get("extra", {}),
                    edgeprune_version=data.get("edgeprune_version", ""))


def _relative_file(spec: str) -> str | None:
    """The relative ``.py`` path of a ``file.py:factory`` spec (None for any other spec)."""
    try:
        parsed = parse_model_spec(spec)
    except ModelSpecError:
        return None
    if parsed.kind != "file" or Path(parsed.target).expanduser().is_absolute():
        return None
    return parsed.target


def _locate_spec(spec: str, directory: Path) -> str:
    """A relative ``file.py`` spec (written before paths were stored absolute) that does not
    exist from the current directory is looked for next to the model directory too."""
    target = _relative_file(spec)
    if target is None or Path(target).is_file():
        return spec
    beside = directory.absolute().parent
    if (beside / target).is_file():
        return absolute_spec(spec, base=beside)
    return spec


def _check_spec_file(spec: str, directory: Path) -> None:
    target = _relative_file(spec)
    if target is None or Path(target).is_file():
        return
    tried = (os.path.abspath(target), os.path.normpath(directory.absolute().parent / target))
    raise ModelSpecError(
        f"model file {target!r} named in {str(directory / MANIFEST)!r} is neither at "
        f"{tried[0]!r} (the current directory) nor at {tried[1]!r} (next to the model)",
        hint="run from the directory the model was pruned in, or put the file next to the model "
        "directory")


def load(path: str | os.PathLike[str]) -> Any:
    """Rebuild a pruned model from its directory. Returns an ``nn.Module`` in eval mode."""
    import torch
    from safetensors.torch import load_file

    p = Path(path)
    manifest = read_manifest(p)
    weights = p / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{str(weights)!r} is missing", hint="the directory is incomplete")
    if manifest.weights_sha256 and _sha256(weights) != manifest.weights_sha256:
        raise CheckpointError(f"{str(weights)!r} does not match the checksum in its manifest",
                              hint="the file was changed or damaged; write the model again")
    _check_spec_file(manifest.spec, p)
    spec = parse_model_spec(manifest.spec)
    if spec.kind == "pruned":
        raise CheckpointError(f"manifest of {str(p)!r} points at another pruned directory",
                              hint="write the model again")
    model = build_model(spec, shipped_weights=False)  # the weights come from the directory
    state = load_file(str(weights))
    modules = dict(model.named_modules())
    for name, attrs in manifest.modules.items():
        module = modules.get(name)
        if module is None:
            raise CheckpointError(f"layer {name!r} of {str(p)!r} does not exist in {manifest.spec}",
                                  hint="the spec's code changed since the model was saved")
        for key, value in attrs.items():
            if key != "type" and hasattr(module, key):
                setattr(module, key, tuple(value) if isinstance(value, list) else value)
    with torch.no_grad():
        for key, tensor in state.items():
            mod_name, _, attr = key.rpartition(".")
            module = modules.get(mod_name)
            current = getattr(module, attr, None) if module is not None else None
            if current is None and module is not None and attr == "bias" \
                    and hasattr(module, "bias"):
                # a fold (materialize) gave a bias-free conv/linear a bias; recreate it
                current = torch.nn.Parameter(torch.empty(0))
            if current is None:
                raise CheckpointError(f"weight {key!r} of {str(p)!r} has no place in "
                                      f"{manifest.spec}", hint="the spec's code changed")
            if isinstance(current, torch.nn.Parameter):
                setattr(module, attr, torch.nn.Parameter(tensor.clone(),
                                                         requires_grad=current.requires_grad))
            elif isinstance(current, torch.Tensor):
                setattr(module, attr, tensor.clone())  # a registered buffer stays one
    model.load_state_dict(state, strict=True)
    model.edgeprune_input_shape = manifest.input_shape
    model.edgeprune_spec = manifest.spec  # as before: the spec the pruned model was built from
    model.eval()
    return model
