r"""Analytic cost models of sub-networks: MACs, parameters, weight bits and BitOPs.

Costs are computed per layer from the shapes each layer sees in the sub-network, found by one
batch-1 forward pass of a zero tensor under :func:`~bayes_nest.subnet.use` (dropped blocks are
never called, narrowed layers see narrowed inputs). They equal what a standard counter reports for
the *exported* model (:func:`~bayes_nest.subnet.export`):

``"macs"``
    Multiply-accumulates of the convolutions and linear layers for one example, biases not
    counted, exactly as ``thop`` counts them:
    :math:`\text{MACs} = \sum_{\text{linear}} d_\text{in} d_\text{out}
    + \sum_{\text{conv}} C_\text{out} H_\text{out} W_\text{out} \cdot (C_\text{in}/g) k_h k_w`.
    Normalisation, activations, pooling and residual additions are not counted (they are
    linear in the activations and small; ``thop`` counts batch-norm as four operations per
    element, ``custom_ops`` can switch that off).
``"params"``
    Parameters of the exported model: sliced weights and biases of every kept layer plus the
    affine weight and bias of its batch-norm (running statistics are buffers, not parameters),
    as ``sum(p.numel() for p in exported.parameters())``.
``"weight_bits"``
    Model size in bits: :math:`\sum_\ell |W_\ell| b_\ell + 32 \cdot (\text{other parameters})`,
    with :math:`b_\ell` the kept bits of a quantized layer's weights and 32 for float weights.
``"bitops"``
    :math:`\sum_\ell \text{MACs}_\ell \cdot b^w_\ell \cdot b^a`, the usual bit-level compute
    proxy, with activation bits :math:`b^a` (``activation_bits``, 32 by default: activations are
    not quantized by the built-in layers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from ..nn.axis import NestedModule
from ..nn.width import _NestedWidth
from ._trace import Call, Trace, resolve_input_shape, trace
from .config import use, validate_config

__all__ = [
    "COST_METRICS",
    "FLOAT_BITS",
    "CostModel",
    "LayerCost",
    "cost",
    "costs",
    "layer_costs",
    "register_cost_rule",
    "weight_bits_of",
]

COST_METRICS = ("macs", "params", "weight_bits", "bitops")
FLOAT_BITS = 32


@dataclass(frozen=True)
class LayerCost:
    """Cost of one module call in a sub-network (per example).

    Attributes
    ----------
    path : str
        Module path in the nested model.
    op : str
        ``"linear"``, ``"conv"``, ``"norm"`` or ``"other"``.
    macs : float
        Multiply-accumulates for one example.
    params : int
        Parameters the exported model keeps for this call (0 for a repeated call of a module).
    weight_params : int
        Of ``params``, those stored at ``weight_bits`` bits (the quantized weights).
    weight_bits : int
        Bits per weight (32 when the weight is not quantized).
    in_units, out_units : int
        Input and output features/channels (0 when not applicable).
    """

    path: str
    op: str
    macs: float = 0.0
    params: int = 0
    weight_params: int = 0
    weight_bits: int = FLOAT_BITS
    in_units: int = 0
    out_units: int = 0

    def bits(self) -> int:
        """Storage of this call's parameters in bits."""
        return self.weight_params * self.weight_bits + (self.params - self.weight_params) * (
            FLOAT_BITS
        )


def weight_bits_of(transform: object) -> int:
    """Bits per weight produced by a width layer's weight transform (32 for none)."""
    if transform is None:
        return FLOAT_BITS
    if isinstance(transform, NestedModule) and transform.axis_kind == "bits":
        return int(transform.kept_blocks())
    bits = getattr(transform, "bits", None)
    return int(bits) if isinstance(bits, int) else FLOAT_BITS


Rule = Callable[[Call, Trace, bool], LayerCost | None]
_RULES: dict[type, Rule] = {}


def register_cost_rule(cls: type, rule: Rule) -> None:
    """Register how calls of modules of type ``cls`` (and subclasses) are costed.

    ``rule(call, trace, first_call) -> LayerCost | None`` gets the recorded call (module, input and
    output shapes, keyword arguments); ``first_call`` is ``False`` for repeated calls of a module,
    whose parameters must not be counted again.
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"cls must be an nn.Module subclass, got {cls!r}")
    _RULES[cls] = rule


def _find_rule(module: nn.Module) -> Rule | None:
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


def _linear(call: Call, trace: Trace, first: bool) -> LayerCost:
    m = call.module
    d_in, d_out = call.input_shape[-1], call.output_shape[-1]
    weights = d_in * d_out
    bias = d_out if m.bias is not None else 0
    out_numel = math.prod(call.output_shape) / trace.batch_size
    return LayerCost(
        call.path,
        "linear",
        macs=d_in * out_numel,
        params=(weights + bias) if first else 0,
        weight_params=weights if first else 0,
        weight_bits=weight_bits_of(call.kwargs.get("weight_transform")),
        in_units=d_in,
        out_units=d_out,
    )


def _conv(call: Call, trace: Trace, first: bool) -> LayerCost:
    m = call.module
    c_in, c_out = call.input_shape[1], call.output_shape[1]
    kernel = math.prod(m.kernel_size)
    groups = getattr(m, "groups", 1)
    weights = c_out * (c_in // groups) * kernel
    bias = c_out if m.bias is not None else 0
    out_numel = math.prod(call.output_shape) / trace.batch_size
    return LayerCost(
        call.path,
        "conv",
        macs=out_numel * (c_in // groups) * kernel,
        params=(weights + bias) if first else 0,
        weight_params=weights if first else 0,
        weight_bits=weight_bits_of(call.kwargs.get("weight_transform")),
        in_units=c_in,
        out_units=c_out,
    )


def _width_layer(call: Call, trace: Trace, first: bool) -> LayerCost | None:
    """The batch-norm a width layer applies functionally (its affine child is costed apart)."""
    m = call.module
    if m.norm is None or not first:
        return None
    channels = call.output_shape[m.channel_dim]
    params = 2 * channels if m.norm.affine else 0
    return LayerCost(call.path + ".norm", "norm", params=params, out_units=channels)


def _nothing(call: Call, trace: Trace, first: bool) -> None:
    return None


def _register_rules() -> None:
    from ..nn.bayesian import BayesianConv2d, BayesianLinear

    # Bayesian layers are costed as their posterior-mean export.
    for cls in (nn.Linear, BayesianLinear):
        register_cost_rule(cls, _linear)
    for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d, BayesianConv2d):
        register_cost_rule(cls, _conv)
    register_cost_rule(_NestedWidth, _width_layer)
    register_cost_rule(NestedModule, _nothing)  # depth/paths/bits owners: no own parameters


_register_rules()


def _generic(call: Call, trace: Trace, first: bool) -> LayerCost | None:
    """Any other module: its own (non-child) parameters, kept whole by export."""
    if not first:
        return None
    own = sum(p.numel() for p in call.module.parameters(recurse=False))
    if not own:
        return None
    op = "norm" if isinstance(call.module, nn.modules.batchnorm._NormBase) else "other"
    return LayerCost(call.path, op, params=own)


def _costs_of_trace(traced: Trace) -> list[LayerCost]:
    seen: set[int] = set()
    out: list[tuple[Call, LayerCost]] = []
    for call in traced.calls:
        first = id(call.module) not in seen
        seen.add(id(call.module))
        rule = _find_rule(call.module) or _generic
        item = rule(call, traced, first)
        if item is not None:
            out.append((call, item))
    # A width layer keeping no units computes a placeholder unit and drops it: cost nothing.
    empty = {
        id(call.module.affine)
        for call in traced.calls
        if isinstance(call.module, _NestedWidth) and call.output_shape is not None
        if call.output_shape[call.module.channel_dim] == 0
    }
    return [item for call, item in out if id(call.module) not in empty]


def _layer_costs(
    module: nn.Module, config: Mapping[str, int] | None, shape: tuple[int, ...]
) -> list[LayerCost]:
    if config is None:
        return _costs_of_trace(trace(module, None, input_shape=shape))
    config = validate_config(module, config)
    with use(module, config):  # rules read the masks (e.g. kept bits) of the config
        return _costs_of_trace(trace(module, config, input_shape=shape))


def layer_costs(
    module: nn.Module, config: Mapping[str, int] | None, input_shape: Sequence[int] | None = None
) -> list[LayerCost]:
    """Per-call costs of sub-network ``config`` (one example of shape ``input_shape``).

    Parameters
    ----------
    module : nn.Module
    config : Mapping[str, int] or None
        Axis name to keep count (missing axes full); ``None`` runs the current masks.
    input_shape : sequence of int, optional
        Shape of one example, without the batch dimension, e.g. ``(3, 32, 32)``; inferred from
        the first layer when that is a linear layer (an MLP), required otherwise.

    Returns
    -------
    list of LayerCost
        In call order (children before parents).

    Raises
    ------
    ValueError
        If ``input_shape`` does not fit the module: the full network must run on it with every
        nested layer seeing its full input width (a shorter input would be costed on truncated
        layers).
    """
    shape = resolve_input_shape(module, input_shape, "layer_costs")
    return _layer_costs(module, config, shape)


def _check_metric(metric: str) -> str:
    if metric not in COST_METRICS:
        raise ValueError(f"metric must be one of {COST_METRICS}, got {metric!r}")
    return metric


def _check_activation_bits(activation_bits: int) -> int:
    if isinstance(activation_bits, bool) or not isinstance(activation_bits, int):
        raise TypeError(f"activation_bits must be an int, got {activation_bits!r}")
    if activation_bits < 1:
        raise ValueError(f"activation_bits must be >= 1, got {activation_bits}")
    return activation_bits


def _total(items: Sequence[LayerCost], metric: str, activation_bits: int) -> float:
    if metric == "macs":
        return float(sum(c.macs for c in items))
    if metric == "params":
        return float(sum(c.params for c in items))
    if metric == "weight_bits":
        return float(sum(c.bits() for c in items))
    return float(sum(c.macs * c.weight_bits * activation_bits for c in items))


def costs(
    module: nn.Module,
    config: Mapping[str, int] | None,
    input_shape: Sequence[int] | None = None,
    *,
    activation_bits: int = FLOAT_BITS,
) -> dict[str, float]:
    """Every metric of :data:`COST_METRICS` for one sub-network, from a single trace."""
    _check_activation_bits(activation_bits)
    items = layer_costs(module, config, input_shape)
    return {m: _total(items, m, activation_bits) for m in COST_METRICS}


def cost(
    module: nn.Module,
    config: Mapping[str, int] | None,
    metric: str = "macs",
    input_shape: Sequence[int] | None = None,
    *,
    activation_bits: int = FLOAT_BITS,
) -> float:
    """Cost of sub-network ``config`` of ``module`` under ``metric``.

    Parameters
    ----------
    module : nn.Module
        A nested model (or any module built from plain torch layers).
    config : Mapping[str, int] or None
        Axis name to keep count; missing axes are kept whole; ``None``: current masks.
    metric : {"macs", "params", "weight_bits", "bitops"}
        See the module docstring.
    input_shape : sequence of int, optional
        Shape of one example without the batch dimension; inferred from the first layer when
        that is a linear layer (an MLP), required otherwise. Checked against the module as in
        :func:`layer_costs` (a shape that does not fit raises ``ValueError``).
    activation_bits : int
        Bits of the activations, used by ``"bitops"``.

    Returns
    -------
    float
        For one example (an integer value for MACs, parameters and bits).

    Examples
    --------
    >>> from bayes_nest.models import MLP
    >>> net = MLP(64, [128, 128], 10, groups=8)
    >>> cost(net, {"hidden.0": 4}, "macs", input_shape=(64,))  # 64*64 + 64*128 + 128*10
    13568.0
    """
    _check_metric(metric)
    _check_activation_bits(activation_bits)
    shape = resolve_input_shape(module, input_shape, "cost")
    return _total(_layer_costs(module, config, shape), metric, activation_bits)


class CostModel:
    """A cost model as a callable ``config -> float``, with a cache; usable by the search.

    Parameters
    ----------
    module : nn.Module
    metric : {"macs", "params", "weight_bits", "bitops"}
    input_shape : sequence of int, optional
        Shape of one example without the batch dimension (inferred and checked as in
        :func:`layer_costs`, once).
    activation_bits : int
        Used by ``"bitops"``.
    cache : bool
        Remember the cost of every config seen (configs are hashed by their full form).
    """

    def __init__(
        self,
        module: nn.Module,
        metric: str = "macs",
        input_shape: Sequence[int] | None = None,
        *,
        activation_bits: int = FLOAT_BITS,
        cache: bool = True,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        self.module = module
        self.metric = _check_metric(metric)
        self.input_shape = resolve_input_shape(module, input_shape, "CostModel")
        self.activation_bits = _check_activation_bits(activation_bits)
        self._cache: dict[tuple, float] | None = {} if cache else None

    def __call__(self, config: Mapping[str, int]) -> float:
        full = validate_config(self.module, config)
        key = tuple(sorted(full.items()))
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        value = _total(
            _layer_costs(self.module, full, self.input_shape), self.metric, self.activation_bits
        )
        if self._cache is not None:
            self._cache[key] = value
        return value

    def __repr__(self) -> str:
        return f"CostModel(metric={self.metric!r}, input_shape={self.input_shape})"
