r"""The BNNN's probabilistic program: a generative model and its default guide.

**Model** ``BNNNModel(x, y=None)`` (reads nothing from the guide):

1. one mask site per axis with orderable blocks, named after the axis, drawn from the
   nested-dropout prior ``DownhillStraightThrough(π, τ)`` (``Downhill`` for relaxed masks);
2. one site per Bayesian weight and bias, named after the module path (``"<layer>.weight"``,
   ``"<layer>.bias"``), drawn IID from the weight prior (default :math:`\mathcal N(0, 1)`);
3. the network's forward pass with those masks and weights;
4. the likelihood (:mod:`bayes_nest.infer.likelihoods`), which emits ``"obs"`` inside the data
   plate and scales the mini-batch to the dataset size.

Point-estimate parameters of the network (e.g. batch-norm affine parameters) and of the
likelihood (a learned Normal scale) are ``pyro.param`` s of the model. So
``Predictive(model, num_samples=S)`` without a guide samples the prior predictive, any Pyro guide
(``AutoNormal``, ...) can be used, and NUTS can run over the weight sites.

**Guide** ``BNNNGuide(x=None, y=None)``: the variational ordering units draw the masks
(:class:`~bayes_nest.infer.vou.VariationalOrderingUnit`), then every weight site is drawn from a
mean-field Normal :math:`q(W) = \mathcal N(\mu, \operatorname{softplus}(\rho)^2)` *given the
masks*: the rows of a width layer feeding a dropped block revert to the (Normal) prior
(:class:`~bayes_nest.distributions.nested_normal.NestedNormal`), so the ELBO's weight KL given the
masks is :math:`\sum_{k \text{ kept}} \mathrm{KL}(q(W_k) \| p(W_k))`, whose expectation over the
masks is BNNN's nested weight KL :math:`\sum_k P(b \ge k)\, \mathrm{KL}_k` (DESIGN §2). With a
non-Normal weight prior, or relaxed masks, the guide is the plain mean-field Normal. The guide's mask part alone is
:class:`BNNNMaskGuide`, to combine with an AutoGuide over the weight sites.

``kl_scale`` :math:`\lambda \ne 1` tempers the weight sites with ``poutine.scale`` in model and
guide (so any ELBO multiplies the weights' KL term by :math:`\lambda`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from ..distributions.nested_normal import NestedNormal
from ..nn.axis import Axis, axis_owners, full_block_mask
from ..nn.bayesian import BayesianLayer
from .bnnn_kl import bayesian_layers
from .masks import mask_prior
from .vou import VariationalOrderingUnit

__all__ = ["BNNNGuide", "BNNNMaskGuide", "BNNNModel", "WeightSite", "site_posteriors"]


@dataclass(frozen=True)
class WeightSite:
    """A Bayesian layer's weight (and bias) sites.

    Attributes
    ----------
    path : str
        Module path of the layer in the network; the sites are ``path + ".weight"`` / ``".bias"``.
    layer : BayesianLayer
    axis : str or None
        The width axis whose blocks the layer's output rows feed (None: not nested).
    block_size : int
        Output rows per block.
    """

    path: str
    layer: BayesianLayer
    axis: str | None
    block_size: int

    @property
    def weight_name(self) -> str:
        return f"{self.path}.weight"

    @property
    def bias_name(self) -> str | None:
        return None if self.layer.bias_loc is None else f"{self.path}.bias"


def weight_sites(net: nn.Module) -> list[WeightSite]:
    """The weight sites of every Bayesian layer of ``net``, in module order."""
    return [WeightSite(*entry) for entry in bayesian_layers(net)]


def _register(prefix: str, params: Sequence[tuple[str, nn.Parameter]]) -> None:
    """``pyro.param`` every parameter under ``prefix`` (so SVI finds and updates them). Not in
    Pyro's ``module_local_params`` mode, where the ELBO module's ``parameters()`` are used."""
    if pyro.settings.get("module_local_params"):
        return
    for name, param in params:
        if pyro.param(f"{prefix}.{name}", param) is not param:
            raise RuntimeError(
                f"Pyro's parameter store holds another tensor named {prefix}.{name!r} (a "
                "different model of the same name); give BNNNs distinct names or call "
                "pyro.clear_param_store()"
            )


def row_keep(site: WeightSite, block_mask: torch.Tensor) -> torch.Tensor:
    """The keep value of every output row of ``site``'s layer, shape ``(out,)``, from the full
    block mask ``(size,)`` of its axis."""
    return block_mask.to(site.layer.weight_loc.dtype).repeat_interleave(site.block_size)


def site_posteriors(
    site: WeightSite,
    block_mask: torch.Tensor | None,
    weight_scale: torch.Tensor,
    bias_scale: torch.Tensor | None,
) -> tuple[dist.Normal, dist.Normal | None]:
    r"""The guide's distributions of ``site``'s weight and bias given the axis's mask (batch
    shapes: the parameter shapes): :class:`~bayes_nest.distributions.NestedNormal` with the
    rows' keep values, or the plain posterior Normal when ``block_mask`` is None.

    ``weight_scale``, ``bias_scale`` are :math:`\operatorname{softplus}(\rho)` of the layer.
    """
    layer = site.layer
    w_loc, b_loc = layer.weight_loc, layer.bias_loc
    if block_mask is None:
        w = dist.Normal(w_loc, weight_scale)
        return w, None if b_loc is None else dist.Normal(b_loc, bias_scale)
    rows = row_keep(site, block_mask)
    m0, s0 = layer.prior_loc, layer.prior_scale
    w = NestedNormal(w_loc, weight_scale, m0, s0, rows.view(-1, *([1] * (w_loc.dim() - 1))))
    return w, None if b_loc is None else NestedNormal(b_loc, bias_scale, m0, s0, rows)


class BNNNModel(nn.Module):
    """The generative model of a BNNN (see the module documentation). Built by
    :class:`~bayes_nest.infer.bnnn.BNNN`; call it as ``model(x, y=None)``; returns the outputs.

    Attributes
    ----------
    net : nn.Module
    likelihood : Likelihood or callable
    temperature : float
        :math:`\\tau` of the mask priors (set with the guide's by ``BNNN.set_epoch``).
    """

    def __init__(
        self,
        net: nn.Module,
        axes: Mapping[str, Axis],
        prior_keep_prob: Mapping[str, float],
        likelihood: Any,
        weight_prior: dist.Distribution | None,
        *,
        temperature: float,
        straight_through: bool,
        kl_scale: float,
        name: str,
    ) -> None:
        super().__init__()
        self.net = net
        self.likelihood = likelihood
        self.axes = dict(axes)
        self.prior_keep_prob = dict(prior_keep_prob)
        self.weight_prior = weight_prior
        self.temperature = float(temperature)
        self.straight_through = bool(straight_through)
        self.kl_scale = float(kl_scale)
        self.name = name
        object.__setattr__(self, "sites", weight_sites(net))
        object.__setattr__(self, "_owners", list(axis_owners(net)))
        posterior = {id(p) for s in self.sites for p in s.layer.parameters()}
        point = [(n, p) for n, p in net.named_parameters() if id(p) not in posterior]
        if isinstance(likelihood, nn.Module):
            point += [(f"likelihood.{n}", p) for n, p in likelihood.named_parameters()]
        object.__setattr__(self, "_point_params", point)
        self._prior_cache: dict = {}

    @property
    def dataset_size(self) -> int | None:
        """The likelihood's ``dataset_size`` (the data plate's size)."""
        return getattr(self.likelihood, "dataset_size", None)

    @dataset_size.setter
    def dataset_size(self, value: int | None) -> None:
        self.likelihood.dataset_size = value

    def register_params(self) -> None:
        """``pyro.param`` the model's point-estimate parameters."""
        _register(f"{self.name}.model", self._point_params)

    # ------------------------------------------------------------------ priors
    def mask_priors(self) -> dict[str, dist.Distribution]:
        """Nested-dropout prior per axis (constant keep probability, current temperature)."""
        ref = self.sites[0].layer.weight_loc if self.sites else torch.zeros(())
        key = ("masks", self.temperature, ref.dtype, ref.device)
        if key not in self._prior_cache:
            self._prior_cache[key] = {
                name: mask_prior(
                    axis,
                    self.prior_keep_prob[name],
                    temperature=self.temperature,
                    straight_through=self.straight_through,
                    dtype=ref.dtype,
                    device=ref.device,
                )
                for name, axis in self.axes.items()
            }
        return self._prior_cache[key]

    def weight_priors(self, site: WeightSite) -> tuple[dist.Distribution, dist.Distribution | None]:
        """The IID priors of ``site``'s weight and bias, with their full shapes as events."""
        w = site.layer.weight_loc
        key = (site.path, w.dtype, w.device)
        if key not in self._prior_cache:
            if self.weight_prior is None:
                base = dist.Normal(
                    torch.tensor(site.layer.prior_loc, dtype=w.dtype, device=w.device),
                    torch.tensor(site.layer.prior_scale, dtype=w.dtype, device=w.device),
                )
            else:
                base = self.weight_prior
            b = site.layer.bias_loc
            self._prior_cache[key] = (
                base.expand(w.shape).to_event(w.dim()),
                None if b is None else base.expand(b.shape).to_event(1),
            )
        return self._prior_cache[key]

    # ------------------------------------------------------------------ program
    def run(
        self,
        x: torch.Tensor,
        masks: Mapping[str, torch.Tensor],
        weights: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]],
    ) -> torch.Tensor:
        """The network's outputs under full block masks ``{axis: (size,)}`` and weights
        ``{layer path: (W, b)}``, set for this call only."""
        previous = [owner.mask for _, owner in self._owners]
        layers = [s.layer for s in self.sites]
        pinned = [layer.pinned for layer in layers]
        try:
            for name, owner in self._owners:
                if name in masks:
                    owner.mask = masks[name]
            for site in self.sites:
                if site.path in weights:
                    site.layer.__dict__["pinned"] = weights[site.path]
            return self.net(x)
        finally:
            for (_, owner), mask in zip(self._owners, previous, strict=True):
                owner.mask = mask
            for layer, value in zip(layers, pinned, strict=True):
                layer.__dict__["pinned"] = value

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.register_params()
        masks = {
            name: full_block_mask(self.axes[name], pyro.sample(name, prior))
            for name, prior in self.mask_priors().items()
        }
        weights = {}
        with poutine.scale(scale=self.kl_scale) if self.kl_scale != 1.0 else nullcontext():
            for site in self.sites:
                w_prior, b_prior = self.weight_priors(site)
                w = pyro.sample(site.weight_name, w_prior)
                b = None if b_prior is None else pyro.sample(site.bias_name, b_prior)
                weights[site.path] = (w, b)
        outputs = self.run(x, masks, weights)
        self.likelihood(outputs, y)
        return outputs


class BNNNMaskGuide(nn.Module):
    """The guide of the mask sites alone: one variational ordering unit per axis.

    Call it as ``guide(x=None, y=None)``; returns the orderable-block mask per axis. Combine it
    with an AutoGuide over the weight sites through ``AutoGuideList`` (see
    :meth:`~bayes_nest.infer.bnnn.BNNN.autoguide`).
    """

    def __init__(self, vous: Sequence[VariationalOrderingUnit], name: str) -> None:
        super().__init__()
        self.vous = nn.ModuleList(vous)
        self.name = name
        object.__setattr__(
            self, "_params", [(f"{v.name}.keep_logits", v.keep_logits) for v in self.vous]
        )

    def register_params(self) -> None:
        _register(f"{self.name}.masks", self._params)

    def forward(self, x: Any = None, y: Any = None) -> dict[str, torch.Tensor]:
        self.register_params()
        return {vou.name: vou() for vou in self.vous}


class BNNNGuide(nn.Module):
    """Default guide: ordering units over the masks, then mean-field Normal weights given the
    masks (see the module documentation). Returns the orderable-block mask per axis."""

    def __init__(
        self,
        masks: BNNNMaskGuide,
        sites: Sequence[WeightSite],
        *,
        conditional: bool,
        kl_scale: float,
        name: str,
    ) -> None:
        super().__init__()
        self.masks = masks
        self.conditional = bool(conditional)
        self.kl_scale = float(kl_scale)
        self.name = name
        object.__setattr__(self, "sites", list(sites))
        params = [(f"{s.path}.{n}", p) for s in self.sites for n, p in s.layer.named_parameters()]
        object.__setattr__(self, "_params", params)

    @property
    def vous(self) -> nn.ModuleList:
        return self.masks.vous

    def register_params(self) -> None:
        self.masks.register_params()
        _register(f"{self.name}.weights", self._params)

    def block_masks(self, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Full block masks per axis from the orderable-block masks (only when conditional)."""
        if not self.conditional:
            return {}
        return {v.name: full_block_mask(v.axis, masks[v.name]) for v in self.vous}

    def forward(self, x: Any = None, y: Any = None) -> dict[str, torch.Tensor]:
        _register(f"{self.name}.weights", self._params)
        masks = self.masks(x, y)  # registers the ordering units' parameters
        blocks = self.block_masks(masks)
        with poutine.scale(scale=self.kl_scale) if self.kl_scale != 1.0 else nullcontext():
            for site in self.sites:
                layer = site.layer
                b_scale = None if layer.bias_rho is None else F.softplus(layer.bias_rho)
                w, b = site_posteriors(
                    site, blocks.get(site.axis), F.softplus(layer.weight_rho), b_scale
                )
                pyro.sample(site.weight_name, w.to_event(w.loc.dim()))
                if b is not None:
                    pyro.sample(site.bias_name, b.to_event(1))
        return masks


def is_normal_prior(weight_prior: Any) -> bool:
    """Whether ``weight_prior`` is a scalar Normal (the guide's reversion to the prior and
    the closed-form KLs need it)."""
    return isinstance(weight_prior, dist.Normal) and weight_prior.loc.numel() == 1


def check_weight_prior(weight_prior: Any) -> Any:
    """``weight_prior`` if it is a univariate Pyro distribution with scalar batch shape."""
    if weight_prior is None:
        return None
    if not isinstance(weight_prior, torch.distributions.Distribution):
        raise TypeError(
            "weight_prior must be a Pyro distribution (e.g. pyro.distributions.Normal(0., 1.)), "
            f"got {type(weight_prior).__name__}"
        )
    if weight_prior.batch_shape != () or weight_prior.event_shape != ():
        raise ValueError(
            "weight_prior must be univariate with an empty batch shape (it is applied IID to "
            f"every weight), got batch {tuple(weight_prior.batch_shape)} and event "
            f"{tuple(weight_prior.event_shape)}"
        )
    if is_normal_prior(weight_prior):
        scale = float(weight_prior.scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"weight_prior's scale must be positive and finite, got {scale}")
    return weight_prior
