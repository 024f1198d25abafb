r"""Bayesian weight layers: mean-field Normal posteriors with local reparameterization.

A Bayesian affine layer holds a factorised Gaussian posterior over its weights and bias,

.. math:: q(W) = \prod_{ij} \mathcal N(W_{ij} \mid \mu_{ij}, \sigma_{ij}^2),
   \qquad \sigma = \operatorname{softplus}(\rho),

and a Normal prior :math:`p(W_{ij}) = \mathcal N(m, s^2)`. The forward pass uses the *local
reparameterization trick* (Kingma, Salimans & Welling 2015): the pre-activations of a linear map
are Gaussian given the input, with mean :math:`x \mu^\top + \mu_b` and variance
:math:`x^2 (\sigma^2)^\top + \sigma_b^2`, so they are drawn directly, with independent noise per
example and output unit (per output element for convolutions, with ``conv(x, ·)`` in place of the
matrix product). This has lower gradient variance than drawing one weight matrix per mini-batch
and costs two affine maps.

The layers keep the forward signature of :class:`~bayes_nest.nn.SlicedLinear` /
:class:`~bayes_nest.nn.SlicedConv2d` (``forward(x, out_units=None, weight_transform=None)``,
inputs narrower than the in-dimension accepted), so they replace the ``.affine`` of a width layer
or a sliced head in place: :func:`to_bayesian_` converts a trained or fresh nested network,
initialising the posterior means from its weights. ``weight`` and ``bias`` return the posterior
means, so code that reads weights (export, cost models) sees the mean network.

Prior scale. ``prior_scale`` is a float :math:`s` (default 1), or ``"radford"``
(:math:`s = 1/\sqrt{\text{fan-in}}`) or ``"kaiming"`` (:math:`s = \sqrt{2/\text{fan-in}}`),
layer-wise scales that keep the prior's pre-activations at unit scale.

Nesting. :func:`bayes_nest.infer.bnnn_kl.weight_kl_terms` returns, per Bayesian layer, the KL of its weight posterior with
each output block's term weighted by that block's keep marginal (BNNN, DESIGN §2):

.. math:: \sum_k P(b \ge k)\, \mathrm{KL}(q(W_k) \,\|\, p(W_k)),

where :math:`W_k` are the weights (rows and bias entries) feeding output block :math:`k`: a
dropped block's weights revert to the prior and cost nothing. Always-on blocks and layers without
an axis (heads) have weight 1.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BayesianConv2d",
    "BayesianLayer",
    "BayesianLinear",
    "deterministic_weights",
    "normal_kl",
    "pinned_weights",
    "resolve_prior_scale",
    "to_bayesian_",
]

_VAR_FLOOR = 1e-12  # added to the pre-activation variance before the square root
_PRIOR_RULES = ("radford", "kaiming")


def resolve_prior_scale(prior_scale: float | str, fan_in: int) -> float:
    """The prior standard deviation of a layer with ``fan_in`` inputs per output unit.

    Parameters
    ----------
    prior_scale : float or {"radford", "kaiming"}
        A positive float, or a rule: ``"radford"`` gives :math:`1/\\sqrt{\\text{fan-in}}`,
        ``"kaiming"`` gives :math:`\\sqrt{2/\\text{fan-in}}`.
    fan_in : int
    """
    if isinstance(prior_scale, str):
        if prior_scale == "radford":
            return 1.0 / math.sqrt(fan_in)
        if prior_scale == "kaiming":
            return math.sqrt(2.0 / fan_in)
        raise ValueError(
            f"prior_scale must be a positive float or one of {_PRIOR_RULES}, got {prior_scale!r}"
        )
    if isinstance(prior_scale, bool) or not isinstance(prior_scale, int | float):
        raise TypeError(f"prior_scale must be a float or a rule name, got {prior_scale!r}")
    if not (math.isfinite(prior_scale) and prior_scale > 0):
        raise ValueError(f"prior_scale must be positive and finite, got {prior_scale!r}")
    return float(prior_scale)


def _check_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a positive float, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def normal_kl(
    loc: torch.Tensor, scale: torch.Tensor, prior_loc: float, prior_scale: float
) -> torch.Tensor:
    r"""Elementwise :math:`\mathrm{KL}(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(m, s^2))
    = \log(s / \sigma) + (\sigma^2 + (\mu - m)^2) / (2 s^2) - 1/2`."""
    return (
        math.log(prior_scale)
        - torch.log(scale)
        + (scale.square() + (loc - prior_loc).square()) / (2.0 * prior_scale**2)
        - 0.5
    )


class BayesianLayer(nn.Module):
    """Base of Bayesian affine layers: posterior parameters, prior, KL per output unit.

    Parameters
    ----------
    weight_shape : tuple of int
        ``(out, in, ...)``.
    bias : bool
    prior_loc : float
        Prior mean :math:`m`.
    prior_scale : float or {"radford", "kaiming"}
        Prior standard deviation :math:`s` (see the module documentation).
    init_scale : float
        Initial posterior standard deviation :math:`\\sigma` of every weight and bias.

    Attributes
    ----------
    weight_loc, weight_rho : Parameter, shape ``weight_shape``
        Posterior mean and ``softplus``-inverse standard deviation.
    bias_loc, bias_rho : Parameter of shape ``(out,)`` or None
    stochastic : bool
        Draw pre-activations from the posterior (default) or use the posterior mean weights.
    pinned : tuple or None
        Fixed ``(weight, bias)`` values that override both (see :func:`pinned_weights`).
    """

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        bias: bool,
        *,
        prior_loc: float = 0.0,
        prior_scale: float | str = 1.0,
        init_scale: float = 1e-2,
    ) -> None:
        super().__init__()
        fan_in = int(math.prod(weight_shape[1:]))
        self.prior_loc = float(prior_loc)
        self.prior_scale = resolve_prior_scale(prior_scale, fan_in)
        self.prior_rule = prior_scale if isinstance(prior_scale, str) else None
        init_rho = _inverse_softplus(_check_positive(init_scale, "init_scale"))
        self.weight_loc = nn.Parameter(torch.empty(weight_shape))
        self.weight_rho = nn.Parameter(torch.full(weight_shape, init_rho))
        if bias:
            self.bias_loc = nn.Parameter(torch.zeros(weight_shape[0]))
            self.bias_rho = nn.Parameter(torch.full((weight_shape[0],), init_rho))
        else:
            self.register_parameter("bias_loc", None)
            self.register_parameter("bias_rho", None)
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear / nn.Conv2d default range
        nn.init.uniform_(self.weight_loc, -bound, bound)
        self.stochastic = True
        self.pinned: tuple[torch.Tensor, torch.Tensor | None] | None = None

    _channel_first = False

    # ------------------------------------------------------------------ posterior quantities
    @property
    def weight(self) -> torch.Tensor:
        """Posterior mean of the weight (what a deterministic export uses)."""
        return self.weight_loc

    @property
    def bias(self) -> torch.Tensor | None:
        """Posterior mean of the bias, or None."""
        return self.bias_loc

    @property
    def weight_scale(self) -> torch.Tensor:
        """Posterior standard deviation of the weight, ``softplus(weight_rho)``."""
        return F.softplus(self.weight_rho)

    @property
    def bias_scale(self) -> torch.Tensor | None:
        """Posterior standard deviation of the bias, or None."""
        return None if self.bias_rho is None else F.softplus(self.bias_rho)

    def sample_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One draw ``(W, b)`` from the posterior (rsample)."""
        w = self.weight_loc + self.weight_scale * torch.randn_like(self.weight_loc)
        if self.bias_loc is None:
            return w, None
        return w, self.bias_loc + self.bias_scale * torch.randn_like(self.bias_loc)

    def kl_per_output(self) -> torch.Tensor:
        r"""KL of the posterior to the prior, summed over each output unit's weights and bias.

        Returns
        -------
        Tensor, shape ``(out,)``
            :math:`\sum_{j} \mathrm{KL}(q(W_{ij}) \| p(W_{ij})) + \mathrm{KL}(q(b_i) \| p(b_i))`.
        """
        kl = normal_kl(self.weight_loc, self.weight_scale, self.prior_loc, self.prior_scale)
        kl = kl.reshape(kl.shape[0], -1).sum(-1)
        if self.bias_loc is not None:
            kl = kl + normal_kl(self.bias_loc, self.bias_scale, self.prior_loc, self.prior_scale)
        return kl

    def kl(self) -> torch.Tensor:
        """Total KL of the layer's posterior to its prior (a scalar)."""
        return self.kl_per_output().sum()

    @torch.no_grad()
    def init_from(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Copy point-estimate weights into the posterior means."""
        if weight.shape != self.weight_loc.shape:
            raise ValueError(
                f"weight has shape {tuple(weight.shape)}, expected {tuple(self.weight_loc.shape)}"
            )
        self.weight_loc.copy_(weight)
        if self.bias_loc is not None and bias is not None:
            self.bias_loc.copy_(bias)

    # ------------------------------------------------------------------ forward
    def _affine(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def _in_dim(self) -> int:
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        out_units: int | None = None,
        weight_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Affine map of ``x`` with the first ``out_units`` outputs (default all).

        Stochastic mode draws the pre-activations by local reparameterization; with a
        ``weight_transform`` (e.g. a weight quantizer, which needs an actual weight) one weight
        tensor is drawn instead and transformed. Deterministic mode uses the posterior means;
        pinned weights (:func:`pinned_weights`) take precedence over both.
        """
        dim = 1 if self._channel_first else -1
        width = x.shape[dim]
        if width > self._in_dim():
            raise ValueError(
                f"{type(self).__name__}: input has {width} features/channels, "
                f"more than {self._in_dim()}"
            )
        o = out_units
        if self.pinned is not None or not self.stochastic or weight_transform is not None:
            if self.pinned is not None:
                weight, bias = self.pinned
            elif self.stochastic:
                weight, bias = self.sample_weight()
            else:
                weight, bias = self.weight_loc, self.bias_loc
            if weight_transform is not None:
                weight = weight_transform(weight)
            bias = None if bias is None else bias[:o]
            return self._affine(x, weight[:o, :width], bias)
        mean = self._affine(
            x, self.weight_loc[:o, :width], None if self.bias_loc is None else self.bias_loc[:o]
        )
        bias_var = None if self.bias_rho is None else self.bias_scale[:o].square()
        var = self._affine(x.square(), self.weight_scale[:o, :width].square(), bias_var)
        return mean + torch.sqrt(var + _VAR_FLOOR) * torch.randn_like(mean)

    def extra_repr(self) -> str:
        prior = self.prior_rule or f"{self.prior_scale:g}"
        return (
            f"weight_shape={tuple(self.weight_loc.shape)}, bias={self.bias_loc is not None}, "
            f"prior=Normal({self.prior_loc:g}, {prior}), stochastic={self.stochastic}"
        )


class BayesianLinear(BayesianLayer):
    """Bayesian counterpart of :class:`~bayes_nest.nn.SlicedLinear`.

    Shapes: input ``(N, d)`` with ``d <= in_features``; output ``(N, out_units or out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        prior_loc: float = 0.0,
        prior_scale: float | str = 1.0,
        init_scale: float = 1e-2,
    ) -> None:
        super().__init__(
            (out_features, in_features),
            bias,
            prior_loc=prior_loc,
            prior_scale=prior_scale,
            init_scale=init_scale,
        )
        self.in_features = in_features
        self.out_features = out_features

    def _in_dim(self) -> int:
        return self.in_features

    def _affine(self, x, weight, bias):
        return F.linear(x, weight, bias)


class BayesianConv2d(BayesianLayer):
    """Bayesian counterpart of :class:`~bayes_nest.nn.SlicedConv2d` (``groups=1``, zero padding).

    Shapes: input ``(N, c, H, W)`` with ``c <= in_channels``; output ``(N, o, H', W')``.
    """

    _channel_first = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
        prior_loc: float = 0.0,
        prior_scale: float | str = 1.0,
        init_scale: float = 1e-2,
    ) -> None:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__(
            (out_channels, in_channels, kh, kw),
            bias,
            prior_loc=prior_loc,
            prior_scale=prior_scale,
            init_scale=init_scale,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kh, kw)
        self.stride = stride
        self.padding = padding
        self.dilation = dilation

    def _in_dim(self) -> int:
        return self.in_channels

    def _affine(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)


# ---------------------------------------------------------------------------- conversion


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
