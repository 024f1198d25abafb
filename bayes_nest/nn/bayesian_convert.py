"""Making networks Bayesian, and choosing how their Bayesian layers draw weights.

:func:`to_bayesian_` replaces the affine layers of a (nested) network by the Bayesian layers of
:mod:`bayes_nest.nn.bayesian_layers`, initialising the posterior means from the existing weights.
The context managers switch every Bayesian layer of a network at once: :func:`deterministic_weights`
(posterior means), :func:`pinned_weights` (fixed draws) and :func:`shared_posterior_scales` (the
posterior standard deviations computed once and shared by the forward pass and the KL of a step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from .bayesian_layers import BayesianConv2d, BayesianLayer, BayesianLinear, _check_positive

__all__ = ["deterministic_weights", "pinned_weights", "shared_posterior_scales", "to_bayesian_"]


def _convert(layer: nn.Module, prior_loc, prior_scale, init_scale) -> BayesianLayer:
    kwargs = dict(prior_loc=prior_loc, prior_scale=prior_scale, init_scale=init_scale)
    if isinstance(layer, nn.Linear):
        new = BayesianLinear(
            layer.in_features, layer.out_features, layer.bias is not None, **kwargs
        )
    else:
        if layer.groups != 1 or layer.padding_mode != "zeros":
            raise ValueError(
                f"only convolutions with groups=1 and zero padding can be made Bayesian, got "
                f"groups={layer.groups}, padding_mode={layer.padding_mode!r}"
            )
        new = BayesianConv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=layer.bias is not None,
            **kwargs,
        )
    new.init_from(layer.weight.detach(), None if layer.bias is None else layer.bias.detach())
    return new.to(device=layer.weight.device, dtype=layer.weight.dtype)


def to_bayesian_(
    module: nn.Module,
    *,
    prior_loc: float = 0.0,
    prior_scale: float | str = 1.0,
    init_scale: float = 1e-2,
) -> list[str]:
    """Replace every ``nn.Linear`` and ``nn.Conv2d`` in ``module`` by its Bayesian counterpart.

    This covers the ``.affine`` of :class:`~bayes_nest.nn.NestedLinear` /
    :class:`~bayes_nest.nn.NestedConv2d` and sliced heads (:class:`~bayes_nest.nn.SlicedLinear`,
    :class:`~bayes_nest.nn.SlicedConv2d` are subclasses). The posterior means are initialised
    from the existing weights (so a trained FN3 network can be refined), the posterior standard
    deviations to ``init_scale``. Layers that are already Bayesian are left as they are.

    Parameters
    ----------
    module : nn.Module
        Converted in place.
    prior_loc, prior_scale, init_scale
        As in :class:`BayesianLayer`.

    Returns
    -------
    list of str
        Paths of the converted layers.
    """
    _check_positive(init_scale, "init_scale")
    targets = [
        (path, sub)
        for path, sub in module.named_modules()
        if isinstance(sub, nn.Linear | nn.Conv2d) and path
    ]
    if isinstance(module, nn.Linear | nn.Conv2d):
        raise TypeError("to_bayesian_ converts the layers inside a module; wrap the layer first")
    for path, layer in targets:
        parent_path, _, attr = path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        setattr(parent, attr, _convert(layer, prior_loc, prior_scale, init_scale))
    return [path for path, _ in targets]


@contextlib.contextmanager
def deterministic_weights(module: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Context manager: Bayesian layers of ``module`` use their posterior mean weights."""
    layers = [sub for sub in module.modules() if isinstance(sub, BayesianLayer)]
    previous = [layer.stochastic for layer in layers]
    try:
        for layer in layers:
            layer.stochastic = not enabled
        yield module
    finally:
        for layer, flag in zip(layers, previous, strict=True):
            layer.stochastic = flag


@contextlib.contextmanager
def pinned_weights(
    module: nn.Module, weights: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]]
) -> Iterator[nn.Module]:
    """Context manager: the named Bayesian layers use fixed ``(weight, bias)`` values.

    Parameters
    ----------
    module : nn.Module
    weights : mapping layer path -> (weight, bias)
        E.g. one posterior draw per layer from :meth:`BayesianLayer.sample_weight`; shapes must be
        the layer's full weight and bias shapes.
    """
    layers = {path: sub for path, sub in module.named_modules() if isinstance(sub, BayesianLayer)}
    for path, (w, _b) in weights.items():
        if path not in layers:
            raise ValueError(f"no Bayesian layer {path!r}; Bayesian layers: {sorted(layers)}")
        if w.shape != layers[path].weight_loc.shape:
            raise ValueError(
                f"layer {path!r}: pinned weight has shape {tuple(w.shape)}, expected "
                f"{tuple(layers[path].weight_loc.shape)}"
            )
    previous = {path: layer.pinned for path, layer in layers.items()}
    try:
        for path, value in weights.items():
            layers[path].pinned = (value[0], value[1])
        yield module
    finally:
        for path, layer in layers.items():
            layer.pinned = previous[path]


@contextlib.contextmanager
def shared_posterior_scales(
    layers: nn.Module | list[BayesianLayer],
) -> Iterator[list[BayesianLayer]]:
    r"""Context manager: compute each Bayesian layer's :math:`\sigma = \operatorname{softplus}(\rho)`
    once and use it everywhere inside (forward passes and KL).

    A training step reads the posterior standard deviations twice, in the local
    reparameterization of the forward pass and in the weight KL; inside this context both use
    the same tensors (one ``softplus`` and one autograd node per parameter instead of two). The
    values are those of the parameters on entry: leave the context before an optimizer step.

    Parameters
    ----------
    layers : nn.Module or list of BayesianLayer
        A network (all its Bayesian layers) or the layers themselves.

    Yields
    ------
    list of BayesianLayer
    """
    if isinstance(layers, nn.Module):
        layers = [sub for sub in layers.modules() if isinstance(sub, BayesianLayer)]
    previous = [layer.shared_scales for layer in layers]
    # A plain attribute: set through __dict__, skipping nn.Module's slower __setattr__ (it only
    # special-cases parameters, buffers and submodules), since this runs twice per step.
    try:
        for layer in layers:
            layer.__dict__["shared_scales"] = (layer.weight_scale, layer.bias_scale)
        yield layers
    finally:
        for layer, value in zip(layers, previous, strict=True):
            layer.__dict__["shared_scales"] = value
