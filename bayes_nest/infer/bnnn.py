r"""Bayesian nested neural networks (BNNN): a composable Pyro model around any nested network.

The pieces are objects a user can swap (the TyXe separation):

* the **network**: any nested network (its linear and conv layers become Bayesian in place,
  :func:`~bayes_nest.nn.bayesian.to_bayesian_`);
* the **prior**: the nested-dropout prior per axis (``DownhillStraightThrough(π, τ)``) and an IID
  ``weight_prior`` over every weight and bias (default :math:`\mathcal N(0, 1)`);
* the **likelihood**: :mod:`bayes_nest.infer.likelihoods` (``Categorical`` by default,
  ``Normal``, ``Bernoulli`` or your own), owning the data plate and the dataset-size scaling;
* the **guide**: variational ordering units over the masks and mean-field Normal weights given
  the masks (:class:`~bayes_nest.infer.bnnn_model.BNNNGuide`), or any Pyro guide.

``bnnn.model(x, y=None)`` and ``bnnn.guide(x, y=None)`` are plain Pyro programs (sites and
their semantics: :mod:`bayes_nest.infer.bnnn_model`), so ``pyro.infer.SVI``, ``Predictive``,
AutoGuides and ``NUTS`` apply to them directly. :meth:`BNNN.fit` is a thin wrapper over SVI;
its default loss is :class:`~bayes_nest.infer.bnnn_elbo.NestedMeanFieldELBO`, a
``TraceMeanField_ELBO`` that evaluates the same objective without tracing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..nn.axis import axes
from ..nn.bayesian import BayesianLayer, to_bayesian_
from . import bnnn_predict, likelihoods
from .bnnn_kl import bayesian_layers, weight_kl_terms
from .bnnn_model import (
    BNNNGuide,
    BNNNMaskGuide,
    BNNNModel,
    check_weight_prior,
    is_normal_prior,
    weight_sites,
)
from .defaults import BNNN_DEFAULTS
from .vou import Temperature, VariationalOrderingUnit

__all__ = ["BNNN", "BNNNGuide", "BNNNMaskGuide", "BNNNModel"]

_RESERVED_SITES = ("obs", "data")


def _check_prob(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{name} must be a probability in (0, 1), got {value!r}")
    return float(value)


class BNNN(nn.Module):
    r"""A Bayesian nested neural network around a nested network.

    Parameters
    ----------
    net : nn.Module
        A nested network, e.g. :class:`~bayes_nest.models.MLP`. Converted in place: every
        linear and conv layer becomes Bayesian, with posterior means initialised from its current
        weights (a trained FN3 network is a good start).
    likelihood : Likelihood or callable, optional
        The observation model: :class:`~bayes_nest.infer.likelihoods.Categorical` (default),
        ``Normal``, ``Bernoulli`` or any callable ``(outputs, y=None) -> None`` that emits the
        site ``"obs"`` inside ``pyro.plate("data", ...)``.
    weight_prior : pyro.distributions.Distribution, optional
        A univariate distribution applied IID to every weight and bias, e.g.
        ``dist.Normal(0., 0.5)`` or ``dist.Laplace(0., 1.)``. Default: Normal with
        ``prior_loc`` and ``prior_scale`` (i.e. :math:`\mathcal N(0, 1)`).
    prior_keep_prob : float or mapping axis -> float
        :math:`\pi` of the nested-dropout prior of the masks (default 0.95).
    init_keep_prob : float
        Initial posterior keep probability :math:`\beta_i` of every block (default 0.95).
    temperature : float or callable
        Downhill temperature :math:`\tau` of prior and posterior, or a schedule
        ``epoch -> float`` (e.g. :class:`~bayes_nest.infer.vou.ExponentialTemperature`).
    straight_through : bool
        Hard masks with relaxed gradients (default) or relaxed masks.
    prior_scale : float or {"radford", "kaiming"}
        Standard deviation of the default Normal weight prior (per-layer rules: see
        :mod:`bayes_nest.nn.bayesian`); ignored when ``weight_prior`` is given.
    prior_loc : float
        Mean of the default Normal weight prior (default 0).
    init_scale : float
        Initial posterior standard deviation of the weights.
    kl_scale : float
        :math:`\lambda`, a tempering of the weight sites (1 = the ELBO).
    name : str
        Prefix of the parameters' names in Pyro's global parameter store. Entries under it are
        dropped when the BNNN is built; give concurrent BNNNs distinct names.

    Attributes
    ----------
    model : BNNNModel
    guide : BNNNGuide
    mask_guide : BNNNMaskGuide
        The guide's mask part (for ``AutoGuideList`` recipes, see :meth:`autoguide`).
    likelihood : Likelihood or callable
    vous : dict[str, VariationalOrderingUnit]
        One per axis with orderable blocks.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        likelihood: Any = None,
        weight_prior: dist.Distribution | None = None,
        prior_keep_prob: float | Mapping[str, float] = BNNN_DEFAULTS["keep_prob"],
        init_keep_prob: float = BNNN_DEFAULTS["init_keep_prob"],
        temperature: Temperature = BNNN_DEFAULTS["temperature"],
        straight_through: bool = True,
        prior_scale: float | str = BNNN_DEFAULTS["prior_scale"],
        prior_loc: float = 0.0,
        init_scale: float = 1e-2,
        kl_scale: float = BNNN_DEFAULTS["kl_scale"],
        name: str = "bnnn",
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        if not isinstance(name, str) or not name or "$$$" in name:
            raise ValueError(f"name must be a non-empty string without '$$$', got {name!r}")
        if isinstance(kl_scale, bool) or not (
            isinstance(kl_scale, int | float) and math.isfinite(kl_scale) and kl_scale > 0
        ):
            raise ValueError(f"kl_scale must be a finite number > 0, got {kl_scale!r}")
        if likelihood is None:
            likelihood = likelihoods.Categorical()
        if not callable(likelihood):
            raise TypeError(
                "likelihood must be a callable (outputs, y=None) -> None emitting 'obs', e.g. "
                f"bayes_nest.infer.likelihoods.Categorical(), got {type(likelihood).__name__}"
            )
        weight_prior = check_weight_prior(weight_prior)
        if is_normal_prior(weight_prior):
            prior_loc, prior_scale = float(weight_prior.loc), float(weight_prior.scale)
            weight_prior = None  # the same prior, per layer (keeps the Normal fast paths)
        orderable = {n: a for n, a in axes(net).items() if a.orderable >= 1}
        if not orderable:
            raise ValueError("net has no axis with orderable blocks; is it a nested network?")
        if isinstance(prior_keep_prob, Mapping):
            unknown = [n for n in prior_keep_prob if n not in orderable]
            if unknown:
                raise ValueError(f"prior_keep_prob names unknown axis {unknown[0]!r}")
            pis = {
                n: _check_prob(prior_keep_prob.get(n, 0.95), f"prior_keep_prob[{n!r}]")
                for n in orderable
            }
        else:
            pi = _check_prob(prior_keep_prob, "prior_keep_prob")
            pis = dict.fromkeys(orderable, pi)
        to_bayesian_(net, prior_loc=prior_loc, prior_scale=prior_scale, init_scale=init_scale)
        sites = weight_sites(net)
        site_names = {f"{s.path}.{k}" for s in sites for k in ("weight", "bias")}
        for site in orderable:
            if site in _RESERVED_SITES or site in site_names:
                raise ValueError(f"axis name {site!r} clashes with a site name of the model")
        vous = [
            VariationalOrderingUnit(
                axis,
                init_keep_prob=init_keep_prob,
                temperature=temperature,
                straight_through=straight_through,
            )
            for axis in orderable.values()
        ]
        self.name = name
        self.settings = {
            "prior_keep_prob": pis,
            "init_keep_prob": float(init_keep_prob),
            "straight_through": bool(straight_through),
            "prior_scale": prior_scale,
            "prior_loc": float(prior_loc),
            "init_scale": float(init_scale),
            "kl_scale": float(kl_scale),
            "likelihood": type(likelihood).__name__,
            "weight_prior": None if weight_prior is None else repr(weight_prior),
        }
        self.guide = BNNNGuide(
            BNNNMaskGuide(vous, name=f"{name}.guide"),
            sites,
            conditional=weight_prior is None and bool(straight_through),
            kl_scale=kl_scale,
            name=f"{name}.guide",
        )
        self.model = BNNNModel(
            net,
            orderable,
            pis,
            likelihood,
            weight_prior,
            temperature=vous[0].temperature,
            straight_through=straight_through,
            kl_scale=kl_scale,
            name=name,
        )
        self.epoch = 0
        self.history = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._optim: Any = None
        self.clear_param_store()

    # ------------------------------------------------------------------ access
    @property
    def net(self) -> nn.Module:
        """The (Bayesian) nested network."""
        return self.model.net

    @property
    def vous(self) -> dict[str, VariationalOrderingUnit]:
        """Variational ordering unit per axis name."""
        return {vou.name: vou for vou in self.guide.vous}

    @property
    def likelihood(self) -> Any:
        """The observation model (owns ``dataset_size``)."""
        return self.model.likelihood

    @property
    def mask_guide(self) -> BNNNMaskGuide:
        """The guide of the mask sites alone (the ordering units)."""
        return self.guide.masks

    def mask_sites(self) -> list[str]:
        """Names of the mask sites (one per axis)."""
        return list(self.vous)

    def weight_site_names(self) -> list[str]:
        """Names of the weight and bias sites, in program order."""
        names = []
        for site in self.model.sites:
            names += [site.weight_name] + ([site.bias_name] if site.bias_name else [])
        return names

    def autoguide(self, cls: Any = None, **kwargs: Any) -> Any:
        """An ``AutoGuideList``: ``cls`` (default ``AutoNormal``) over the weight sites plus
        the ordering units over the mask sites (:attr:`mask_guide`).

        ``SVI(bnnn.model, bnnn.autoguide(), optim, Trace_ELBO())`` then trains a consistent
        objective: the model's priors against this guide (weights independent of the masks).
        """
        from pyro import poutine
        from pyro.infer.autoguide import AutoGuideList, AutoNormal

        cls = AutoNormal if cls is None else cls
        guide = AutoGuideList(self.model)
        guide.append(cls(poutine.block(self.model, hide=self.mask_sites()), **kwargs))
        guide.append(self.mask_guide)
        return guide

    def clear_param_store(self) -> None:
        """Drop entries of Pyro's global parameter store under this BNNN's name.

        Only matters for user-written ``pyro.infer.SVI`` loops in the global parameter mode:
        ``pyro.param`` returns a stored tensor of the same name instead of this BNNN's own.
        :meth:`fit` does not use the global store.
        """
        store = pyro.get_param_store()
        for key in list(store.keys()):
            if key.startswith(f"{self.name}."):
                del store[key]

    def set_epoch(self, epoch: int) -> dict[str, float]:
        """Apply the temperature schedule at ``epoch`` (to the ordering units and the mask
        priors); returns the temperature per axis."""
        self.epoch = int(epoch)
        temperatures = {name: vou.set_epoch(epoch) for name, vou in self.vous.items()}
        self.model.temperature = next(iter(temperatures.values()))
        return temperatures

    def keep_probs(self) -> dict[str, torch.Tensor]:
        r"""Posterior conditional keep probabilities :math:`\beta` per axis, shape ``(D,)``."""
        return {n: v.keep_probs().detach() for n, v in self.vous.items()}

    def keep_marginals(self) -> dict[str, torch.Tensor]:
        r"""Posterior keep marginals :math:`P(b \ge k)` of every block (always-on blocks 1),
        shape ``(size,)`` per axis."""
        return {n: v.block_marginals().detach() for n, v in self.vous.items()}

    def keep_count_probs(self) -> dict[str, torch.Tensor]:
        """Posterior of the number of kept orderable blocks per axis, shape ``(D+1,)``."""
        return {n: v.keep_count_probs().detach() for n, v in self.vous.items()}

    def expected_keep_counts(self) -> dict[str, float]:
        """Posterior mean of the number of kept blocks (always-on included) per axis."""
        out = {}
        for n, v in self.vous.items():
            q = v.keep_count_probs().detach()
            out[n] = v.axis.always_on + float((q * torch.arange(len(q), dtype=q.dtype)).sum())
        return out

    def weight_kl(self) -> torch.Tensor:
        r"""The expected weight KL under the guide, :math:`\sum_k P(b \ge k) \mathrm{KL}_k`
        summed over layers (without ``kl_scale``; Normal weight priors only)."""
        if self.model.weight_prior is not None:
            raise ValueError("weight_kl has a closed form for a Normal weight prior only")
        terms = weight_kl_terms(self.net, {n: v.block_marginals() for n, v in self.vous.items()})
        return torch.stack(list(terms.values())).sum()

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        x: torch.Tensor,
        *,
        config: Mapping[str, int] | None = None,
        num_samples: int = BNNN_DEFAULTS["predict_samples"],
        scale_by_keep_marginals: bool = False,
        sample_weights: bool = True,
        batch_size: int = 1024,
    ) -> torch.Tensor:
        """Posterior predictive class probabilities ``(S, N, K)`` of sub-networks; see
        :func:`bayes_nest.infer.bnnn_predict.predict`."""
        return bnnn_predict.predict(
            self,
            x,
            config=config,
            num_samples=num_samples,
            scale_by_keep_marginals=scale_by_keep_marginals,
            sample_weights=sample_weights,
            batch_size=batch_size,
        )

    def posterior_samples(
        self,
        num_samples: int,
        x: torch.Tensor | None = None,
        *,
        weights: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Posterior draws as a dict of arrays for :func:`bayes_nest.analysis.to_arviz`; see
        :func:`bayes_nest.infer.bnnn_predict.posterior_samples`."""
        return bnnn_predict.posterior_samples(self, num_samples, x, weights=weights)

    def bayesian_layers(self) -> list[tuple[str, BayesianLayer, str | None, int]]:
        """``(path, layer, axis, block_size)`` of every Bayesian layer of the network."""
        return bayesian_layers(self.net)

    def fit(
        self,
        train: Any,
        *,
        epochs: int,
        optimizer: Any = None,
        loss: Any = None,
        num_particles: int = 1,
        batch_size: int = BNNN_DEFAULTS["batch_size"],
        val: Any = None,
        val_samples: int = 4,
        progress: bool = True,
        seed: int | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        resume: bool = False,
        ctx: Any = None,
        check_masks: bool = False,
    ):
        """Train by stochastic variational inference and return the history; see
        :func:`bayes_nest.infer.bnnn_fit.fit` for the arguments."""
        from .bnnn_fit import fit

        return fit(
            self,
            train,
            epochs=epochs,
            optimizer=optimizer,
            loss=loss,
            num_particles=num_particles,
            batch_size=batch_size,
            val=val,
            val_samples=val_samples,
            progress=progress,
            seed=seed,
            checkpoint_path=checkpoint_path,
            resume=resume,
            ctx=ctx,
            check_masks=check_masks,
        )
