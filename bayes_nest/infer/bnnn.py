r"""Bayesian nested neural networks (BNNN): a Pyro model and guide around any nested network.

The pieces are kept apart, as in TyXe: the *architecture* is any nested network (its width layers
and heads are made Bayesian in place by :func:`~bayes_nest.nn.bayesian.to_bayesian_`), the
*prior* is a nested-dropout Downhill per axis plus a Normal prior per weight, the *guide* is one
:class:`~bayes_nest.infer.vou.VariationalOrderingUnit` per axis plus the mean-field Normal weight
posteriors, and the *likelihood* is a Categorical over the classes.

``BNNN.model(x, y=None)``
    1. one mask site per axis (named after the axis), drawn from the prior
       ``Downhill(π, τ)`` — replayed from the guide during inference;
    2. one ``pyro.factor`` site per Bayesian layer, ``"<layer path>.weight_kl"``, with value
       :math:`-\lambda \sum_k P(b \ge k)\, \mathrm{KL}(q(W_k) \| p(W_k))`, the weights'
       contribution to the ELBO (see below);
    3. the network's forward pass, whose Bayesian layers draw their pre-activations from the
       weight posterior by local reparameterization;
    4. ``"obs" ~ Categorical(logits)`` inside ``pyro.plate("data", size=dataset_size)``, so a
       mini-batch's log-likelihood is scaled by ``dataset_size / batch_size``.

``BNNN.guide(x=None, y=None)``
    one mask site per axis from its VOU's Downhill posterior (same order as the model).

How the weights enter the ELBO. The weights are not Pyro sample sites: local reparameterization
samples pre-activations, not weights, so the weight posterior lives in the network's layers and
the weight part of the ELBO, :math:`\mathbb E_q[\log p(W \mid b) - \log q(W)] = -\sum_k P(b \ge
k) \mathrm{KL}_k`, is added in closed form as factor sites of the model, with the keep marginals
:math:`P(b \ge k) = \beta_1 \cdots \beta_k` read from the guide's VOUs (so their gradient reaches
the keep logits exactly). With ``TraceMeanField_ELBO`` (``loss="mean_field"``) the mask term is
the registered closed-form KL of the keep counts, so the loss of one step is

.. math:: -\frac{N}{B} \sum_{n \in \text{batch}} \log p(y_n \mid x_n, \tilde W, m)
   + \sum_{\text{axes}} \mathrm{KL}(q(b) \| p(b))
   + \lambda \sum_{\text{layers}} \sum_k P(b \ge k)\, \mathrm{KL}(q(W_k) \| p(W_k)),

and with ``Trace_ELBO`` (``loss="trace"``) the mask KL is replaced by its Monte Carlo estimate
:math:`\log q(m) - \log p(m)` on the relaxed densities. :math:`\lambda` (``kl_scale``, default 1)
tempers the weight KL; 1 gives the ELBO.

Both programs are :class:`~pyro.nn.PyroModule` s (``BNNN.model`` and ``BNNN.guide``), so they
work with ``pyro.infer.SVI``, ``pyro.infer.Predictive`` and with
``pyro.settings.set(module_local_params=True)`` (``Trace_ELBO()(bnnn.model, bnnn.guide)`` is then
an ``nn.Module`` whose ``parameters()`` are all of the BNNN's).

The programs are the definition of the objective. :meth:`BNNN.fit` evaluates the mean-field loss
with :func:`~bayes_nest.infer.bnnn_loss.mean_field_loss`, which computes the same terms from the
same random draws without tracing the programs at every step.
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
from pyro.nn import PyroModule
from torch import nn

from ..nn.axis import axes, axis_owners, full_block_mask
from ..nn.bayesian import BayesianLayer, shared_posterior_scales, to_bayesian_
from . import bnnn_predict
from .bnnn_kl import bayesian_layers, weight_kl_terms
from .vou import Temperature, VariationalOrderingUnit

__all__ = ["BNNN", "BNNNGuide", "BNNNModel"]

_RESERVED_SITES = ("obs", "data")


class BNNNModel(PyroModule):
    """The generative model of a BNNN: priors on masks and weights, Categorical likelihood.

    Built by :class:`BNNN`; call it as ``model(x, y=None)``. Returns the logits ``(B, K)``.
    """

    def __init__(
        self,
        net: nn.Module,
        vous: Sequence[VariationalOrderingUnit],
        prior_keep_prob: Mapping[str, float],
        kl_scale: float,
        name: str,
    ) -> None:
        super().__init__(name=name)
        self.net = net
        # Owned (and registered) by the guide; the model only reads their keep marginals.
        object.__setattr__(self, "_vous", list(vous))
        self.prior_keep_prob = dict(prior_keep_prob)
        self.kl_scale = float(kl_scale)
        self.dataset_size: int | None = None
        # The network's structure is fixed once wrapped: cache what the hot path looks up.
        object.__setattr__(self, "_owners", list(axis_owners(net)))
        object.__setattr__(self, "_layers", bayesian_layers(net))
        object.__setattr__(self, "_bayesian_layers", [layer for _, layer, *_ in self._layers])
        self._prior_cache: tuple[tuple, dict] | None = None

    def mask_priors(self) -> dict:
        """Prior mask distribution per axis (constant keep probability, current temperature)."""
        key = tuple((v.temperature, v.straight_through) for v in self._vous)
        if self._prior_cache is None or self._prior_cache[0] != key:
            priors = {v.name: v.prior(self.prior_keep_prob[v.name]) for v in self._vous}
            self._prior_cache = (key, priors)
        return self._prior_cache[1]

    def run(self, x: torch.Tensor, masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The network's logits ``(B, K)`` under full block masks ``{axis: (size,)}``.

        The masks are set on the axis owners for this call only (previous masks restored).
        """
        previous = [owner.mask for _, owner in self._owners]
        try:
            for name, owner in self._owners:
                if name in masks:
                    owner.mask = masks[name]
            logits = self.net(x)
        finally:
            for (_, owner), mask in zip(self._owners, previous, strict=True):
                owner.mask = mask
        if logits.dim() != 2:
            raise ValueError(f"the network must return logits (B, K), got {tuple(logits.shape)}")
        return logits

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        masks = {}
        for vou, (name, prior) in zip(self._vous, self.mask_priors().items(), strict=True):
            masks[name] = full_block_mask(vou.axis, pyro.sample(name, prior))
        with shared_posterior_scales(self._bayesian_layers):
            if self.kl_scale != 0.0:
                marginals = {v.name: v.block_marginals() for v in self._vous}
                terms = weight_kl_terms(self.net, marginals, layers=self._layers)
                for path, kl in terms.items():
                    pyro.factor(f"{path}.weight_kl", -self.kl_scale * kl)
            logits = self.run(x, masks)
        batch = logits.shape[0]
        size = batch if self.dataset_size is None else self.dataset_size
        with pyro.plate("data", size=size, subsample=torch.arange(batch, device=logits.device)):
            pyro.sample("obs", dist.Categorical(logits=logits), obs=y)
        return logits


class BNNNGuide(PyroModule):
    """The variational family of a BNNN's masks: one VOU per axis.

    Call it as ``guide(x=None, y=None)`` (the data are not used); returns the mask per axis.
    The weight posteriors live in the network's Bayesian layers (see the module documentation).
    """

    def __init__(self, vous: Sequence[VariationalOrderingUnit], name: str) -> None:
        super().__init__(name=name)
        self.vous = nn.ModuleList(vous)

    def forward(self, x: Any = None, y: Any = None) -> dict[str, torch.Tensor]:
        return {vou.name: vou() for vou in self.vous}


def _check_prob(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{name} must be a probability in (0, 1), got {value!r}")
    return float(value)


class BNNN(nn.Module):
    r"""A Bayesian nested neural network around a nested network.

    Parameters
    ----------
    net : nn.Module
        A nested network returning logits ``(B, K)``, e.g. :class:`~bayes_nest.models.MLP`.
        Converted in place: every linear and conv layer becomes Bayesian, with posterior means
        initialised from its current weights (a trained FN3 network is a good start).
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
        Standard deviation of the Normal weight prior (see :mod:`bayes_nest.nn.bayesian`).
    prior_loc : float
        Mean of the weight prior (default 0).
    init_scale : float
        Initial posterior standard deviation of the weights.
    kl_scale : float
        :math:`\lambda`, the weight of the weight KL (1 = the ELBO).
    name : str
        Prefix of the programs' names in Pyro's global parameter store. Entries under it are
        dropped when the BNNN is built, so a new BNNN never picks up a previous one's
        parameters; give concurrent BNNNs distinct names.

    Attributes
    ----------
    model : BNNNModel
    guide : BNNNGuide
    vous : dict[str, VariationalOrderingUnit]
        One per axis with orderable blocks.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        prior_keep_prob: float | Mapping[str, float] = 0.95,
        init_keep_prob: float = 0.95,
        temperature: Temperature = 1.0,
        straight_through: bool = True,
        prior_scale: float | str = 1.0,
        prior_loc: float = 0.0,
        init_scale: float = 1e-2,
        kl_scale: float = 1.0,
        name: str = "bnnn",
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        if not isinstance(name, str) or not name or "$$$" in name:
            raise ValueError(f"name must be a non-empty string without '$$$', got {name!r}")
        if isinstance(kl_scale, bool) or not (
            isinstance(kl_scale, int | float) and math.isfinite(kl_scale) and kl_scale >= 0
        ):
            raise ValueError(f"kl_scale must be a finite number >= 0, got {kl_scale!r}")
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
        layer_sites = {f"{path}.weight_kl" for path, *_ in bayesian_layers(net)}
        for site in orderable:
            if site in _RESERVED_SITES or site in layer_sites:
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
        }
        self.guide = BNNNGuide(vous, name=f"{name}.guide")
        self.model = BNNNModel(net, vous, pis, kl_scale, name=f"{name}.model")
        self.epoch = 0
        self.history = None
        self._optimizer: torch.optim.Optimizer | None = None
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

    def clear_param_store(self) -> None:
        """Drop entries of Pyro's global parameter store under this BNNN's name.

        Only matters for user-written ``pyro.infer.SVI`` loops in the global parameter mode:
        ``pyro.param`` returns a stored tensor of the same name instead of this BNNN's own.
        :meth:`fit` does not use the global store.
        """
        store = pyro.get_param_store()
        for key in list(store.keys()):
            if key.startswith((f"{self.name}.model", f"{self.name}.guide")):
                del store[key]

    def set_epoch(self, epoch: int) -> dict[str, float]:
        """Apply the temperature schedule at ``epoch``; returns the temperature per axis."""
        self.epoch = int(epoch)
        return {name: vou.set_epoch(epoch) for name, vou in self.vous.items()}

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
        """The keep-weighted weight KL summed over layers (without ``kl_scale``)."""
        terms = weight_kl_terms(self.net, {n: v.block_marginals() for n, v in self.vous.items()})
        return torch.stack(list(terms.values())).sum()

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        x: torch.Tensor,
        *,
        config: Mapping[str, int] | None = None,
        num_samples: int = 8,
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
        loss: str = "mean_field",
        num_particles: int = 1,
        batch_size: int = 128,
        val: Any = None,
        val_samples: int = 4,
        progress: bool = True,
        seed: int | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        resume: bool = False,
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
        )
