"""Exporters of the built-in layers and models (registered when :mod:`.export` is imported;
they build on :mod:`.export_registry` only, so the two modules form no import cycle)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.bits import NestedQuantizer
from ..nn.depth import NestedStage
from ..nn.paths import NestedPaths
from ..nn.width import SlicedConv2d, SlicedLinear, _NestedWidth
from ._graphs import branch_sum, channel_scale, residual_chain, symbolic_trace
from ._trace import Call
from .export_registry import ExportContext, ExportError, register_exporter

__all__ = ["activation_module"]

_ACTIVATION_MODULES: dict[Callable, Callable[[], nn.Module]] = {
    F.relu: nn.ReLU,
    F.gelu: nn.GELU,
    torch.tanh: nn.Tanh,
    F.silu: nn.SiLU,
    torch.sigmoid: nn.Sigmoid,
}
_HOMOGENEOUS = (F.relu, None)  # act(s·z) = s·act(z) for s >= 0


def activation_module(activation: Callable | None, where: str) -> nn.Module | None:
    """The plain module computing a width layer's activation."""
    if activation is None:
        return None
    if isinstance(activation, nn.Module):
        return copy.deepcopy(activation)
    factory = _ACTIVATION_MODULES.get(activation)
    if factory is None:
        raise ExportError(
            f"export does not know activation {activation!r} of {where!r}; use a named "
            "activation ('relu', 'gelu', 'tanh', 'silu') or pass an nn.Module"
        )
    return factory()


def _sliced_norm(norm: nn.modules.batchnorm._BatchNorm, width: int, ctx: ExportContext):
    new = type(norm)(
        width,
        eps=norm.eps,
        momentum=norm.momentum,
        affine=norm.affine,
        track_running_stats=norm.track_running_stats,
        device=(norm.weight if norm.affine else norm.running_mean).device,
    )
    with torch.no_grad():
        if norm.affine:
            new.weight = ctx.parameter(norm.weight[:width], norm.weight)
            new.bias = ctx.parameter(norm.bias[:width], norm.bias)
        if norm.track_running_stats and norm.running_mean is not None:
            new.running_mean.copy_(norm.running_mean[:width])
            new.running_var.copy_(norm.running_var[:width])
            new.num_batches_tracked.copy_(norm.num_batches_tracked)
    return new


def _affine_kind(affine: nn.Module) -> str:
    """``"linear"`` or ``"conv"`` for plain, sliced and Bayesian affine layers."""
    from ..nn.bayesian import BayesianConv2d, BayesianLinear

    if isinstance(affine, nn.Linear | BayesianLinear):
        return "linear"
    if isinstance(affine, nn.Conv2d | BayesianConv2d):
        return "conv"
    raise ExportError(f"export does not know affine layer type {type(affine).__name__}")


def _affine_layer(
    affine: nn.Module,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    in_units: int,
    out_units: int,
) -> nn.Module:
    """A plain ``nn.Linear``/``nn.Conv2d`` with the given sliced weight and bias."""
    kw = {"bias": bias is not None, "device": weight.device, "dtype": weight.dtype}
    if _affine_kind(affine) == "linear":
        layer = nn.Linear(in_units, out_units, **kw)
    else:
        layer = nn.Conv2d(
            in_units,
            out_units,
            affine.kernel_size,
            stride=affine.stride,
            padding=affine.padding,
            dilation=affine.dilation,
            groups=getattr(affine, "groups", 1),
            padding_mode=getattr(affine, "padding_mode", "zeros"),
            **kw,
        )
    layer.weight = ExportContext.parameter(weight, affine.weight)
    if bias is not None:
        layer.bias = ExportContext.parameter(bias, affine.bias)
    return layer


def _in_units(call: Call, channel_dim: int) -> int:
    return call.input_shape[channel_dim]


def _export_width(layer: _NestedWidth, ctx: ExportContext) -> nn.Module:
    call = ctx.calls(layer)[0]
    channel_dim = 1 if layer.channel_dim == 1 else -1
    in_units = _in_units(call, channel_dim)
    out_units = layer.kept_units()
    if out_units == 0:
        raise ExportError(
            f"the config keeps no units of axis {ctx.axis_name(layer)!r} (layer "
            f"{ctx.path(layer)!r}); a plain network cannot have an empty layer"
        )
    affine = layer.affine
    with torch.no_grad():
        weight = layer.full_weight()[:out_units, :in_units]
        bias = None if affine.bias is None else affine.bias[:out_units]
    norm = None if layer.norm is None else _sliced_norm(layer.norm, out_units, ctx)
    scale = ctx.unit_scale(layer)
    trailing_scale = None
    if scale is not None:
        scale = scale.to(weight.dtype)
        foldable = layer.activation in _HOMOGENEOUS and (
            layer.activation is None or bool((scale >= 0).all())
        )
        if not foldable:
            trailing_scale = scale
        elif norm is not None and norm.affine:
            with torch.no_grad():
                norm.weight.mul_(scale)
                norm.bias.mul_(scale)
        elif norm is not None:
            trailing_scale = scale
        else:
            view = [-1] + [1] * (weight.dim() - 1)
            weight = weight * scale.view(view)
            bias = None if bias is None else bias * scale
    parts: list[nn.Module] = [_affine_layer(affine, weight, bias, in_units, out_units)]
    if norm is not None:
        parts.append(norm)
    act = activation_module(layer.activation, ctx.path(layer))
    if act is not None:
        parts.append(act)
    if trailing_scale is not None:
        parts.append(channel_scale(trailing_scale, channel_dim, len(call.output_shape)))
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)


def _export_sliced(affine: nn.Module, ctx: ExportContext) -> nn.Module:
    """A sliced (or Bayesian: its posterior mean) affine layer used outside a width layer."""
    call = ctx.calls(affine)[0]
    channel_dim = 1 if _affine_kind(affine) == "conv" else -1
    in_units = _in_units(call, channel_dim)
    out_units = call.output_shape[channel_dim]
    transform = call.kwargs.get("weight_transform")
    with torch.no_grad():
        weight = affine.weight if transform is None else transform(affine.weight)
        bias = None if affine.bias is None else affine.bias[:out_units]
        return _affine_layer(affine, weight[:out_units, :in_units], bias, in_units, out_units)


def _export_stage(stage: NestedStage, ctx: ExportContext) -> nn.Module:
    kept = stage.kept_blocks()
    scale = ctx.block_scale(stage)
    steps = []
    for i in range(kept):
        residual = i >= stage.axis_always_on
        factor = None if scale is None or not residual else float(scale[i])
        steps.append((ctx.export(stage.blocks[i]), residual, factor))
    return residual_chain(steps, "ResidualStage")


def _export_paths(paths: NestedPaths, ctx: ExportContext) -> nn.Module:
    kept = paths.kept_blocks()
    if kept == 0 and not paths.residual:
        raise ExportError(f"the config keeps no branch of {ctx.path(paths)!r}")
    scale = ctx.block_scale(paths)
    branches = [ctx.export(paths.branches[p]) for p in range(kept)]
    factors = [None if scale is None else float(scale[p]) for p in range(kept)]
    if kept == 0:
        return nn.Identity()
    return branch_sum(branches, factors, paths.residual, "ParallelPaths")


def _export_quantizer(quantizer: NestedQuantizer, ctx: ExportContext) -> nn.Module:
    """A quantizer applied to activations: its current bit level as a traced graph."""
    frozen = copy.deepcopy(quantizer)
    frozen.mask = quantizer.kept_blocks()
    try:
        return symbolic_trace(frozen)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ExportError(
            f"export cannot turn the quantizer at {ctx.path(quantizer)!r} into plain torch "
            f"operations ({type(err).__name__}: {err}); only unsigned (activation) quantizers "
            "can stand alone, weight quantizers are baked into their layers"
        ) from err


def _register_layers() -> None:
    from ..nn.bayesian import BayesianLayer

    register_exporter(_NestedWidth, _export_width)
    register_exporter(SlicedLinear, _export_sliced)
    register_exporter(SlicedConv2d, _export_sliced)
    register_exporter(BayesianLayer, _export_sliced)
    register_exporter(NestedStage, _export_stage)
    register_exporter(NestedPaths, _export_paths)
    register_exporter(NestedQuantizer, _export_quantizer)


_register_layers()


def _export_mlp(model: nn.Module, ctx: ExportContext) -> nn.Module:
    layers = [nn.Flatten()] + [ctx.export(layer) for layer in model.hidden]
    return nn.Sequential(*layers, ctx.export(model.output))


def _register_models() -> None:
    from ..models.mlp import MLP

    register_exporter(MLP, _export_mlp)


_register_models()
