r"""FN3 as a Pyro program: the BNNN's model with point-estimate weights and prior masks.

FN3 (ordered-dropout training) is the same generative model as the BNNN with two changes: the
weights are point estimates (``pyro.param`` s, registered from the network) instead of sample
sites, and the masks are not inferred: the guide draws every mask site from the nested-dropout
prior itself, so their KL is exactly 0 and the ELBO is FN3's objective, the expected
log-likelihood under ordered dropout,

.. math:: \mathcal L(W) = \mathbb E_{m \sim p(m)} \Big[ \frac{N}{B} \sum_{n \in \text{batch}}
   \log p(y_n \mid f(x_n; W, m)) \Big].

:class:`FN3Model` is that program; ``pyro.infer.SVI(fn3.model, fn3.guide, optim, Trace_ELBO())``
trains a nested network as FN3 does (one mask per axis per step, hard masks from the one
keep-count sampler). :class:`~bayes_nest.infer.fn3.FN3Trainer` remains the fast path (it slices
the network to the drawn sub-network and adds FN3's options: sandwich rule, coupling, uniform
counts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyro
import torch
from torch import nn

from ..nn.axis import axes, axis_owners, full_block_mask
from . import likelihoods
from .masks import mask_prior

__all__ = ["FN3Model"]


class FN3Model(nn.Module):
    r"""A nested network as FN3's Pyro model and prior-mask guide.

    Parameters
    ----------
    net : nn.Module
        A nested network (e.g. :class:`~bayes_nest.models.MLP`); its parameters are the
        model's point estimates, registered as ``"<name>.<parameter path>"``.
    keep_prob : float
        :math:`\pi` of the nested-dropout prior of every axis.
    likelihood : Likelihood or callable, optional
        Default :class:`~bayes_nest.infer.likelihoods.Categorical`.
    name : str
        Prefix of the parameters in Pyro's parameter store.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        keep_prob: float = 0.9,
        likelihood: Any = None,
        name: str = "fn3",
    ) -> None:
        super().__init__()
        if isinstance(keep_prob, bool) or not isinstance(keep_prob, int | float):
            raise TypeError(f"keep_prob must be a float in (0, 1), got {keep_prob!r}")
        if not 0.0 < keep_prob < 1.0:
            raise ValueError(f"keep_prob must be in (0, 1), got {keep_prob!r}")
        self.net = net
        self.likelihood = likelihoods.Categorical() if likelihood is None else likelihood
        self.name = name
        self.axes = {n: a for n, a in axes(net).items() if a.orderable >= 1}
        if not self.axes:
            raise ValueError("net has no axis with orderable blocks; is it a nested network?")
        self.keep_prob = float(keep_prob)
        object.__setattr__(self, "_owners", list(axis_owners(net)))

    def mask_priors(self) -> dict[str, torch.distributions.Distribution]:
        """The nested-dropout prior of every axis (hard masks: straight-through Downhill)."""
        ref = next(self.net.parameters())
        return {
            name: mask_prior(axis, self.keep_prob, dtype=ref.dtype, device=ref.device)
            for name, axis in self.axes.items()
        }

    def run(self, x: torch.Tensor, masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The network's outputs under full block masks, set for this call only."""
        previous = [owner.mask for _, owner in self._owners]
        try:
            for name, owner in self._owners:
                if name in masks:
                    owner.mask = masks[name]
            return self.net(x)
        finally:
            for (_, owner), mask in zip(self._owners, previous, strict=True):
                owner.mask = mask

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mask sites from the prior, point-estimate weights, the likelihood's ``"obs"``."""
        pyro.module(self.name, self.net)
        if isinstance(self.likelihood, nn.Module) and any(
            True for _ in self.likelihood.parameters()
        ):
            pyro.module(f"{self.name}.likelihood", self.likelihood)
        masks = {
            name: full_block_mask(self.axes[name], pyro.sample(name, prior))
            for name, prior in self.mask_priors().items()
        }
        outputs = self.run(x, masks)
        self.likelihood(outputs, y)
        return outputs

    def guide(self, x: Any = None, y: Any = None) -> dict[str, torch.Tensor]:
        """Every mask site drawn from its prior (nothing to infer: the masks' KL is 0)."""
        return {name: pyro.sample(name, prior) for name, prior in self.mask_priors().items()}
