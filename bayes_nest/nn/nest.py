r"""Bring your own network: nest the linear and convolution layers of a plain PyTorch model.

:func:`nest` turns every ``nn.Linear`` / ``nn.Conv2d`` of a plain model whose output width can
be truncated into a :class:`~bayes_nest.nn.NestedLinear` / :class:`~bayes_nest.nn.NestedConv2d`
with ``groups`` ordered blocks (an axis named after the layer's module path), with the batch norm
and activation module that directly follow it fused in, so that the mask multiplies each block
after them, as in the package's own models:

.. math:: y = m \odot \operatorname{act}(\operatorname{norm}(W x + b)).

Every other linear or convolution layer (output layers, and layers that cannot be nested) is kept
whole as a :class:`~bayes_nest.nn.SlicedLinear` / :class:`~bayes_nest.nn.SlicedConv2d`, which
accepts the narrowed output of a nested layer before it (the dropped inputs count as zeros). The
model keeps its own class and ``forward``; the fused modules become ``nn.Identity``. At the full
configuration the result computes exactly what the plain model computed.

Which layers are nested is decided from the data flow of ``forward``, traced with ``torch.fx``
(see :mod:`bayes_nest.nn.nest_graph`): a layer is nested when every use of its output ends in a
layer that can be sliced on its input side, passing only through dropout, zero-preserving
activations, pooling, flattening and spatial means. Layers are kept whole, with a warning
(``strict=True``: an error) naming the layer and the reason, when their output feeds a residual
sum, a concatenation or an operation this module does not know, when they are called more than
once, are grouped convolutions, or have a width not divisible by ``groups``. Output layers (those
the model's output depends on without another layer in between) are kept whole without a
warning. A model whose ``forward`` cannot be traced, or with no layer to nest, is an error.
"""

from __future__ import annotations

import copy
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .axis import NestedModule, axes
from .nest_graph import LayerPlan, NestError, narrowing_problems, plan_layers
from .width import NestedConv2d, NestedLinear, SlicedConv2d, SlicedLinear

__all__ = ["LayerPlan", "NestError", "check_narrowing", "nest", "nest_plan"]

# Activation modules computed by the package's functional forms (export folds scales into ReLU).
_FUNCTIONAL = {nn.ReLU: F.relu, nn.Tanh: torch.tanh, nn.SiLU: F.silu, nn.Sigmoid: torch.sigmoid}


def _check_args(module: nn.Module, groups: int, always_on: int) -> None:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if isinstance(module, NestedModule):
        raise NestError(f"module is already a nested layer ({type(module).__name__})")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if isinstance(always_on, bool) or not isinstance(always_on, numbers.Integral):
        raise ValueError(f"always_on must be an int, got {always_on!r}")
    if not 0 <= always_on <= groups:
        raise ValueError(f"always_on must be in [0, groups={groups}], got {always_on}")


def nest_plan(
    module: nn.Module, *, groups: int = 16, leaf_modules: tuple[type, ...] = ()
) -> list[LayerPlan]:
    """What :func:`nest` would do with each ``nn.Linear`` / ``nn.Conv2d`` called in ``forward``.

    Parameters
    ----------
    module : nn.Module
        A plain PyTorch model.
    groups : int
        Ordered blocks per nested layer (a width not divisible by it keeps a layer whole).
    leaf_modules : tuple of type
        Module classes not to trace into (see :func:`nest`).

    Returns
    -------
    list of LayerPlan
        In the order of the first call in ``forward``.
    """
    _check_args(module, groups, 0)
    return plan_layers(module, int(groups), tuple(leaf_modules))[0]


def nest(
    module: nn.Module,
    *,
    groups: int = 16,
    always_on: int = 1,
    inplace: bool = False,
    strict: bool = False,
    leaf_modules: tuple[type, ...] = (),
) -> nn.Module:
    r"""Nest the linear and convolution layers of a plain PyTorch model.

    Each nestable ``nn.Linear`` (``nn.Conv2d``) becomes a :class:`~bayes_nest.nn.NestedLinear`
    (:class:`~bayes_nest.nn.NestedConv2d`) whose ``out`` units form ``groups`` ordered blocks of
    ``out / groups`` units, the first ``always_on`` never dropped; its axis is named after the
    layer's module path (e.g. ``"features.0"``). The batch norm and the activation module right
    after it are fused in, so a block's mask multiplies ``act(norm(W x + b))``. All other linear
    and convolution layers (the output layer in particular) are kept whole and sliced on their
    input side. FN3 training, BNNN, search, cost models and export then work on the result.

    Parameters
    ----------
    module : nn.Module
        A plain PyTorch model (its ``forward`` must be traceable by ``torch.fx``).
    groups : int
        Ordered blocks per nested layer; must divide the width of every layer to nest.
    always_on : int
        Leading blocks never dropped (``0 <= always_on <= groups``).
    inplace : bool
        Convert ``module`` itself, so that the nested model shares its parameters and buffers
        (training one trains the other). Default: convert a deep copy; ``module`` is unchanged.
    strict : bool
        Raise :class:`NestError` for a layer that cannot be nested (other than an output layer)
        instead of keeping it whole with a warning.
    leaf_modules : tuple of type
        Module classes the tracer treats as opaque calls (for submodules whose ``forward`` has
        data-dependent control flow); layers inside them are left as they are, and a nested
        layer's output may not reach them.

    Returns
    -------
    nn.Module
        The model, with its own class and ``forward``; at the full configuration (no mask, or
        :func:`~bayes_nest.subnet.full`) its outputs equal the plain model's up to float rounding.

    Raises
    ------
    NestError
        When ``forward`` cannot be traced, no layer can be nested, or (``strict=True``) a layer
        cannot be nested; the message names the layer path and the reason.

    Examples
    --------
    >>> from torch import nn
    >>> from bayes_nest.nn import axes, nest
    >>> plain = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    >>> net = nest(plain, groups=4)
    >>> {name: axis.size for name, axis in axes(net).items()}
    {'0': 4}
    """
    _check_args(module, groups, always_on)
    plans, _ = plan_layers(module, int(groups), tuple(leaf_modules))
    if not plans:
        raise NestError(
            f"{type(module).__name__}.forward calls no nn.Linear or nn.Conv2d layer; nothing to nest"
        )
    whole = [p for p in plans if p.role == "whole"]
    listing = "; ".join(f"{p.path!r}: {p.reason}" for p in whole)
    if strict and whole:
        raise NestError(f"nest cannot nest these layers: {listing}")
    if not any(p.role == "nested" for p in plans) and not axes(module):
        outputs = [p.path for p in plans if p.role == "output"]
        raise NestError(
            f"no layer of {type(module).__name__} can be nested (output layers {outputs}"
            + (f"; {listing})" if listing else ")")
        )
    if whole:
        warnings.warn(f"nest keeps these layers whole: {listing}", UserWarning, stacklevel=2)
    target = module if inplace else copy.deepcopy(module)
    for plan in plans:
        layer = target.get_submodule(plan.path)
        if plan.role != "nested":
            _replace(target, plan.path, _sliced(layer))
            continue
        norm = None if plan.norm is None else target.get_submodule(plan.norm)
        activation = None if plan.activation is None else target.get_submodule(plan.activation)
        nested = _nested(layer, int(groups), int(always_on), norm, activation)
        _replace(target, plan.path, nested)
        for fused in (plan.norm, plan.activation):
            if fused is not None:
                _replace(target, fused, nn.Identity())
    return target


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def _sliced(layer: nn.Module) -> nn.Module:
    """A sliced layer holding ``layer``'s own parameters (plain conv layers with groups != 1
    are returned as they are)."""
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        return layer
    bias = layer.bias is not None
    with torch.device("meta"):
        if isinstance(layer, nn.Linear):
            new = SlicedLinear(layer.in_features, layer.out_features, bias=bias)
        else:
            new = SlicedConv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                bias=bias,
                padding_mode=layer.padding_mode,
            )
    new.weight = layer.weight
    if bias:
        new.bias = layer.bias
    return new.train(layer.training)


def _nested(
    layer: nn.Module,
    groups: int,
    always_on: int,
    norm: nn.Module | None,
    activation: nn.Module | None,
) -> NestedModule:
    """The nested layer computing ``activation(norm(layer(x)))`` with ``layer``'s parameters."""
    with torch.device("meta"):
        if isinstance(layer, nn.Linear):
            new = NestedLinear(
                layer.in_features, layer.out_features, groups=groups, always_on=always_on,
                norm=None, activation=None,
            )  # fmt: skip
        else:
            new = NestedConv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, groups=groups,
                always_on=always_on, norm=None, activation=None,
            )  # fmt: skip
    new.affine = _sliced(layer)
    if norm is not None:
        new.norm = norm
        new.norm_kind = "batch"
    if activation is not None:
        plain_gelu = isinstance(activation, nn.GELU) and activation.approximate == "none"
        new.activation = F.gelu if plain_gelu else _FUNCTIONAL.get(type(activation), activation)
    return new.train(layer.training)


def check_narrowing(module: nn.Module) -> None:
    """Raise a clear error when a width layer of ``module`` feeds a plain layer.

    A network built by hand from nested layers must slice the input side of every layer after a
    width layer (:class:`~bayes_nest.nn.SlicedLinear`, :class:`~bayes_nest.nn.SlicedConv2d`,
    nested layers): a plain ``nn.Linear`` head cannot take the narrowed output of a
    sub-network. Networks whose ``forward`` cannot be traced are not checked.

    Raises
    ------
    NestError
        Naming each plain layer and the width layer feeding it.
    """
    problems = narrowing_problems(module)
    if problems:
        raise NestError(
            "sub-networks narrow the output of width layers, which these plain layers cannot "
            f"take: {'; '.join(problems)}. Use bayes_nest.nn.SlicedLinear / SlicedConv2d for "
            "them, or convert the model with bayes_nest.nn.nest(model)"
        )
