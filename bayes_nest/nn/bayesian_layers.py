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
or a sliced head in place (:func:`~bayes_nest.nn.bayesian_convert.to_bayesian_` converts a
network). ``weight`` and ``bias`` return the posterior means, so code that reads weights
(export, cost models) sees the mean network.

Prior scale. ``prior_scale`` is a float :math:`s` (default 1), or ``"radford"``
(:math:`s = 1/\sqrt{\text{fan-in}}`) or ``"kaiming"`` (:math:`s = \sqrt{2/\text{fan-in}}`),
layer-wise scales that keep the prior's pre-activations at unit scale.

Nesting. BNNN weights each output block's KL by the block's keep marginal (DESIGN §2;
:meth:`BayesianLayer.block_weighted_kl`, used by :mod:`bayes_nest.infer.bnnn_kl`). The fused
operations behind the forward pass and the KL are in :mod:`bayes_nest.nn.bayesian_ops`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .bayesian_ops import (
    VAR_FLOOR,
    block_weighted_normal_kl,
    example_noise,
    local_reparam_linear,
    per_unit_normal_kl,
)
from .local_reparam import drawn_value, marginal_of

__all__ = [
    "BayesianConv2d",
    "BayesianLayer",
    "BayesianLinear",
    "normal_kl",
    "resolve_prior_scale",
]

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
        Fixed ``(weight, bias)`` values that override both (see
        :func:`~bayes_nest.nn.bayesian_convert.pinned_weights`).
    shared_scales : tuple or None
        ``(weight_scale, bias_scale)`` computed once for a training step and used by both the
        forward pass and the KL (see :func:`~bayes_nest.nn.bayesian_convert.shared_posterior_scales`).
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
        self.shared_scales: tuple[torch.Tensor, torch.Tensor | None] | None = None

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

    def posterior_scales(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(weight_scale, bias_scale)``: the values shared for the current step if set (see
        :func:`~bayes_nest.nn.bayesian_convert.shared_posterior_scales`), else computed."""
        if self.shared_scales is not None:
            return self.shared_scales
        return self.weight_scale, self.bias_scale

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
        weight_scale, bias_scale = self.posterior_scales()
        return per_unit_normal_kl(
            self.weight_loc,
            weight_scale,
            self.bias_loc,
            bias_scale,
            self.prior_loc,
            self.prior_scale,
        )

    def kl(self) -> torch.Tensor:
        """Total KL of the layer's posterior to its prior (a scalar)."""
        return self.kl_per_output().sum()

    def block_weighted_kl(self, block_weights: torch.Tensor, block_size: int) -> torch.Tensor:
        r""":math:`\sum_k w_k \sum_{i \in \text{block } k} \mathrm{KL}_i` over blocks of
        ``block_size`` consecutive output units, a scalar (one fused autograd node).

        Parameters
        ----------
        block_weights : Tensor, shape ``(out / block_size,)``
            E.g. the keep marginals :math:`P(b \ge k)` of the axis the layer's outputs feed.
        block_size : int
        """
        weight_scale, bias_scale = self.posterior_scales()
        return block_weighted_normal_kl(
            self.weight_loc,
            weight_scale,
            self.bias_loc,
            bias_scale,
            block_weights,
            block_size,
            self.prior_loc,
            self.prior_scale,
        )

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
        pinned weights (:func:`pinned_weights`) take precedence over both; pinned weights drawn
        inside :func:`~bayes_nest.nn.local_reparam.local_reparameterization` give a local
        reparameterization draw from the Normal they came from.
        """
        dim = 1 if self._channel_first else -1
        width = x.shape[dim]
        if width > self._in_dim():
            raise ValueError(
                f"{type(self).__name__}: input has {width} features/channels, "
                f"more than {self._in_dim()}"
            )
        o = out_units
        if self.pinned is not None and weight_transform is None:
            drawn_from = self._pinned_marginals()
            if drawn_from is not None:  # local reparameterization (an effect handler is active)
                w_loc, w_scale, b_loc, b_scale = drawn_from
                w_loc, w_scale = w_loc[:o, :width], w_scale[:o, :width]
                if b_loc is not None:
                    b_loc, b_scale = b_loc[:o], b_scale[:o]
                return self._local_reparam(x, w_loc, w_scale, b_loc, b_scale)
        if self.pinned is not None or not self.stochastic or weight_transform is not None:
            if self.pinned is not None:
                weight, bias = (drawn_value(v) for v in self.pinned)
            elif self.stochastic:
                weight, bias = self.sample_weight()
            else:
                weight, bias = self.weight_loc, self.bias_loc
            if weight_transform is not None:
                weight = weight_transform(weight)
            bias = None if bias is None else bias[:o]
            return self._affine(x, weight[:o, :width], bias)
        weight_loc, bias_loc = self.weight_loc, self.bias_loc
        weight_scale, bias_scale = self.posterior_scales()
        if (o is not None and o < weight_loc.shape[0]) or width < weight_loc.shape[1]:
            weight_loc, weight_scale = weight_loc[:o, :width], weight_scale[:o, :width]
            if bias_loc is not None:
                bias_loc, bias_scale = bias_loc[:o], bias_scale[:o]
        return self._local_reparam(x, weight_loc, weight_scale, bias_loc, bias_scale)

    def _pinned_marginals(self) -> tuple | None:
        """``(w_loc, w_scale, b_loc, b_scale)`` of the Normals the pinned weights were drawn
        from, under :func:`~bayes_nest.nn.local_reparam.local_reparameterization`; else None."""
        weight, bias = self.pinned
        w = marginal_of(weight)
        if w is None:
            return None
        if bias is None:
            return w[0], w[1], None, None
        b = marginal_of(bias)
        return None if b is None else (w[0], w[1], b[0], b[1])

    def _local_reparam(self, x, weight_loc, weight_scale, bias_loc, bias_scale) -> torch.Tensor:
        """One draw of the pre-activations: mean ``affine(x, μ)`` plus ``sqrt(var)`` times
        standard Normal noise, with ``var = affine(x², σ²)``."""
        mean = self._affine(x, weight_loc, bias_loc)
        bias_var = None if bias_scale is None else bias_scale.square()
        var = self._affine(x.square(), weight_scale.square(), bias_var)
        return torch.addcmul(mean, (var + VAR_FLOOR).sqrt(), example_noise(mean))

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

    def _local_reparam(self, x, weight_loc, weight_scale, bias_loc, bias_scale) -> torch.Tensor:
        if x.dim() == 2:  # the fused operation (same values, fewer autograd nodes)
            return local_reparam_linear(x, weight_loc, weight_scale, bias_loc, bias_scale)
        return super()._local_reparam(x, weight_loc, weight_scale, bias_loc, bias_scale)


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
