r"""Bayesian weights for nested networks: layers, conversion and weight modes in one place.

A Bayesian affine layer holds a mean-field Normal posterior over its weights,
:math:`q(W) = \prod_{ij} \mathcal N(W_{ij} \mid \mu_{ij}, \sigma_{ij}^2)` with
:math:`\sigma = \operatorname{softplus}(\rho)`, a Normal prior :math:`\mathcal N(m, s^2)`, and
draws its pre-activations by local reparameterization. The pieces live in two modules:

* :mod:`bayes_nest.nn.bayesian_layers` -- the layers (:class:`BayesianLinear`,
  :class:`BayesianConv2d`, their base :class:`BayesianLayer`), the elementwise Normal KL
  :func:`normal_kl` and the prior-scale rules of :func:`resolve_prior_scale`;
* :mod:`bayes_nest.nn.bayesian_convert` -- :func:`to_bayesian_` (make a network's linear and
  conv layers Bayesian in place) and the context managers that switch how every Bayesian layer of
  a network draws its weights (:func:`deterministic_weights`, :func:`pinned_weights`,
  :func:`shared_posterior_scales`).

This module re-exports both, so ``from bayes_nest.nn.bayesian import ...`` keeps working. The
nested weight KL of BNNN, :math:`\sum_k P(b \ge k)\, \mathrm{KL}(q(W_k) \,\|\, p(W_k))`, is in
:mod:`bayes_nest.infer.bnnn_kl`.
"""

from __future__ import annotations

from .bayesian_convert import (
    deterministic_weights,
    pinned_weights,
    shared_posterior_scales,
    to_bayesian_,
)
from .bayesian_layers import (
    BayesianConv2d,
    BayesianLayer,
    BayesianLinear,
    normal_kl,
    resolve_prior_scale,
)

__all__ = [
    "BayesianConv2d",
    "BayesianLayer",
    "BayesianLinear",
    "deterministic_weights",
    "normal_kl",
    "pinned_weights",
    "resolve_prior_scale",
    "shared_posterior_scales",
    "to_bayesian_",
]
