"""Model specs → ``nn.Module``, and safe weight loading.

Spec grammar (one parser, :func:`parse_model_spec`)::

    torchvision:resnet18                      a torchvision classification architecture
    torchvision:resnet18(num_classes=10)      ... with constructor keyword arguments (literals)
    resnet18                                  shorthand for torchvision:resnet18
    builtin:mnist-cnn                         a trained network shipped in a package (weights on)
    path/to/file.py:factory(width=8)          a factory function in a Python file
    package.module:factory                    a factory function in an importable module
    runs/fit-1/model                          a pruned model directory written by edgeprune

Weights (``--weights``) are a state dict in a ``.safetensors`` file or a PyTorch file read with
``torch.load(weights_only=True)``: a checkpoint that would need arbitrary unpickling is refused,
never executed.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune._userfile import Wording, import_user_code
from edgeprune.errors import CheckpointError, ModelSpecError, UnsafeCheckpointError
from edgeprune.models import builtin

_CALL = re.compile(r"^(?P<name>[^()]+?)\s*(?:\((?P<args>.*)\))?\s*$", re.S)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec; ``kwargs`` are literal constructor arguments."""

    kind: str  # torchvision | builtin | file | module | pruned
    target: str  # architecture name, builtin name, file path, module name or directory
    factory: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "factory": self.factory,
                "kwargs": dict(self.kwargs), "text": self.text}


def parse_model_spec(text: str) -> ModelSpec:
    """Parse a model spec string; errors are one line and name the accepted forms."""
    raw = text.strip()
    if not raw:
        raise ModelSpecError("empty model spec", hint=_FORMS)
    from edgeprune.models import pruned_dir  # local: saving imports torch

    if pruned_dir.is_pruned_dir(raw):
        return ModelSpec("pruned", raw, text=raw)
    if raw.startswith("torchvision:"):
        name, kwargs = _split_call(raw[len("torchvision:"):], raw)
        return ModelSpec("torchvision", name, kwargs=kwargs, text=raw)
    if raw.startswith("builtin:"):
        name, kwargs = _split_call(raw[len("builtin:"):], raw)
        return ModelSpec("builtin", name, kwargs=kwargs, text=raw)
    head, sep, tail = _rsplit_factory(raw)
    if sep:
        factory, kwargs = _split_call(tail, raw)
        if head.endswith(".py"):
            return ModelSpec("file", head, factory=factory, kwargs=kwargs, text=raw)
        if re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", head):
            from edgeprune._userfile import mistyped_prefix

            meant = mistyped_prefix(head, ("builtin", "torchvision"))
            if meant:
                raise ModelSpecError(f"unknown model spec prefix {head + ':'!r} (no module "
                                     f"{head!r} either)", hint=f"did you mean '{meant}:'?")
            return ModelSpec("module", head, factory=factory, kwargs=kwargs, text=raw)
        raise ModelSpecError(f"cannot read model spec {raw!r}: {head!r} is neither a .py file "
                             "nor a module name", hint=_FORMS)
    name, kwargs = _split_call(raw, raw)
    if Path(name).exists():
        raise ModelSpecError(f"{raw!r} is a path but not a pruned model directory",
                             hint="pass a directory written by 'edgeprune prune' (it holds "
                             "model.json), or a Python file as path/file.py:factory")
    if re.fullmatch(r"[a-z][a-z0-9_]*", name):
        return ModelSpec("torchvision", name, kwargs=kwargs, text=raw)
    raise ModelSpecError(f"cannot read model spec {raw!r}", hint=_FORMS)


_FORMS = ("use torchvision:NAME[(k=v,...)], builtin:NAME, path/file.py:factory, "
          "package.module:factory, or a pruned model directory")


def absolute_spec(text: str, *, base: str | os.PathLike[str] | None = None) -> str:
    """``text`` with the path of a ``file.py:factory`` spec made absolute (other specs as is).

    A relative path is taken relative to ``base`` (default: the current directory), so a spec
    stored in a pruned directory's manifest still works from any directory later.
    """
    try:
        spec = parse_model_spec(text)
    except ModelSpecError:
        return text  # not ours to judge here; loading the spec reports it
    if spec.kind != "file" or Path(spec.target).expanduser().is_absolute():
        return spec.text
    head, _, tail = _rsplit_factory(spec.text)
    root = Path(base) if base is not None else Path.cwd()
    return f"{os.path.normpath(root / Path(head).expanduser())}:{tail}"


def _rsplit_factory(raw: str) -> tuple[str, str, str]:
    """Split ``head:factory(args)`` at the colon before the factory (args may hold colons)."""
    paren = raw.find("(")
    scope = raw if paren < 0 else raw[:paren]
    idx = scope.rfind(":")
    if idx <= 0 or (idx == 1 and raw[0].isalpha() and raw[2:3] in ("\\", "/")):
        return raw, "", ""
    return raw[:idx], ":", raw[idx + 1:]


def _split_call(text: str, raw: str) -> tuple[str, dict[str, Any]]:
    match = _CALL.match(text.strip())
    if not match or not match.group("name").strip():
        raise ModelSpecError(f"cannot read model spec {raw!r}", hint=_FORMS)
    name = match.group("name").strip()
    args = match.group("args")
    if not args or not args.strip():
        return name, {}
    try:
        call = ast.parse(f"f({args})", mode="eval").body
        assert isinstance(call, ast.Call)
        if call.args:
            raise ValueError("positional arguments")
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError, AssertionError) as exc:
        raise ModelSpecError(
            f"cannot read the arguments of model spec {raw!r} ({exc})",
            hint="write keyword arguments with literal values, e.g. resnet18(num_classes=10)",
        ) from None
    return name, kwargs


# --- building ----------------------------------------------------------------------------------


def load_model(spec: str | ModelSpec, *, weights: str | Path | None = None) -> Any:
    """Build the model a spec names and load ``weights`` into it (safely). Returns ``nn.Module``."""
    parsed = parse_model_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind == "pruned":
        from edgeprune.models import pruned_dir

        model = pruned_dir.load(parsed.target)
    elif parsed.kind == "torchvision":
        model = _build_torchvision(parsed)
    elif parsed.kind == "builtin":
        model = _build_builtin(parsed, load_shipped=weights is None)
    else:
        model = _build_factory(parsed)
    if weights is not None:
        load_weights(model, weights)
    model.eval()
    model.edgeprune_spec = parsed.text  # names the model in later messages (e.g. a teacher's)
    return model


def torchvision_architectures() -> list[str]:
    from edgeprune.models.torchvision_compat import import_torchvision

    tv = import_torchvision()
    return sorted(tv.models.list_models(module=tv.models))


def _build_torchvision(spec: ModelSpec) -> Any:
    from edgeprune.models.torchvision_compat import import_torchvision

    tv = import_torchvision()
    names = tv.models.list_models(module=tv.models)
    if spec.target not in names:
        close = difflib.get_close_matches(spec.target, names, n=1)
        bare = not spec.text.startswith("torchvision:")
        what = (f"no model directory and no torchvision architecture named {spec.target!r}"
                if bare else f"torchvision has no classification architecture {spec.target!r}")
        raise ModelSpecError(
            what,
            hint=(f"did you mean torchvision:{close[0]}?" if close else
                  ("check the directory's path, or n" if bare else "n")
                  + f"ame an architecture such as torchvision:resnet18 ({len(names)} in "
                  "torchvision.models.list_models())"),
        )
    kwargs = dict(spec.kwargs)
    if kwargs.get("weights") not in (None,):
        raise ModelSpecError("downloading torchvision weights is not supported (no network)",
                             hint="pass a local state dict with --weights FILE instead")
    if spec.target in ("googlenet", "inception_v3"):
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    try:
        return tv.models.get_model(spec.target, weights=None, **kwargs)
    except TypeError as exc:
        raise ModelSpecError(f"torchvision:{spec.target} rejected its arguments: {exc}",
                             hint="check the constructor's keyword names") from None


def _build_builtin(spec: ModelSpec, *, load_shipped: bool) -> Any:
    entry = builtin.get(spec.target)
    if entry is None:
        close = difflib.get_close_matches(spec.target, builtin.names(), n=1)
        raise ModelSpecError(
            f"no built-in model {spec.target!r}",
            hint=(f"did you mean builtin:{close[0]}?" if close else
                  "built-in models: " + ", ".join(builtin.names())),
        )
    if spec.kwargs:
        raise ModelSpecError(f"builtin:{spec.target} takes no arguments",
                             hint=f"use builtin:{spec.target}")
    model = entry.build()
    if load_shipped:
        load_weights(model, entry.weights_path())
    return model


_IMPORT_WORDING = Wording(
    error=ModelSpecError,
    module_prefix="_edgeprune_user_",
    no_file=("model file {target!r} does not exist", "check the path before ':factory'"),
    not_python=("cannot import {target!r}", "is it a Python file?"),
    file_failed_hint="fix the error in that file (EDGEPRUNE_DEBUG=1 shows the traceback)",
    no_module=("cannot import module {target!r}: {exc}", "install it or put it on PYTHONPATH"),
    module_failed_hint="fix the error in that module (EDGEPRUNE_DEBUG=1 shows the traceback)",
)


def _build_factory(spec: ModelSpec) -> Any:
    path = Path(spec.target) if spec.kind == "file" else None
    module = import_user_code(spec.target, _IMPORT_WORDING, path=path)
    factory = getattr(module, spec.factory or "", None)
    if not callable(factory):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(spec.factory or "", public, n=1)
        raise ModelSpecError(f"{spec.target!r} has no factory {spec.factory!r}",
                             hint=f"did you mean :{close[0]}?" if close else
                             "name a function that returns an nn.Module")
    model = _call_factory(spec, factory)
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ModelSpecError(f"{spec.text!r} returned {type(model).__name__}, not an nn.Module",
                             hint="the factory must return a torch.nn.Module")
    return model


def _call_factory(spec: ModelSpec, factory: Any) -> Any:
    """Run the user's factory; whatever it raises becomes one line naming the spec."""
    from edgeprune.errors import EdgepruneError

    try:
        return factory(**dict(spec.kwargs))
    except EdgepruneError:
        raise  # already one line that names its fix
    except Exception as exc:
        detail = " ".join(str(exc).split()) or "(no message)"
        raise ModelSpecError(f"model factory {spec.text!r} raised {type(exc).__name__}: "
                             f"{detail}", hint="fix the factory or its arguments "
                             "(EDGEPRUNE_DEBUG=1 shows the traceback)") from exc


# --- weights -----------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a state dict without executing code; unwraps ``{"state_dict": ...}`` checkpoints."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist", hint="check the path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise CheckpointError(f"cannot read safetensors file {str(path)!r}: {exc}",
                                  hint="is the file complete?") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{str(path)!r} needs arbitrary unpickling to load ({_unpickling_reason(exc)}); "
            "refused without running it",
            hint="save a plain state dict (torch.save(model.state_dict(), f)) or safetensors",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights file {str(path)!r}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                              hint="is it a PyTorch state dict or safetensors file?") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{str(path)!r} does not hold a state dict of tensors",
                              hint="save model.state_dict(), not the model object")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _unpickling_reason(exc: BaseException) -> str:
    """Why torch refused a pickle, as plain text: the global it needs, else its first line."""
    text = _ANSI.sub("", str(exc))
    found = _GLOBAL.search(text)
    if found:
        return f"it references {found.group(1)}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return " ".join(first.split()) or type(exc).__name__


def apply_masks(state: Mapping[str, Any]) -> dict[str, Any]:
    """Fold ``torch.nn.utils.prune`` masks (``x_orig`` × ``x_mask``) into plain ``x`` tensors."""
    out = {k: v for k, v in state.items() if not k.endswith(("_orig", "_mask"))}
    for key, orig in state.items():
        if key.endswith("_orig"):
            base = key[: -len("_orig")]
            mask = state.get(base + "_mask")
            out[base] = orig * mask if mask is not None else orig
    return out


def load_weights(model: Any, path: str | Path) -> None:
    """Load a state dict file into ``model``; shapes and names must match (one-line error)."""
    state = apply_masks(read_state_dict(path))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {k}: file "
                         f"{tuple(state[k].shape)} vs model {tuple(own[k].shape)})")
        raise CheckpointError(
            f"weights {str(path)!r} do not fit the model: " + "; ".join(parts),
            hint="check that --model names the architecture (and num_classes) the weights were "
            "trained with; a pruned model is loaded from its directory instead",
        )
    model.load_state_dict(state, strict=True)


# --- facts about a model -------------------------------------------------------------------------


def default_input_shape(spec: str | ModelSpec | Any) -> tuple[int, ...] | None:
    """The input shape a model expects (batch 1), when the spec or model says so."""
    if isinstance(spec, (str, ModelSpec)):
        parsed = parse_model_spec(spec) if isinstance(spec, str) else spec
        if parsed.kind == "builtin":
            entry = builtin.get(parsed.target)
            return entry.input_shape if entry else None
        if parsed.kind == "torchvision":
            return (1, 3, 299, 299) if parsed.target == "inception_v3" else (1, 3, 224, 224)
        if parsed.kind == "pruned":
            from edgeprune.models import pruned_dir

            return pruned_dir.read_manifest(parsed.target).input_shape
        return None
    shape = getattr(spec, "edgeprune_input_shape", None) or getattr(spec, "input_shape", None)
    if isinstance(shape, (tuple, list)) and all(isinstance(d, int) for d in shape):
        return tuple(shape)
    return None
