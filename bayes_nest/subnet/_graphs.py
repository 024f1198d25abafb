"""Small ``torch.fx`` graphs the exporters build: residual chains, branch sums, channel scales."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import fx, nn

__all__ = ["branch_sum", "channel_scale", "graph_module", "residual_chain", "symbolic_trace"]


def symbolic_trace(module: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` without type annotations on the graph's nodes.

    Annotated ``forward`` signatures put the annotation's type into the generated code's
    globals, which some torch versions cannot pickle (``torch.save`` of the result fails).
    """
    gm = fx.symbolic_trace(module)
    for node in gm.graph.nodes:
        node.type = None
    gm.recompile()
    return gm


def graph_module(
    children: Mapping[str, nn.Module],
    build: Callable[[fx.Graph, fx.Node], fx.Node],
    class_name: str,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> fx.GraphModule:
    """A ``GraphModule`` over ``children`` whose graph ``build(graph, x)`` returns the output."""
    root = nn.Module()
    for name, child in children.items():
        root.add_module(name, child)
    for name, value in (buffers or {}).items():
        root.register_buffer(name, value)
    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output(build(graph, x))
    return fx.GraphModule(root, graph, class_name=class_name)


def channel_scale(scale: torch.Tensor, channel_dim: int, ndim: int) -> fx.GraphModule:
    """``x -> x * scale`` along ``channel_dim`` of an ``ndim``-dimensional input."""
    shape = [1] * ndim
    shape[channel_dim] = -1

    def build(graph: fx.Graph, x: fx.Node) -> fx.Node:
        return graph.call_function(operator.mul, (x, graph.get_attr("scale")))

    return graph_module({}, build, "ChannelScale", {"scale": scale.detach().clone().view(shape)})


def residual_chain(
    steps: Sequence[tuple[nn.Module, bool, float | None]], class_name: str
) -> fx.GraphModule:
    """Apply ``steps`` in order: ``(module, residual, scale)`` computes ``x = m(x)`` when not
    residual, else ``x = x + scale·m(x)`` (no multiplication when ``scale`` is ``None``)."""
    children = {f"block{i}": m for i, (m, _, _) in enumerate(steps)}

    def build(graph: fx.Graph, x: fx.Node) -> fx.Node:
        for i, (_, residual, scale) in enumerate(steps):
            y = graph.call_module(f"block{i}", (x,))
            if not residual:
                x = y
                continue
            if scale is not None:
                y = graph.call_function(operator.mul, (y, float(scale)))
            x = graph.call_function(operator.add, (x, y))
        return x

    return graph_module(children, build, class_name)


def branch_sum(
    branches: Sequence[nn.Module], scales: Sequence[float | None], residual: bool, class_name: str
) -> fx.GraphModule:
    """``y = (x if residual) + Σ_p scale_p · branch_p(x)``."""
    children = {f"branch{i}": m for i, m in enumerate(branches)}

    def build(graph: fx.Graph, x: fx.Node) -> fx.Node:
        total = x if residual else None
        for i, scale in enumerate(scales):
            y = graph.call_module(f"branch{i}", (x,))
            if scale is not None:
                y = graph.call_function(operator.mul, (y, float(scale)))
            total = y if total is None else graph.call_function(operator.add, (total, y))
        return total

    return graph_module(children, build, class_name)
