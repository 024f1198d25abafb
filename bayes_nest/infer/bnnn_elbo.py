r"""The BNNN's training fast path: a ``TraceMeanField_ELBO`` that does not trace.

:class:`NestedMeanFieldELBO` subclasses Pyro's ``TraceMeanField_ELBO`` (as Pyro's own
``JitTraceMeanField_ELBO`` does). For a BNNN's model with its default guide and a known
likelihood (:mod:`bayes_nest.infer.likelihoods`) it evaluates the very same estimator without
building traces: per particle, in the guide's order, one mask per axis from the variational
ordering units, one draw of every weight and bias from :math:`q(W \mid m)`, then the network's
forward pass, giving

.. math:: L = \sum_{\text{axes}} \mathrm{KL}(q(b) \,\|\, p(b))
   + \lambda \sum_{\text{sites}} \mathrm{KL}(q(W \mid m) \,\|\, p(W))
   - \frac{N}{B} \sum_{n \in \text{batch}} \log p(y_n \mid f(x_n; W, m)),

averaged over particles. Its value and gradients equal ``TraceMeanField_ELBO``'s from the same
random state (tested). What it saves is work: each axis's :math:`\log q` is computed once and
shared by the mask draw and the mask KL in one fused autograd node
(:func:`~bayes_nest.distributions.keep_count_ops.keep_terms`), the Normal KLs are evaluated elementwise without
distribution objects, and there are no messengers or argument validation. For anything else (an
AutoGuide, a user likelihood, a non-Normal weight prior, relaxed masks, vectorised particles) it
*is* ``TraceMeanField_ELBO``.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import torch_item

from ..distributions.nested_normal import NestedNormal
from ..nn import local_reparam
from ..nn.bayesian_ops import block_weighted_normal_kl, per_unit_normal_kl
from .bnnn_model import BNNNGuide, BNNNModel, row_keep
from .likelihoods import KNOWN

__all__ = ["NestedMeanFieldELBO", "fast_path_applies"]


def fast_path_applies(model: Any, guide: Any) -> bool:
    """Whether ``(model, guide)`` is a BNNN's model with its own default guide, a known
    likelihood, a Normal weight prior and straight-through masks."""
    return (
        isinstance(model, BNNNModel)
        and isinstance(guide, BNNNGuide)
        and model.sites == guide.sites
        and type(model.likelihood) in KNOWN
        and model.weight_prior is None
        and guide.conditional
        and model.straight_through
        and all(v.straight_through for v in guide.vous)
    )


def _draw(loc_scale, post_loc, post_scale) -> torch.Tensor | local_reparam.DeferredDraw:
    """``Normal(*loc_scale()).rsample()`` as the guide draws it (``loc_scale`` gives the drawn
    Normal's location and scale; ``(post_loc, post_scale)`` is the posterior's, the same for a
    plain Normal, the un-reverted one for a NestedNormal, as the handler records it).

    Under an active local reparameterization the value is remembered with the posterior and
    deferred (:class:`~bayes_nest.nn.local_reparam.DeferredDraw`): the noise is taken now, in
    the guide's order, but ``μ + σ ε`` is computed only if a layer reads it (a weight
    transform, e.g. a quantizer); the layers otherwise draw pre-activations from the posterior.
    """
    noise = torch.randn_like(post_loc)
    handler = local_reparam.active()
    if handler is None:
        loc, scale = loc_scale()
        return loc + scale * noise
    value = local_reparam.DeferredDraw(noise, loc_scale)
    handler.remember(value, post_loc, post_scale)
    return value


def _reverted(site, block_mask, loc, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Location and scale of ``site``'s NestedNormal (weight or bias) under ``block_mask``:
    the posterior's in kept rows, the prior's in dropped ones."""
    layer = site.layer
    rows = row_keep(site, block_mask)
    keep = rows.view(-1, *([1] * (loc.dim() - 1)))
    return NestedNormal.effective(loc, scale, layer.prior_loc, layer.prior_scale, keep)


def _particle(
    model: BNNNModel, guide: BNNNGuide, terms: list, x, y, rao_blackwellized: bool
) -> torch.Tensor:
    """One particle of the negative ELBO, drawing in the guide's order."""
    marginals = {vou.name: m for vou, (_, m, _) in zip(guide.vous, terms, strict=True)}
    masks = {
        vou.name: vou.draw_block_mask(log_q)
        for vou, (log_q, _, _) in zip(guide.vous, terms, strict=True)
    }
    weights, weight_kl = {}, []
    for site in guide.sites:
        layer = site.layer
        m0, s0 = layer.prior_loc, layer.prior_scale
        w_loc, b_loc = layer.weight_loc, layer.bias_loc
        w_scale = F.softplus(layer.weight_rho)
        b_scale = None if layer.bias_rho is None else F.softplus(layer.bias_rho)
        block_mask = masks.get(site.axis)
        if block_mask is None:
            w = _draw(lambda w_loc=w_loc, w_scale=w_scale: (w_loc, w_scale), w_loc, w_scale)
            b = None
            if b_loc is not None:
                b = _draw(lambda b_loc=b_loc, b_scale=b_scale: (b_loc, b_scale), b_loc, b_scale)
            weight_kl.append(per_unit_normal_kl(w_loc, w_scale, b_loc, b_scale, m0, s0).sum())
        else:
            w = _draw(partial(_reverted, site, block_mask, w_loc, w_scale), w_loc, w_scale)
            b = None
            if b_loc is not None:
                b = _draw(partial(_reverted, site, block_mask, b_loc, b_scale), b_loc, b_scale)
            weights_of_blocks = marginals[site.axis] if rao_blackwellized else block_mask
            weight_kl.append(
                block_weighted_normal_kl(
                    w_loc, w_scale, b_loc, b_scale, weights_of_blocks, site.block_size, m0, s0
                )
            )
        weights[site.path] = (w, b)
    outputs = model.run(x, masks, weights)
    likelihood = model.likelihood
    nll = -likelihood.log_likelihood(outputs, y).sum() * likelihood.scale(len(x))
    return nll + model.kl_scale * torch.stack(weight_kl).sum() if weight_kl else nll


class NestedMeanFieldELBO(TraceMeanField_ELBO):
    r"""``TraceMeanField_ELBO`` with a trace-free evaluation for BNNN programs.

    Parameters
    ----------
    rao_blackwellized : bool
        False (default): exactly ``TraceMeanField_ELBO``'s estimator (the weight KL given the
        sampled masks, :math:`\sum_k m_k \mathrm{KL}_k`). True: that term replaced by its
        expectation over the masks, :math:`\sum_k P(b \ge k)\, \mathrm{KL}_k` (the same ELBO
        in expectation, with lower variance and the exact gradient with respect to the keep
        logits instead of the straight-through one). :meth:`BNNN.fit` uses the default
        (False) unless given ``loss=NestedMeanFieldELBO(rao_blackwellized=True)``.
    local_reparameterization : bool
        Evaluate under :func:`~bayes_nest.nn.local_reparam.local_reparameterization` (default
        True): the network draws pre-activations from the weights' Normals (fast path and Pyro
        path alike), i.e. ``TraceMeanField_ELBO`` run inside that effect handler.
    **kwargs
        Those of ``TraceMeanField_ELBO`` (``num_particles``, ...).

    Notes
    -----
    See the module documentation for when the fast path is taken.
    """

    def __init__(
        self,
        *,
        rao_blackwellized: bool = False,
        local_reparameterization: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rao_blackwellized = bool(rao_blackwellized)
        self.local_reparameterization = bool(local_reparameterization)

    def _handler(self):
        if self.local_reparameterization:
            return local_reparam.local_reparameterization()
        return nullcontext()

    def takes_fast_path(self, model: Any, guide: Any) -> bool:
        """Whether ``(model, guide)`` is evaluated trace-free (see the module documentation);
        that path registers the same parameters at every step."""
        return not self.vectorize_particles and fast_path_applies(model, guide)

    def _fast_loss(self, model: BNNNModel, guide: BNNNGuide, x, y=None, *rest, **kwargs):
        if y is None or rest or kwargs:
            raise ValueError("the BNNN ELBO needs (x, y) and no further arguments")
        model.register_params()  # the parameters SVI collects, as the programs would
        guide.register_params()
        terms = [vou.step_terms(model.prior_keep_prob[vou.name]) for vou in guide.vous]
        loss = 0.0
        for _ in range(self.num_particles):
            mask_kl = torch.stack([kl for *_, kl in terms]).sum()
            loss = loss + mask_kl + _particle(model, guide, terms, x, y, self.rao_blackwellized)
        return loss / self.num_particles

    def differentiable_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any):
        with self._handler():
            if self.takes_fast_path(model, guide):
                return self._fast_loss(model, guide, *args, **kwargs)
            return super().differentiable_loss(model, guide, *args, **kwargs)

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        with self._handler():
            if self.takes_fast_path(model, guide):
                with torch.no_grad():
                    return torch_item(self._fast_loss(model, guide, *args, **kwargs))
            return super().loss(model, guide, *args, **kwargs)

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        with self._handler():
            if self.takes_fast_path(model, guide):
                loss = self._fast_loss(model, guide, *args, **kwargs)
                loss.backward(retain_graph=self.retain_graph)
                return torch_item(loss)
            return super().loss_and_grads(model, guide, *args, **kwargs)
