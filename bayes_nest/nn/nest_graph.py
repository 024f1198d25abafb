"""Following the data flow of a plain network with ``torch.fx``: which layers :func:`nest` can nest.

A layer's output width can become an axis only if every use of its output, after the batch norm
and activation fused into the nested layer, ends in a layer that accepts a narrowed input (a
linear or convolution layer, sliced on its input side) and passes on the way only through
operations that keep the kept channels a *prefix* and send a dropped (zero) channel to zero:
dropout, zero-preserving elementwise activations (``relu``, ``gelu``, ``tanh``, ...), pooling,
flattening ``(N, C, H, W) -> (N, C·H·W)`` (channel-major, so ``c`` kept channels are the first
``c·H·W`` features) and spatial means. Residual sums, concatenations, other layers' parameters
and anything this module does not know stop a layer from being nested; it is then left whole,
which is always safe because whole layers never narrow anything.
"""

from __future__ import annotations

import builtins
import operator
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .axis import NestedModule
from .bayesian import BayesianConv2d, BayesianLinear
from .width import NestedConv2d, NestedLinear, SlicedConv2d, SlicedLinear

__all__ = ["LayerPlan", "NestError", "plan_layers"]

LINEAR, CONV = "linear", "conv"  # layouts: channels on the last dim / on dim 1 of (N, C, H, W)

# fmt: off
# Elementwise activations with f(0) = 0 (a dropped, zero channel stays zero through them), those
# with f(0) != 0 (fine only when fused before the mask), and other zero-preserving modules.
_ZERO_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Tanh, nn.Softsign, nn.Tanhshrink,
)
_NONZERO_ACTIVATIONS = (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus, nn.LogSigmoid)
_ZERO_MODULES = (*_ZERO_ACTIVATIONS, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ZERO_FUNCTIONS = {
    F.relu, torch.relu, F.relu_, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu,
    F.gelu, F.silu, F.mish, F.hardswish, torch.tanh, F.tanh, F.softsign,
    F.dropout, F.dropout1d, F.dropout2d, torch.dropout,
}
# fmt: on
_POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
_ZERO_METHODS = {"relu", "relu_", "tanh", "tanh_", "contiguous", "clone"}
_META_METHODS = {"size", "dim"}
_SPATIAL_DIMS = ({2, 3}, {-2, -1})
# Layers taking a narrowed input: the converted plain layers and the package's own.
_LINEAR_CONSUMERS = (nn.Linear, NestedLinear, BayesianLinear)
_CONV_CONSUMERS = (nn.Conv2d, NestedConv2d, BayesianConv2d)


class NestError(ValueError):
    """A network (or one of its layers) that :func:`~bayes_nest.nn.nest` cannot nest."""


@dataclass(frozen=True)
class LayerPlan:
    """What :func:`~bayes_nest.nn.nest` does with one ``nn.Linear`` / ``nn.Conv2d`` layer.

    Attributes
    ----------
    path : str
        Module path of the layer (also the axis name when it is nested).
    kind : str
        ``"linear"`` or ``"conv"``.
    role : str
        ``"nested"`` (its output width becomes an axis), ``"output"`` (an output layer: kept
        whole, sliced on its input side) or ``"whole"`` (kept whole, see ``reason``).
    reason : str
        Why a ``"whole"`` layer is not nested (empty otherwise).
    norm, activation : str or None
        Paths of the batch norm and activation module fused into the nested layer.
    """

    path: str
    kind: str
    role: str
    reason: str = ""
    norm: str | None = None
    activation: str | None = None


class _Tracer(fx.Tracer):
    """Keeps layers, the package's nested layers and the user's leaf types opaque."""

    def __init__(self, leaves: tuple[type, ...]) -> None:
        super().__init__()
        self.leaves = (nn.Linear, nn.Conv2d, NestedModule, BayesianLinear, BayesianConv2d, *leaves)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, module_qualified_name)


def trace_graph(model: nn.Module, leaves: tuple[type, ...] = ()) -> fx.Graph:
    """The ``torch.fx`` graph of ``model.forward`` (layers as opaque calls)."""
    try:
        return _Tracer(leaves).trace(model)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise NestError(
            f"nest follows the data flow of {type(model).__name__}.forward with torch.fx, which "
            f"failed ({type(err).__name__}: {err}). Data-dependent Python control flow cannot be "
            "traced: pass the submodules that contain it as leaf_modules=(TheirClass,) (layers "
            "inside them are then left as they are)"
        ) from err


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, tuple | list):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    else:
        yield value


def _only_first(user: fx.Node, value: fx.Node) -> bool:
    """``value`` is ``user``'s first positional argument and appears nowhere else."""
    uses = sum(arg is value for arg in _leaves((user.args, user.kwargs)))
    return bool(user.args) and user.args[0] is value and uses == 1


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _is_batch_size(node: Any) -> bool:
    """``x.size(0)``, ``x.shape[0]`` or ``x.size()[0]`` of some tensor."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_method" and node.target == "size":
        return _arg(node, 1, "dim") == 0
    if node.op == "call_function" and node.target is operator.getitem and node.args[1] == 0:
        source = node.args[0]
        return isinstance(source, fx.Node) and (
            (source.op == "call_function" and source.args[1:2] == ("shape",))
            or (source.op == "call_method" and source.target == "size" and len(source.args) == 1)
        )
    return False


def _spatial_mean(node: fx.Node) -> str | None:
    """The layout after ``mean`` over the spatial dims of a conv output, else ``None``."""
    dims = _arg(node, 1, "dim")
    dims = {dims} if isinstance(dims, int) else set(dims or ())
    if dims not in _SPATIAL_DIMS:
        return None
    return CONV if _arg(node, 2, "keepdim", False) else LINEAR


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r}"
    name = getattr(node.target, "__name__", str(node.target))
    return f"method .{name}()" if node.op == "call_method" else f"function {name}()"


def _unknown(user: fx.Node) -> str:
    return (
        f"its output reaches {_describe(user)}, which nest cannot follow (residual sums, "
        "concatenations, reshapes and unknown operations need the full width)"
    )


class _Flow:
    """Classifies the uses of a narrowed value in one traced graph."""

    def __init__(self, model: nn.Module, graph: fx.Graph) -> None:
        self.modules = dict(model.named_modules())
        self.calls = Counter(n.target for n in graph.nodes if n.op == "call_module")

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.modules[node.target] if node.op == "call_module" else None

    def step(self, user: fx.Node, value: fx.Node, layout: str, plain_ok: bool) -> tuple[str, Any]:
        """``("meta", None)``, ``("pass", layout)``, ``("end", None)`` or ``("stop", reason)``."""
        if user.op == "output":
            return "stop", "its output is an output of the model"
        if user.op == "call_method" and user.target in _META_METHODS:
            return "meta", None
        if user.op == "call_function" and user.target is builtins.getattr:
            return "meta", None
        module = self.module(user)
        if not _only_first(user, value):
            return "stop", _unknown(user)
        if module is not None:
            return self._module_step(user, module, layout, plain_ok)
        if user.op == "call_function":
            if user.target in _ZERO_FUNCTIONS:
                return "pass", layout
            if user.target in _POOL_FUNCTIONS and layout == CONV:
                if not _arg(user, 5, "return_indices", False):
                    return "pass", CONV
            if user.target is torch.flatten and layout == CONV:
                if _arg(user, 1, "start_dim", 0) == 1 and _arg(user, 2, "end_dim", -1) == -1:
                    return "pass", LINEAR
            if user.target is torch.mean and layout == CONV and _spatial_mean(user):
                return "pass", _spatial_mean(user)
        if user.op == "call_method":
            if user.target in _ZERO_METHODS:
                return "pass", layout
            if layout == CONV:
                if user.target == "flatten" and _arg(user, 1, "start_dim", 0) == 1:
                    if _arg(user, 2, "end_dim", -1) == -1:
                        return "pass", LINEAR
                if user.target in ("view", "reshape") and len(user.args) == 3:
                    if _is_batch_size(user.args[1]) and user.args[2] == -1:
                        return "pass", LINEAR
                if user.target == "mean" and _spatial_mean(user):
                    return "pass", _spatial_mean(user)
        return "stop", _unknown(user)

    def _module_step(
        self, user: fx.Node, module: nn.Module, layout: str, plain_ok: bool
    ) -> tuple[str, Any]:
        name = f"{type(module).__name__} {user.target!r}"
        if isinstance(module, _LINEAR_CONSUMERS + _CONV_CONSUMERS):
            wanted = LINEAR if isinstance(module, _LINEAR_CONSUMERS) else CONV
            if layout != wanted:
                return "stop", f"its output reaches {name} in a layout that layer cannot slice"
            if isinstance(module, nn.Conv2d) and module.groups != 1:
                return "stop", f"its output feeds the grouped convolution {name}"
            if type(module) in (nn.Linear, nn.Conv2d):
                return ("end", None) if plain_ok else ("plain", name)
            if isinstance(module, nn.Linear | nn.Conv2d) and not isinstance(
                module, SlicedLinear | SlicedConv2d
            ):
                return "stop", f"its output feeds {name}, a subclass nest does not know"
            return "end", None
        if isinstance(module, _ZERO_MODULES):
            if isinstance(module, nn.Hardtanh) and not module.min_val <= 0 <= module.max_val:
                return "stop", f"its output reaches {name}, which does not keep zeros at zero"
            return "pass", layout
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return "pass", layout
        if isinstance(module, _POOL_MODULES) and layout == CONV:
            if not getattr(module, "return_indices", False):
                return "pass", CONV
        if isinstance(module, nn.Flatten) and layout == CONV:
            if (module.start_dim, module.end_dim) == (1, -1):
                return "pass", LINEAR
        return "stop", (
            f"its output reaches {name}, which nest cannot follow (a norm or activation not "
            "directly after the layer, or a module that mixes channels)"
        )

    def walk(self, start: fx.Node, layout: str, plain_ok: bool = True) -> str:
        """Empty when every use of ``start`` ends in a layer taking a narrowed input; else why not."""
        stack, seen = [(start, layout)], set()
        while stack:
            value, layout = stack.pop()
            if (value, layout) in seen:
                continue
            seen.add((value, layout))
            for user in value.users:
                what, result = self.step(user, value, layout, plain_ok)
                if what in ("stop", "plain"):
                    return result if what == "stop" else f"its output feeds the plain {result}"
                if what == "pass":
                    stack.append((user, result))
        return ""

    def reaches_output(self, start: fx.Node) -> bool:
        """Whether the model's output depends on ``start`` without another layer in between."""
        stack, seen = [start], set()
        while stack:
            node = stack.pop()
            for user in node.users:
                if user.op == "output":
                    return True
                module = self.module(user)
                layer = isinstance(module, _LINEAR_CONSUMERS + _CONV_CONSUMERS)
                if not layer and user not in seen:
                    seen.add(user)
                    stack.append(user)
        return False

    def fuse(self, node: fx.Node, kind: str, width: int) -> tuple[fx.Node, str | None, str | None]:
        """The batch norm and activation module directly after ``node`` (each used once)."""
        norm_type = nn.BatchNorm2d if kind == CONV else nn.BatchNorm1d
        end, norm, activation = node, None, None
        nxt = self._single_module_user(end)
        if nxt is not None and isinstance(self.modules[nxt.target], norm_type):
            if self.modules[nxt.target].num_features == width:
                end, norm = nxt, nxt.target
                nxt = self._single_module_user(end)
        if nxt is not None:
            module = self.modules[nxt.target]
            if isinstance(module, _ZERO_ACTIVATIONS + _NONZERO_ACTIVATIONS) or (
                isinstance(module, nn.PReLU) and module.num_parameters == 1
            ):
                end, activation = nxt, nxt.target
        return end, norm, activation

    def _single_module_user(self, node: fx.Node) -> fx.Node | None:
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or self.calls[users[0].target] != 1:
            return None
        return users[0] if _only_first(users[0], node) else None


def plan_layers(
    model: nn.Module, groups: int, leaves: tuple[type, ...] = ()
) -> tuple[list[LayerPlan], fx.Graph]:
    """One :class:`LayerPlan` per plain ``nn.Linear`` / ``nn.Conv2d`` called in ``forward``."""
    graph = trace_graph(model, leaves)
    flow = _Flow(model, graph)
    plans: list[LayerPlan] = []
    done: set[str] = set()
    for node in graph.nodes:
        module = flow.module(node)
        if type(module) not in (nn.Linear, nn.Conv2d) or node.target in done:
            continue
        done.add(node.target)
        kind = LINEAR if isinstance(module, nn.Linear) else CONV
        width = module.out_features if kind == LINEAR else module.out_channels
        calls = flow.calls[node.target]
        plan = LayerPlan(node.target, kind, "whole")
        if calls > 1:
            plans.append(_whole(plan, f"it is called {calls} times in forward"))
        elif kind == CONV and module.groups != 1:
            plans.append(_whole(plan, f"it is a grouped convolution (groups={module.groups})"))
        elif flow.reaches_output(node):
            plans.append(LayerPlan(node.target, kind, "output"))
        elif width % groups:
            plans.append(_whole(plan, f"its {width} outputs are not divisible by groups={groups}"))
        else:
            end, norm, activation = flow.fuse(node, kind, width)
            reason = flow.walk(end, kind)
            role = "whole" if reason else "nested"
            plans.append(LayerPlan(node.target, kind, role, reason, norm, activation))
    return plans, graph


def _whole(plan: LayerPlan, reason: str) -> LayerPlan:
    return LayerPlan(plan.path, plan.kind, "whole", reason)


def narrowing_problems(model: nn.Module) -> list[str]:
    """Plain ``nn.Linear`` / ``nn.Conv2d`` layers fed by a width layer's output in a network
    built from nested layers (they cannot take the narrowed output of a sub-network), one
    message each; ``[]`` when there are none or the network cannot be traced."""
    layers = list(model.modules())
    if not any(type(m) in (nn.Linear, nn.Conv2d) for m in layers) or not any(
        isinstance(m, NestedLinear | NestedConv2d) for m in layers
    ):
        return []  # nothing to check: no trace (and no tracing cost) for the package's models
    try:
        graph = trace_graph(model)
    except NestError:
        return []
    flow = _Flow(model, graph)
    problems = []
    for node in graph.nodes:
        module = flow.module(node)
        if not isinstance(module, NestedLinear | NestedConv2d):
            continue
        if module.axis_always_on == module.axis_size:
            continue  # every block always on: its output never narrows
        stack = [(node, LINEAR if isinstance(module, NestedLinear) else CONV)]
        while stack:
            value, layout = stack.pop()
            for user in value.users:
                what, result = flow.step(user, value, layout, plain_ok=False)
                if what == "pass":
                    stack.append((user, result))
                elif what == "plain":
                    problems.append(f"{result} is fed by the width layer {node.target!r}")
    return problems
