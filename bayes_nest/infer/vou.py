r"""Variational ordering units: learned Downhill posteriors over the mask of one axis.

A *variational ordering unit* (VOU, Cui et al. 2021) is the guide of one axis's mask site. It
holds learnable keep logits :math:`\ell \in \mathbb R^D` with conditional keep probabilities
:math:`\beta_i = \sigma(\ell_i) = P(\text{block } i \text{ kept} \mid \text{block } i-1
\text{ kept})` over the :math:`D` orderable blocks, and draws the mask from
:class:`~bayes_nest.distributions.Downhill` (or its straight-through variant, the default, whose
forward value is a hard mask). The keep count :math:`b` has the posterior

.. math:: q_b = (\beta_1 \cdots \beta_b)(1 - \beta_{b+1}), \qquad
   q_D = \beta_1 \cdots \beta_D,

and block :math:`k` is kept with marginal probability :math:`P(b \ge k) = \beta_1 \cdots
\beta_k`. Both are computed in log space (``logsigmoid`` of the logits), so they stay finite for
keep probabilities near 0 or 1.

The matching prior (:func:`~bayes_nest.infer.masks.mask_prior`) is a Downhill with constant keep
probability :math:`\pi` and the same temperature; for straight-through (hard) masks the
registered closed-form KL between the two keep-count distributions is their exact KL.

Temperature. ``temperature`` is a float or a schedule ``epoch -> float`` such as
:class:`ExponentialTemperature`; :meth:`VariationalOrderingUnit.set_epoch` applies it. With the
straight-through variant the temperature only shapes the gradient (the forward value is hard).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from torch import nn
from torch.distributions import Distribution

from ..distributions.keep_count import (
    KeepCount,
    keep_count_log_probs,
    log_keep_marginals,
)
from ..distributions.keep_count_ops import draw_mask, gumbel_noise, keep_terms
from ..nn.axis import Axis, full_block_mask
from .defaults import BNNN_DEFAULTS
from .masks import mask_prior

__all__ = ["ExponentialTemperature", "VariationalOrderingUnit", "resolve_temperature"]

Temperature = float | Callable[[int], float]


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a positive float, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ExponentialTemperature:
    r"""Exponential annealing :math:`\tau_e = \max(\tau_{\min}, \tau_0 e^{-r e})` per epoch ``e``.

    Parameters
    ----------
    initial : float
        :math:`\tau_0 > 0`.
    final : float
        :math:`\tau_{\min}`, with ``0 < final <= initial``.
    rate : float
        Decay rate :math:`r \ge 0` per epoch.
    """

    initial: float = 1.0
    final: float = 0.1
    rate: float = 0.1

    def __post_init__(self) -> None:
        _positive(self.initial, "initial")
        _positive(self.final, "final")
        if self.final > self.initial:
            raise ValueError(f"final ({self.final}) must not exceed initial ({self.initial})")
        if isinstance(self.rate, bool) or not (
            isinstance(self.rate, int | float) and math.isfinite(self.rate) and self.rate >= 0
        ):
            raise ValueError(f"rate must be a finite number >= 0, got {self.rate!r}")

    def __call__(self, epoch: int) -> float:
        return max(self.final, self.initial * math.exp(-self.rate * epoch))


def resolve_temperature(temperature: Temperature, epoch: int = 0) -> float:
    """The temperature at ``epoch`` for a float or a schedule ``epoch -> float``."""
    if callable(temperature):
        return _positive(temperature(epoch), f"temperature schedule at epoch {epoch}")
    return _positive(temperature, "temperature")


class VariationalOrderingUnit(nn.Module):
    r"""Learned ordered-dropout posterior of one axis (the guide of its mask site).

    Parameters
    ----------
    axis : Axis
        The axis; it must have orderable blocks (``axis.orderable >= 1``).
    init_keep_prob : float
        Initial :math:`\beta_i` of every block, in (0, 1). High values (0.9-0.95) start from
        the full network.
    temperature : float or callable
        Relaxation temperature, or a schedule ``epoch -> float``.
    straight_through : bool
        Draw hard masks (``DownhillStraightThrough``, default) or relaxed ones (``Downhill``).

    Attributes
    ----------
    keep_logits : Parameter, shape ``(D,)``
        :math:`\ell`, with :math:`\beta = \sigma(\ell)`.
    """

    def __init__(
        self,
        axis: Axis,
        *,
        init_keep_prob: float = BNNN_DEFAULTS["init_keep_prob"],
        temperature: Temperature = BNNN_DEFAULTS["temperature"],
        straight_through: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(axis, Axis):
            raise TypeError(f"axis must be an Axis, got {type(axis).__name__}")
        if axis.orderable < 1:
            raise ValueError(f"axis {axis.name!r} has no orderable blocks")
        if isinstance(init_keep_prob, bool) or not 0.0 < float(init_keep_prob) < 1.0:
            raise ValueError(f"init_keep_prob must be in (0, 1), got {init_keep_prob!r}")
        self.axis = axis
        self.straight_through = bool(straight_through)
        self.schedule = temperature
        self.temperature = resolve_temperature(temperature, 0)
        logit = math.log(init_keep_prob) - math.log1p(-init_keep_prob)
        self.keep_logits = nn.Parameter(torch.full((axis.orderable,), logit))
        self._log_prior_cache: dict = {}

    @property
    def name(self) -> str:
        """The axis name, which is also the mask site's name."""
        return self.axis.name

    def set_epoch(self, epoch: int) -> float:
        """Apply the temperature schedule at ``epoch`` and return the temperature."""
        self.temperature = resolve_temperature(self.schedule, epoch)
        return self.temperature

    # ------------------------------------------------------------------ posterior quantities
    def keep_probs(self) -> torch.Tensor:
        r"""Conditional keep probabilities :math:`\beta`, shape ``(D,)``."""
        return torch.sigmoid(self.keep_logits)

    def keep_marginals(self) -> torch.Tensor:
        r""":math:`P(b \ge k) = \beta_1 \cdots \beta_k` for the orderable blocks, shape ``(D,)``."""
        return log_keep_marginals(self.keep_logits).exp()

    def block_marginals(self) -> torch.Tensor:
        """Keep marginals of every block of the axis, ones for always-on blocks, ``(size,)``."""
        return full_block_mask(self.axis, self.keep_marginals())

    def keep_count_log_probs(self) -> torch.Tensor:
        r""":math:`\log q_b`, :math:`b = 0..D`, shape ``(D+1,)``
        (:func:`~bayes_nest.distributions.keep_count.keep_count_log_probs`)."""
        return keep_count_log_probs(self.keep_logits)

    def keep_count_probs(self) -> torch.Tensor:
        """Posterior of the number of kept orderable blocks, shape ``(D+1,)``."""
        return self.keep_count_log_probs().exp()

    def log_prior_counts(self, keep_prob: float) -> torch.Tensor:
        r""":math:`\log p_b` of the nested-dropout prior's keep count, shape ``(D+1,)`` (cached).

        The truncated geometric: :math:`b \log\pi + \log(1-\pi)` for :math:`b < D` and
        :math:`D \log \pi` for :math:`b = D`.
        """
        dtype, device = self.keep_logits.dtype, self.keep_logits.device
        key = (float(keep_prob), dtype, device)
        cached = self._log_prior_cache.get(key)
        if cached is None:
            prior = KeepCount.geometric(torch.tensor(float(keep_prob), dtype=torch.float64),
                                        self.axis.orderable)  # fmt: skip
            cached = prior.logits.to(dtype=dtype, device=device)
            self._log_prior_cache = {key: cached}
        return cached

    def step_terms(self, keep_prob: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""What one training step needs from this unit, computed once and shared.

        Parameters
        ----------
        keep_prob : float
            :math:`\pi` of the matching prior.

        Returns
        -------
        log_q : Tensor, shape ``(D+1,)``
            :math:`\log q_b`, as :meth:`keep_count_log_probs` (for :meth:`draw_block_mask`).
        block_marginals : Tensor, shape ``(size,)``
            As :meth:`block_marginals` (the weights of the nested weight KL).
        kl : Tensor, shape ``()``
            :math:`\mathrm{KL}(q(b) \,\|\, p(b))`, the closed form registered for a pair of
            straight-through Downhill distributions, i.e. what ``TraceMeanField_ELBO`` uses for
            the mask site.

        One fused autograd node (:func:`~bayes_nest.distributions.keep_count_ops.keep_terms`).
        """
        return keep_terms(self.keep_logits, self.log_prior_counts(keep_prob), self.axis.always_on)

    def draw_block_mask(self, log_q: torch.Tensor) -> torch.Tensor:
        """One mask draw for every block of the axis (ones for always-on blocks), ``(size,)``.

        The same value, from the same random numbers, as ``self()`` padded with ones, i.e. a
        draw of :meth:`distribution`, without building the distribution; ``log_q`` comes from
        :meth:`step_terms` (see :func:`~bayes_nest.distributions.keep_count_ops.draw_mask`).
        """
        gumbel = gumbel_noise(log_q.shape[-1], dtype=log_q.dtype, device=log_q.device)
        return draw_mask(
            log_q,
            gumbel,
            self.temperature,
            straight_through=self.straight_through,
            always_on=self.axis.always_on,
        )

    def sample_keep_counts(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Hard keep counts (always-on blocks included) drawn from the posterior, int64, by the
        keep-count sampler (:meth:`~bayes_nest.distributions.KeepCount.sample_keep_count`)."""
        posterior = KeepCount(keep_logits=self.keep_logits.detach())
        return posterior.sample_keep_count(sample_shape) + self.axis.always_on

    # ------------------------------------------------------------------ distributions
    def distribution(self) -> Distribution:
        """The posterior mask distribution over the orderable blocks (event shape ``(D,)``)."""
        from ..distributions import Downhill, DownhillStraightThrough

        cls = DownhillStraightThrough if self.straight_through else Downhill
        return cls(keep_logits=self.keep_logits, temperature=self.temperature)

    def prior(self, keep_prob: float) -> Distribution:
        """The matching nested-dropout prior (constant keep probability, same temperature)."""
        return mask_prior(
            self.axis,
            keep_prob,
            temperature=self.temperature,
            straight_through=self.straight_through,
            dtype=self.keep_logits.dtype,
            device=self.keep_logits.device,
        )

    def forward(self) -> torch.Tensor:
        """Sample the axis's mask site (named after the axis) from the posterior."""
        return pyro.sample(self.axis.name, self.distribution())

    def extra_repr(self) -> str:
        return (
            f"axis={self.axis.name!r}, D={self.axis.orderable}, "
            f"temperature={self.temperature:g}, straight_through={self.straight_through}"
        )
