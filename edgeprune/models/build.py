"""Build the architecture a model spec names: torchvision, a shipped ``builtin:`` net, a factory.

:func:`build_model` takes a parsed :class:`~edgeprune.models.spec.ModelSpec` of any kind but
``pruned`` and returns a fresh ``nn.Module``; only a ``builtin:`` net comes with weights (its
shipped ones, unless asked not to). Loading user weights and pruned directories is
:mod:`edgeprune.models.load`'s job; this module never imports :mod:`edgeprune.models.pruned_dir`
(which builds through it).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from edgeprune._userfile import Wording, import_user_code
from edgeprune.errors import EdgepruneError, ModelSpecError
from edgeprune.models import builtin
from edgeprune.models.spec import ModelSpec
from edgeprune.models.weights import load_weights


def build_model(spec: ModelSpec, *, shipped_weights: bool = True) -> Any:
    """A fresh ``nn.Module`` for ``spec`` (not in eval mode yet).

    ``shipped_weights``: a ``builtin:`` net gets the weights its package ships (False: random
    initial weights, e.g. to load another state dict into). Other kinds start untrained.
    """
    if spec.kind == "torchvision":
        return _build_torchvision(spec)
    if spec.kind == "builtin":
        return _build_builtin(spec, shipped_weights=shipped_weights)
    if spec.kind in ("file", "module"):
        return _build_factory(spec)
    raise ModelSpecError(f"{spec.text!r} is a {spec.kind} model, not an architecture to build",
                         hint="load it with edgeprune.load_model")


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


def _build_builtin(spec: ModelSpec, *, shipped_weights: bool) -> Any:
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
    if shipped_weights:
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
    try:
        return factory(**dict(spec.kwargs))
    except EdgepruneError:
        raise  # already one line that names its fix
    except Exception as exc:
        detail = " ".join(str(exc).split()) or "(no message)"
        raise ModelSpecError(f"model factory {spec.text!r} raised {type(exc).__name__}: "
                             f"{detail}", hint="fix the factory or its arguments "
                             "(EDGEPRUNE_DEBUG=1 shows the traceback)") from exc
