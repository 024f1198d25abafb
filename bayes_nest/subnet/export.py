r"""Export a sub-network as a standalone plain PyTorch module.

:func:`export` turns a nested model and a config into an ordinary ``nn.Module`` made of
``nn.Linear``, ``nn.Conv2d``, ``nn.BatchNorm*``, activation modules and, for residual sums and
channel scales, small ``torch.fx.GraphModule``\ s: no ``bayes_nest`` class is left inside, so the
result can be saved, loaded without this package, passed to ``torch.export`` or exported to ONNX.

The transform is recursive. Every module is exported by the exporter registered for its type
(:func:`register_exporter`, looked up along the class hierarchy):

* width layers become ``Linear/Conv2d [+ BatchNorm] [+ activation]`` with the weight sliced to
  the kept output units *and* to the input units that actually reach the layer (found by tracing
  one forward pass), the quantized weight baked in when a bits axis is attached;
* depth stages and parallel paths become graphs of their kept blocks with plain residual adds;
* plain torch modules are deep-copied;
* any other container is copied with its children replaced by their exports (so user modules
  built from nested layers keep their own ``forward``); a container class defined inside
  ``bayes_nest`` is then converted to a ``GraphModule`` by ``torch.fx.symbolic_trace``.

Optional per-block scales (``block_scales``, e.g. the keep marginals
:math:`P(b \ge i) = \prod_{j \le i} \beta_j` of a BNNN posterior) multiply each kept block's output
as a tensor mask would; they are folded into the layer's weights (or batch-norm affine) when the
activation is positively homogeneous (ReLU, none), otherwise kept as a channel-scale node.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..nn.axis import NestedModule, axes, axis_owners
from ..nn.bits import NestedQuantizer
from ..nn.depth import NestedStage
from ..nn.paths import NestedPaths
from ..nn.width import SlicedConv2d, SlicedLinear, _NestedWidth
from ._trace import Call, check_input_shape, trace
from .config import use, validate_config
from .recalibrate import recalibrate_batchnorm

__all__ = ["ExportContext", "ExportError", "export", "register_exporter"]


class ExportError(TypeError):
    """A module or config that :func:`export` cannot turn into a plain network."""


Exporter = Callable[[nn.Module, "ExportContext"], nn.Module]
_EXPORTERS: dict[type, Exporter] = {}


def register_exporter(cls: type, exporter: Exporter) -> None:
    """Register ``exporter(module, ctx) -> nn.Module`` for modules of type ``cls`` (and subclasses).

    The exporter runs while the source model computes the chosen sub-network (its masks are
    set), and may use ``ctx.export(child)`` for children, ``ctx.calls(module)`` for the traced
    shapes, ``ctx.unit_scale(owner)`` for per-unit scales and ``ctx.parameter(t)`` /
    ``ctx.buffer(t)`` to copy tensors.
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"cls must be an nn.Module subclass, got {cls!r}")
    _EXPORTERS[cls] = exporter


def _find_exporter(module: nn.Module) -> Exporter | None:
    for cls in type(module).__mro__:
        if cls in _EXPORTERS:
            return _EXPORTERS[cls]
    return None


def _is_ours(module: nn.Module) -> bool:
    return type(module).__module__.split(".")[0] == "bayes_nest"


class ExportContext:
    """State shared by the exporters of one :func:`export` call."""

    def __init__(self, root: nn.Module, calls: list[Call], scales: Mapping[str, torch.Tensor]):
        self.root = root
        self._calls: dict[int, list[Call]] = {}
        for call in calls:
            self._calls.setdefault(id(call.module), []).append(call)
        self._axis_of = {id(owner): name for name, owner in axis_owners(root)}
        self._paths = {id(m): p for p, m in root.named_modules(remove_duplicate=False)}
        self.scales = dict(scales)

    def path(self, module: nn.Module) -> str:
        """Path of ``module`` in the source model (for messages)."""
        return self._paths.get(id(module), type(module).__name__) or "<root>"

    def calls(self, module: nn.Module) -> list[Call]:
        """Traced calls of ``module``; an error if it never ran in the sub-network."""
        found = self._calls.get(id(module))
        if not found:
            raise ExportError(
                f"module {self.path(module)!r} ({type(module).__name__}) did not run in the "
                "traced forward pass, so its input shape is unknown; export cannot size it"
            )
        shapes = {c.input_shape for c in found}
        if len(shapes) > 1:
            raise ExportError(
                f"module {self.path(module)!r} is called with inputs of different shapes "
                f"{sorted(shapes)}; a static export needs one shape per module"
            )
        return found

    def axis_name(self, owner: NestedModule) -> str:
        return self._axis_of[id(owner)]

    def block_scale(self, owner: NestedModule) -> torch.Tensor | None:
        """Scales of the *kept* blocks of ``owner``'s axis (``None`` when none were given)."""
        scale = self.scales.get(self.axis_name(owner))
        return None if scale is None else scale[: owner.kept_blocks()]

    def unit_scale(self, owner: NestedModule) -> torch.Tensor | None:
        """Per-unit scale of a width owner's kept units (block scales repeated)."""
        scale = self.block_scale(owner)
        return None if scale is None else scale.repeat_interleave(owner.axis_block_size)

    @staticmethod
    def parameter(tensor: torch.Tensor, like: nn.Parameter | None = None) -> nn.Parameter:
        requires_grad = True if like is None else like.requires_grad
        return nn.Parameter(tensor.detach().clone(), requires_grad=requires_grad)

    @staticmethod
    def buffer(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.detach().clone()

    def export(self, module: nn.Module) -> nn.Module:
        """Export one module (dispatching on its type)."""
        exporter = _find_exporter(module)
        if exporter is not None:
            return exporter(module, self)
        if isinstance(module, NestedModule):
            raise ExportError(
                f"export does not know layer type {type(module).__name__} (at "
                f"{self.path(module)!r}); register one with register_exporter"
            )
        if not _needs_export(module):
            return copy.deepcopy(module)
        return self._container(module)

    def _container(self, module: nn.Module) -> nn.Module:
        memo: dict[int, Any] = {}
        for child in module.children():
            memo[id(child)] = self.export(child)
        new = copy.deepcopy(module, memo)
        if not _is_ours(new):
            return new
        try:
            return symbolic_trace(new)
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise ExportError(
                f"export could not turn {type(module).__name__} (at {self.path(module)!r}) into "
                f"plain torch modules ({type(err).__name__}: {err}); register an exporter for it"
            ) from err


def _needs_export(module: nn.Module) -> bool:
    return any(
        isinstance(m, NestedModule) or _is_ours(m) or _find_exporter(m) is not None
        for m in module.modules()
    )


# ----------------------------------------------------------------------------- graph helpers


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


# ----------------------------------------------------------------------------- layer exporters

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

# ----------------------------------------------------------------------------- entry point


def _check_scales(module: nn.Module, block_scales: Mapping[str, Any] | None) -> dict:
    if block_scales is None:
        return {}
    if not isinstance(block_scales, Mapping):
        raise TypeError(
            f"block_scales must be a mapping axis name -> tensor, got {type(block_scales).__name__}"
        )
    known = axes(module)
    checked = {}
    for name, value in block_scales.items():
        if name not in known:
            raise ValueError(f"block_scales: unknown axis {name!r}; known axes: {sorted(known)}")
        axis = known[name]
        if axis.kind not in ("width", "depth", "paths"):
            raise ValueError(f"block_scales: axis {name!r} of kind {axis.kind!r} has no scales")
        scale = torch.as_tensor(value, dtype=torch.float32)
        if scale.shape != (axis.size,):
            raise ValueError(
                f"block_scales[{name!r}] must have shape ({axis.size},), got {tuple(scale.shape)}"
            )
        if not torch.isfinite(scale).all():
            raise ValueError(f"block_scales[{name!r}] must be finite")
        checked[name] = scale
    return checked


def _first_batch(data: Any) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data[:1]
    if isinstance(data, tuple | list) and data and isinstance(data[0], torch.Tensor):
        return data[0][:1]
    for batch in data:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        return x[:1]
    raise ValueError("calibration_data holds no batches")


def _check_plain(model: nn.Module) -> None:
    for path, m in model.named_modules():
        if _is_ours(m):
            raise ExportError(
                f"export left a bayes_nest module at {path!r} ({type(m).__name__}); register an "
                "exporter for it"
            )


def export(
    module: nn.Module,
    config: Mapping[str, int] | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    example_input: torch.Tensor | None = None,
    calibration_data: Iterable | None = None,
    calibration_batches: int | None = None,
    block_scales: Mapping[str, torch.Tensor] | None = None,
    progress: bool = False,
) -> nn.Module:
    r"""Export sub-network ``config`` of ``module`` as a standalone plain ``nn.Module``.

    Parameters
    ----------
    module : nn.Module
        A nested model, or any module built from nested layers and plain torch modules.
    config : Mapping[str, int], optional
        Axis name to keep count (missing axes full; ``None``: the full network).
    input_shape : sequence of int, optional
        Shape of one example without the batch dimension, used to trace which input units
        reach every layer. Alternatively pass ``example_input`` or ``calibration_data``.
    example_input : Tensor, optional
        An example batch to trace.
    calibration_data : iterable, optional
        Batches (``x`` or ``(x, y)``) on which to recalibrate the exported model's batch-norm
        statistics (:func:`~bayes_nest.subnet.recalibrate_batchnorm`). Recommended for any
        sub-network of a model with batch-norm: the nested model's running statistics were
        accumulated over a mixture of sub-networks.
    calibration_batches : int, optional
        Use at most this many calibration batches.
    block_scales : Mapping[str, Tensor], optional
        Axis name to a per-block multiplier of shape ``(size,)`` (e.g. keep marginals of a BNNN
        posterior); the exported network computes what the masked network computes with the
        tensor mask ``block_scales[axis] · 1[i < n_axis]``.
    progress : bool
        Progress bar during recalibration.

    Returns
    -------
    nn.Module
        In eval mode; outputs equal the masked network's (eval mode) up to float rounding.

    Raises
    ------
    ValueError
        For an invalid config, missing input shape or malformed scales.
    ExportError
        For a layer type export does not know, or a module that cannot be sized statically.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    config = validate_config(module, {} if config is None else config)
    scales = _check_scales(module, block_scales)
    if example_input is None:
        if input_shape is not None:
            check_input_shape(input_shape)
        elif calibration_data is not None:
            example_input = _first_batch(calibration_data)
        else:
            raise ValueError(
                "export needs input_shape (one example, e.g. (3, 32, 32)), example_input or "
                "calibration_data to find the shapes each layer sees"
            )
    traced = trace(module, config, input_shape=input_shape, example_input=example_input)
    ctx = ExportContext(module, traced.calls, scales)
    with use(module, config), torch.no_grad():
        exported = ctx.export(module)
    _check_plain(exported)
    if calibration_data is not None:
        recalibrate_batchnorm(
            exported, calibration_data, num_batches=calibration_batches, progress=progress
        )
    return exported.eval()
