"""The structural-pruning engine: the only module that imports ``torch_pruning``.

A :class:`Graph` wraps Torch-Pruning's ``DependencyGraph`` for one model. A
:class:`ChannelGroup` is one unit of pruning: the output channels of a *root* conv/linear and
every layer coupled to them (its BatchNorm, residual partners, downsample path, the next layers'
inputs, depthwise convs, concat consumers, ...). :func:`prune_group` removes root channels from
every member physically and checks the forward pass still works.

Indices change after every prune, so groups are snapshots: call :func:`channel_groups` again
after pruning (:func:`refresh_groups` is the same call under a name that says why). The graph
itself stays valid, and every step is recorded in :func:`history` so it can be :func:`replay`-ed
on a fresh copy of the unpruned model.

What is not pruned, on purpose (the group is left out of :func:`channel_groups`):

- the output features of the layers producing the model output (the classifier), found by
  walking back from the traced output;
- groups touching a *grouped* convolution that is not depthwise (RegNet, ResNeXt, ShuffleNet
  branches): Torch-Pruning 1.6's low-level prune of such convs does not keep the per-group
  channel blocks consistent; the reason is listed by :func:`skipped_groups`;
- groups touching ``nn.MultiheadAttention`` (ViT): pruning it needs per-head rounding we do
  not do yet.

Bare parameters that scale channels (ConvNeXt's ``layer_scale``) are members too: ``module`` is
their owner and ``param`` names the parameter.

Models that regroup channels through 5-D views (channel shuffle in ShuffleNetV2, windowed
attention in Swin and MaxViT) cannot be pruned through index mapping at all:
:func:`build_graph` raises :class:`PruningError`.

Beyond groups, the traced graph answers a few questions about the data flow after a layer
(:func:`path_after`, :func:`batchnorm_after`, :func:`is_gate`), so that code folding or
removing channels (:mod:`edgeprune.pruning.materialize`) never reaches into Torch-Pruning.

Threads: several threads may prune different models at once. Torch-Pruning keeps some state
process-wide (its pruning functions are shared objects that are told the axis to cut just before
each call, and Python's warning filters are global), so every call into it here (tracing
included) runs under one lock; forward checks, scoring and training run outside it. A
:class:`Graph` itself belongs to one thread at a time.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import graph as _tp_graph

from edgeprune._warnings import routed
from edgeprune.errors import PruningError

__all__ = [
    "HISTORY_VERSION",
    "ChannelGroup",
    "Graph",
    "Member",
    "PathNode",
    "add_bias",
    "batchnorm_after",
    "build_graph",
    "channel_groups",
    "check_forward",
    "flatten_tensors",
    "group_of",
    "history",
    "is_depthwise",
    "is_gate",
    "path_after",
    "prune_group",
    "refresh_groups",
    "replay",
    "skipped_groups",
]

HISTORY_VERSION = 1

Inputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]

_CONV = nn.modules.conv._ConvNd
_NORM = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)


@dataclass(frozen=True)
class Member:
    """One coupled layer of a group and the channels of it that follow the root's channels.

    In the common one-to-one case root channel ``k`` is this module's channel ``idxs[k]``.
    In general (a linear layer after ``flatten`` owns several input features per channel; a
    consumer of ``split`` sees only some root channels) the pairs are
    ``(idxs[j], root_idxs[j])``; they are sorted by root channel.
    """

    name: str
    module: nn.Module
    dim: str  # "out": output channels / features / norm channels are cut; "in": input channels
    idxs: tuple[int, ...]
    root_idxs: tuple[int, ...] = ()
    param: str = ""  # set when the member is a bare parameter of ``module`` (a layer scale)
    param_dim: int = 0  # the axis of ``param`` that is cut

    @functools.cached_property
    def one_to_one(self) -> bool:
        """True when root channel k is exactly ``idxs[k]`` (no flatten/split remapping)."""
        return self.root_idxs == tuple(range(len(self.root_idxs)))


@dataclass(frozen=True)
class ChannelGroup:
    """The root's prunable output channels and every layer coupled to them."""

    root: str
    size: int
    members: tuple[Member, ...]

    def weights(self) -> list[tuple[Member, torch.Tensor]]:
        """For each parametrised member, its weight slices per root channel.

        Each tensor has shape ``(size, n)``: row ``k`` holds the (flattened) weights that go
        when root channel ``k`` goes — a conv's filter for "out", a next conv's input slice for
        "in", a norm's scale. Members that do not cover every root channel uniformly (split
        consumers) are left out.
        """
        result: list[tuple[Member, torch.Tensor]] = []
        for member in self.members:
            weight = getattr(member.module, member.param or "weight", None)
            if not isinstance(weight, torch.Tensor):
                continue
            axis = _weight_axis(member)
            picked = weight.detach().index_select(axis, torch.tensor(member.idxs, dtype=torch.long))
            picked = picked.movedim(axis, 0)
            if len(member.idxs) % self.size or sorted(set(member.root_idxs)) != list(
                range(self.size)
            ):
                continue
            result.append((member, picked.reshape(self.size, -1)))
        return result


@dataclass
class Graph:
    """A model, its Torch-Pruning dependency graph and the record of what was pruned.

    Treat it as opaque: the fields are for this module.
    """

    model: nn.Module
    example_inputs: Inputs
    output_shapes: list[tuple[int, ...]]
    protected: frozenset[str]
    ignored: frozenset[str]
    skipped: dict[str, str] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    _dg: Any = field(default=None, repr=False)  # Torch-Pruning's DependencyGraph; engine only


# --- building ----------------------------------------------------------------------------------


def build_graph(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    ignored_layers: Collection[str] = (),
) -> Graph:
    """Trace ``model`` once and return the graph every other call works on.

    ``ignored_layers`` names modules whose *output* channels must never be pruned (their
    input channels still follow the layers before them). The layers producing the model's
    output are always protected.
    """
    names = {name for name, _ in model.named_modules()}
    unknown = sorted(set(ignored_layers) - names)
    if unknown:
        raise PruningError(
            f"ignored layer(s) not in the model: {', '.join(unknown)}",
            hint="use qualified module names as `edgeprune info MODEL` lists them "
            "(model.named_modules())",
        )
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), _torch_pruning():
            outputs = _forward(model, example_inputs)
            _refuse_channel_shuffle(model, outputs)
            dg = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs, verbose=False
            )
    except PruningError:
        raise
    except Exception as exc:  # tracing fails in many ways; say which model
        raise PruningError(
            f"cannot trace {type(model).__name__} for pruning: {exc}",
            hint="check that the example inputs match the model (shape, dtype, count)",
        ) from exc
    finally:
        model.train(was_training)
    graph = Graph(
        model=model,
        example_inputs=example_inputs,
        output_shapes=[tuple(t.shape) for t in flatten_tensors(outputs)],
        protected=frozenset(_output_layers(dg)),
        ignored=frozenset(ignored_layers),
        _dg=dg,
    )
    return graph


def _forward(model: nn.Module, example_inputs: Inputs) -> Any:
    if isinstance(example_inputs, torch.Tensor):
        return model(example_inputs)
    return model(*example_inputs)


def flatten_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in a model output (a tensor, or nested tuples/lists/dicts of them), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in flatten_tensors(item)]
    return []


# Torch-Pruning's pruning functions are process-wide singletons whose ``pruning_dim`` is set
# right before each use: that does not survive two threads. Every call into Torch-Pruning holds
# this lock (re-entrant: listing groups calls back into the graph). Its warnings are dropped per
# thread through edgeprune._warnings, which an export capturing warnings shares.
_TP_LOCK = threading.RLock()


@contextmanager
def _torch_pruning() -> Iterator[None]:
    """Hold the Torch-Pruning lock, with its warnings silenced (they repeat what we report)."""
    with _TP_LOCK, routed(None):
        yield


def _refuse_channel_shuffle(model: nn.Module, outputs: Any) -> None:
    """Channel shuffle views channels as (groups, c/groups), transposes and flattens back.

    Torch-Pruning 1.6 maps indices through 4-D/1-D reshapes only (and fails on ShuffleNetV2
    with a bare division by zero), so indices crossing a shuffle cannot be right. The
    signature in the autograd graph is a view or reshape whose *input* is 5-D.
    """
    stack = [t.grad_fn for t in flatten_tensors(outputs) if t.grad_fn is not None]
    seen: set[int] = set()
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        sizes = getattr(fn, "_saved_self_sym_sizes", None) or getattr(fn, "_saved_self_sizes", None)
        is_view = "View" in fn.name() or "Reshape" in fn.name()
        if is_view and sizes is not None and len(sizes) == 5:
            raise PruningError(
                f"{type(model).__name__} regroups channels through a 5-D view (channel "
                "shuffle or windowed/head attention), which the pruning engine cannot map",
                hint="choose an architecture without channel shuffle (e.g. mobilenet_v2/v3, "
                "resnet, efficientnet) or prune this one unstructured",
            )
        stack.extend(f for f, _ in fn.next_functions if f is not None)


def _output_layers(dg: Any) -> set[str]:
    """Names of the conv/linear layers whose output channels reach the model output.

    Walk back from each traced output through parameter-free ops, norms and depthwise convs
    (they keep the channel count), stopping at the first conv/linear on each path.
    """
    found: set[str] = set()
    # a sink is either tp's output op or the module whose result is returned as is
    stack = [n for n in dg.module2node.values() if not n.outputs]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        module = node.module
        name = dg._module2name.get(module)
        if isinstance(module, (_CONV, nn.Linear, nn.MultiheadAttention)) and name is not None:
            found.add(name)
            if not is_depthwise(module):
                continue
        stack.extend(node.inputs)
    return found


# --- groups ------------------------------------------------------------------------------------


def channel_groups(graph: Graph, *, ignored_layers: Collection[str] = ()) -> list[ChannelGroup]:
    """Every prunable group of the model as it is now, one per root layer.

    A group is left out when one of its "out" members is protected (the classifier), named in
    ``ignored_layers`` here or at :func:`build_graph`, or unsupported (see
    :func:`skipped_groups` for the reason).
    """
    dg = graph._dg
    blocked = graph.protected | graph.ignored | frozenset(ignored_layers)
    groups: list[ChannelGroup] = []
    graph.skipped.clear()
    with _torch_pruning(), _index_mapping_computed_once(dg):
        for tp_group in dg.get_all_groups(root_module_types=(_CONV, nn.Linear)):
            group = _convert(dg, tp_group)
            if group is None:
                continue
            if any(m.dim == "out" and m.name in blocked for m in group.members):
                continue
            reason = _unsupported(group)
            if reason:
                graph.skipped[group.root] = reason
                continue
            groups.append(group)
    return groups


def group_of(graph: Graph, root: str) -> ChannelGroup:
    """The current group rooted at layer ``root`` (cheaper than :func:`channel_groups`).

    Raises :class:`PruningError` when ``root`` is not a conv/linear of the model or its group is
    protected, ignored or unsupported.
    """
    dg = graph._dg
    module = _module_by_name(graph.model, root)
    _out_channels(module)
    pruner = dg.get_pruner_of_module(module)
    with _torch_pruning():
        tp_group = dg.get_pruning_group(
            module, pruner.prune_out_channels, list(range(_out_channels(module)))
        )
    group = _convert(dg, tp_group)
    if group is None:
        raise PruningError(f"{root} is not part of the traced graph", hint="")
    blocked = graph.protected | graph.ignored
    hit = [m.name for m in group.members if m.dim == "out" and m.name in blocked]
    if hit:
        raise PruningError(
            f"the group of {root} contains {hit[0]}, whose output channels are kept",
            hint="choose another group from channel_groups(graph)",
        )
    reason = _unsupported(group)
    if reason:
        raise PruningError(f"the group of {root} cannot be pruned: {reason}", hint="")
    return group


@contextmanager
def _index_mapping_computed_once(dg: Any) -> Iterator[None]:
    """Let Torch-Pruning compute concat/split index offsets once for a batch of groups.

    ``get_pruning_group`` recomputes every offset of the whole graph on each call, which is
    quadratic in the number of layers (DenseNet-121: 5 s per listing instead of 0.3 s). The
    offsets only change when something is pruned, so while this thread lists the groups of
    ``dg`` the recomputation is skipped for ``dg`` alone (see :class:`_IndexMappingSwitch`):
    other graphs, and other threads, still get the real one.
    """
    _install_index_mapping_switch()
    _tp_graph.index_mapping.update_index_mapping(dg)
    listing = _graphs_listed_here()
    listing.add(id(dg))
    try:
        yield
    finally:
        listing.discard(id(dg))


class _IndexMappingSwitch:
    """Stands in for the ``index_mapping`` module inside ``torch_pruning.dependency.graph``.

    Installed once and never removed (swapping the attribute in and out around each listing
    was a race between threads: one thread could restore another's stand-in for good). It is
    the real module, except that ``update_index_mapping(dg)`` does nothing while the calling
    thread is inside :func:`_index_mapping_computed_once` for that very ``dg``.
    """

    installed_by_edgeprune = True

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def update_index_mapping(self, dg: Any) -> None:
        if id(dg) not in _graphs_listed_here():
            self._real.update_index_mapping(dg)


_listing = threading.local()


def _graphs_listed_here() -> set[int]:
    """``id`` of each DependencyGraph whose groups this thread is listing right now."""
    ids: set[int] | None = getattr(_listing, "graphs", None)
    if ids is None:
        ids = _listing.graphs = set()
    return ids


def _install_index_mapping_switch() -> None:
    with _TP_LOCK:
        if not getattr(_tp_graph.index_mapping, "installed_by_edgeprune", False):
            _tp_graph.index_mapping = _IndexMappingSwitch(_tp_graph.index_mapping)


def refresh_groups(graph: Graph, *, ignored_layers: Collection[str] = ()) -> list[ChannelGroup]:
    """Fresh groups after a prune: indices and sizes of older groups are stale.

    Same as :func:`channel_groups`; the graph stays valid across prunes.
    """
    return channel_groups(graph, ignored_layers=ignored_layers)


def skipped_groups(graph: Graph) -> dict[str, str]:
    """Root name → why its group is not offered, from the last :func:`channel_groups` call."""
    return dict(graph.skipped)


def _convert(dg: Any, tp_group: Any) -> ChannelGroup | None:
    root_module = tp_group[0].dep.target.module
    root = dg._module2name.get(root_module)
    if root is None:
        return None
    size = len(tp_group[0].idxs)
    members: list[Member] = []
    for item in tp_group.items:
        module = item.dep.target.module
        name = dg._module2name.get(module)
        if isinstance(module, nn.Parameter):
            members.append(_parameter_member(dg, module, item))
            continue
        has_params = any(True for _ in module.parameters(recurse=False))
        if name is None or not (has_params or isinstance(module, nn.MultiheadAttention)):
            continue
        pairs = sorted(zip(item.root_idxs, item.idxs, strict=True))
        dim = _member_dim(dg, item.dep.handler, module)
        members.append(
            Member(
                name=name,
                module=module,
                dim=dim,
                idxs=tuple(int(i) for _, i in pairs),
                root_idxs=tuple(int(r) for r, _ in pairs),
            )
        )
    return ChannelGroup(root=root, size=size, members=tuple(members))


def _parameter_member(dg: Any, param: nn.Parameter, item: Any) -> Member:
    """A bare parameter (ConvNeXt's layer scale) as a member: its owner module plus ``param``."""
    qualified = dg._param_to_name.get(param, "")
    owner_name, _, attr = qualified.rpartition(".")
    owner = dg.model.get_submodule(owner_name) if qualified else _Unknown()
    pairs = sorted(zip(item.root_idxs, item.idxs, strict=True))
    return Member(
        name=qualified or "<parameter>",
        module=owner,
        dim="out",
        idxs=tuple(int(i) for _, i in pairs),
        root_idxs=tuple(int(r) for r, _ in pairs),
        param=attr,
        param_dim=int(dg.module2node[param].pruning_dim),
    )


class _Unknown(nn.Module):
    """Owner of a parameter Torch-Pruning could not name; its group is refused."""


def _member_dim(dg: Any, handler: Callable[..., Any], module: nn.Module) -> str:
    pruner = dg.get_pruner_of_module(module)
    if pruner is not None and handler == pruner.prune_out_channels:
        return "out"
    if handler == tp.pruner.function.prune_depthwise_conv_out_channels:
        return "out"
    return "in"


def is_depthwise(module: nn.Module) -> bool:
    """True for a depthwise conv: one filter per channel (``groups == out_channels > 1``).

    It keeps the channel count and moves each channel on its own, so its channels follow the
    layer before it rather than starting a group.
    """
    return isinstance(module, _CONV) and module.groups == module.out_channels > 1


def _unsupported(group: ChannelGroup) -> str | None:
    for member in group.members:
        module = member.module
        if isinstance(module, _Unknown):
            return "an unnamed bare parameter"
        if isinstance(module, nn.MultiheadAttention):
            return f"{member.name}: multi-head attention needs per-head pruning"
        if isinstance(module, _CONV) and module.groups > 1 and not is_depthwise(module):
            return f"{member.name}: grouped convolution (groups={module.groups})"
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            continue
    return None


def _weight_axis(member: Member) -> int:
    module = member.module
    if member.param:
        return member.param_dim % getattr(module, member.param).dim()
    if isinstance(module, _CONV):
        transposed = bool(getattr(module, "transposed", False))
        if member.dim == "out" or is_depthwise(module):
            return 1 if transposed else 0
        return 0 if transposed else 1
    if isinstance(module, nn.Linear):
        return 0 if member.dim == "out" else 1
    if isinstance(module, nn.LayerNorm):
        return module.weight.dim() - 1
    return 0


# --- data flow after a layer ------------------------------------------------------------------


@dataclass(frozen=True)
class PathNode:
    """One node of the traced data flow after a layer (see :func:`path_after`)."""

    name: str | None  # the layer's qualified name; None for an operation (add, mul, relu, view...)
    module: nn.Module | None  # the layer itself when ``name`` is set
    inputs: int  # tensors flowing in: more than one where branches join (add, mul, concat)
    is_multiply: bool  # an element-wise product
    has_parameters: bool  # a layer with weights of its own, or a bare parameter


def path_after(graph: Graph, module: nn.Module) -> Iterator[PathNode]:
    """The nodes ``module``'s output flows through for as long as the flow does not branch.

    The first node is the only consumer of ``module``'s output, the next the only consumer of
    that one, and so on; the path ends after a node whose output goes to several consumers (or
    to none). Nodes where other branches join in (``inputs > 1``) are part of the path: the
    caller decides whether to stop there. Empty when ``module`` is not in the traced graph or
    its output branches at once.
    """
    dg = graph._dg
    node = dg.module2node.get(module)
    while node is not None and len(node.outputs) == 1:
        node = node.outputs[0]
        yield _path_node(dg, node)


def _path_node(dg: Any, node: Any) -> PathNode:
    module = node.module
    name = dg._module2name.get(module)
    if isinstance(module, nn.Parameter):
        has_parameters = True
    else:
        has_parameters = any(True for _ in module.parameters(recurse=False))
    return PathNode(
        name=name,
        module=module if name is not None else None,
        inputs=len(node.inputs),
        is_multiply="mul" in str(getattr(module, "_grad_fn", "")).lower(),
        has_parameters=has_parameters,
    )


def batchnorm_after(graph: Graph, module: nn.Module) -> nn.modules.batchnorm._BatchNorm | None:
    """The BatchNorm (with running statistics) that reads ``module``'s output alone, if any."""
    first = next(path_after(graph, module), None)
    if first is None or first.inputs != 1:
        return None
    norm = first.module
    if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_mean is not None:
        return norm
    return None


def is_gate(graph: Graph, module: nn.Module) -> bool:
    """True when ``module``'s output only scales another tensor.

    Its unbranched path, through operations without parameters, ends in an element-wise
    product: the scale branch of a squeeze-excitation block. A layer on the way (even a
    parameter-free one the model names) means it is not a plain gate.
    """
    for node in path_after(graph, module):
        if node.inputs > 1:
            return node.is_multiply
        if node.name is not None:
            return False
    return False


# --- pruning -----------------------------------------------------------------------------------


def prune_group(
    graph: Graph,
    group: ChannelGroup,
    channels: Sequence[int],
    *,
    check: bool = True,
) -> None:
    """Physically remove root channels ``channels`` (0..size-1) from every member of ``group``.

    With ``check`` (the default) the forward pass is run on the graph's example inputs and its
    output shapes compared with the unpruned model's; a failure names the layer.
    """
    chosen = sorted({int(c) for c in channels})
    if not chosen:
        return
    root_module = _module_by_name(graph.model, group.root)
    current = _out_channels(root_module)
    if current != group.size:
        raise PruningError(
            f"stale group for {group.root}: it has {current} channels, the group says {group.size}",
            hint="call channel_groups(graph) again after every prune",
        )
    bad = [c for c in chosen if not 0 <= c < group.size]
    if bad:
        raise PruningError(
            f"channel indices {bad} out of range for {group.root} (0..{group.size - 1})",
            hint="pass root channel indices of this group",
        )
    if len(chosen) >= group.size:
        raise PruningError(
            f"pruning {len(chosen)} of {group.size} channels would remove all of {group.root}",
            hint="keep at least one channel in every group",
        )
    _prune_root(graph, group.root, chosen)
    if check:
        check_forward(graph.model, graph.example_inputs, graph.output_shapes)


def _prune_root(graph: Graph, root: str, channels: list[int]) -> None:
    dg = graph._dg
    module = _module_by_name(graph.model, root)
    pruner = dg.get_pruner_of_module(module)
    with _torch_pruning():
        tp_group = dg.get_pruning_group(module, pruner.prune_out_channels, channels)
        if not dg.check_pruning_group(tp_group):
            raise PruningError(
                f"pruning {len(channels)} channels of {root} would empty a coupled layer",
                hint="prune fewer channels from this group",
            )
        try:
            tp_group.prune(record_history=False)
        except AssertionError as exc:
            raise PruningError(f"cannot prune {root}: {exc}", hint="skip this group") from exc
    graph.steps.append({"root": root, "channels": channels})


def _module_by_name(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise PruningError(
            f"no layer named {name!r} in the model",
            hint="the history or group belongs to a different model",
        ) from exc


def _out_channels(module: nn.Module) -> int:
    if isinstance(module, _CONV):
        return int(module.out_channels)
    if isinstance(module, nn.Linear):
        return int(module.out_features)
    raise PruningError(f"{type(module).__name__} is not a conv/linear root", hint="")


def check_forward(
    model: nn.Module,
    example_inputs: Inputs,
    expected_shape: tuple[int, ...] | Sequence[tuple[int, ...]],
) -> None:
    """Run ``model`` on ``example_inputs`` and compare output shape(s) with ``expected_shape``.

    Raises :class:`PruningError` naming the innermost layer that failed, or the mismatching
    output. ``expected_shape`` is one shape or a list of shapes (one per output tensor).
    """
    expected = (
        [tuple(expected_shape)]  # type: ignore[arg-type]
        if expected_shape and isinstance(next(iter(expected_shape)), int)
        else [tuple(s) for s in expected_shape]  # type: ignore[union-attr]
    )
    stack: list[str] = []
    failed: list[str] = []
    names = {module: name for name, module in model.named_modules()}

    def enter(module: nn.Module, _args: Any) -> None:
        stack.append(names.get(module, type(module).__name__))

    def leave(_module: nn.Module, _args: Any, _out: Any) -> None:
        if stack:
            stack.pop()

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = _forward(model, example_inputs)
    except Exception as exc:  # any failure means the prune broke it
        failed = [s for s in stack if s]
        layer = failed[-1] if failed else type(model).__name__
        raise PruningError(
            f"forward pass fails after pruning, at layer {layer!r}: {exc}",
            hint="this group cannot be pruned with the current engine; report the model",
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    got = [tuple(t.shape) for t in flatten_tensors(out)]
    if got != expected:
        raise PruningError(
            f"output shape changed after pruning: {got} instead of {expected}",
            hint="the layers producing the output must not be pruned; pass them as ignored",
        )


# --- widths, history, replay -------------------------------------------------------------------


def add_bias(graph: Graph, layer: str) -> nn.Parameter:
    """Give conv/linear ``layer`` a zero bias if it has none (recorded in the history).

    Folding a constant channel into the next layer needs a bias there; recording it lets
    :func:`replay` rebuild the same parameter set. Returns the (new or existing) bias.
    """
    module = _module_by_name(graph.model, layer)
    if getattr(module, "bias", None) is None:
        _add_bias(module)
        graph.steps.append({"op": "add_bias", "layer": layer})
    return module.bias


def _add_bias(module: nn.Module) -> None:
    if not isinstance(module, (_CONV, nn.Linear)):
        raise PruningError(
            f"cannot add a bias to {type(module).__name__}", hint="only conv/linear layers"
        )
    if module.bias is None:
        rows = module.weight.shape[1 if getattr(module, "transposed", False) else 0]
        if getattr(module, "transposed", False):
            rows *= module.groups
        module.bias = nn.Parameter(torch.zeros(rows, dtype=module.weight.dtype))


def history(graph: Graph) -> list[dict[str, Any]]:
    """Every prune step so far, JSON-serialisable, in order.

    A prune step is ``{"version": 1, "root": name, "channels": [root channel indices at the
    time of the step]}``; indices refer to the model as it was just before that step. A layer
    that received a (zero) bias it did not have — :func:`add_bias`, used when a constant channel
    is folded away — is ``{"version": 1, "op": "add_bias", "layer": name}``.
    """
    return [{"version": HISTORY_VERSION, **copy.deepcopy(step)} for step in graph.steps]


def replay(
    model: nn.Module,
    example_inputs: Inputs,
    steps: Sequence[dict[str, Any]],
) -> nn.Module:
    """Apply a recorded :func:`history` to ``model`` (the unpruned architecture), in place.

    Returns the model for convenience. Weights are not part of the history: load the pruned
    state dict afterwards.
    """
    graph = build_graph(model, example_inputs)
    for number, step in enumerate(steps):
        version = step.get("version", HISTORY_VERSION)
        if version != HISTORY_VERSION:
            raise PruningError(
                f"pruning history step {number} has version {version}",
                hint=f"this edgeprune replays version {HISTORY_VERSION}",
            )
        if step.get("op", "prune") == "add_bias":
            _add_bias(_module_by_name(model, str(step.get("layer", ""))))
            continue
        try:
            root, channels = str(step["root"]), [int(c) for c in step["channels"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise PruningError(
                f"pruning history step {number} is malformed: {step!r}",
                hint="expected {'root': name, 'channels': [int, ...]}",
            ) from exc
        module = _module_by_name(model, root)
        size = _out_channels(module)
        if not channels or max(channels) >= size or min(channels) < 0 or len(channels) >= size:
            raise PruningError(
                f"pruning history step {number} does not fit {root} ({size} channels)",
                hint="replay the history on the architecture it was recorded on",
            )
        _prune_root(graph, root, sorted(set(channels)))
    check_forward(model, example_inputs, graph.output_shapes)
    return model
