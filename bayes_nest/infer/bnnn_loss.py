r"""The mean-field ELBO of a BNNN, computed directly (the training fast path).

:class:`~bayes_nest.infer.bnnn.BNNN`'s Pyro ``model`` and ``guide`` define the objective;
``TraceMeanField_ELBO().differentiable_loss(model, guide, x, y)`` evaluates it by tracing both
programs at every step. For a BNNN the traces always hold the same sites, so the loss can be
written out once:

.. math:: L = \frac{N}{B\,P} \sum_{p=1}^{P} \sum_{n \in \text{batch}}
   -\log \mathrm{Cat}(y_n \mid f(x_n; \tilde W^{(p)}, m^{(p)}))
   + \sum_{\text{axes}} \mathrm{KL}(q(b) \,\|\, p(b))
   + \lambda \sum_{\text{layers}} \sum_k P(b \ge k)\, \mathrm{KL}(q(W_k) \,\|\, p(W_k)),

with :math:`P` particles, each one mask draw :math:`m^{(p)}` per axis from the variational
ordering units and local-reparameterization noise in every Bayesian layer; the mask KL is the
registered closed form of the keep counts, :math:`\lambda` the BNNN's ``kl_scale`` and
:math:`N` the model's ``dataset_size`` (the plate size; :math:`B` when unset).

:func:`mean_field_loss` computes exactly these terms from the same random numbers, in the same
order (per particle: the guide's mask draws, axis by axis, then the network's forward pass), so
its value and gradients equal Pyro's on the same random state. What it saves is work, not terms:

* each axis's :math:`\log q` and log keep marginals are computed once and shared by the mask
  draw, the mask KL and the keep weights of the weight KL (no distribution objects are built);
* each layer's :math:`\sigma = \operatorname{softplus}(\rho)` is computed once and shared by the
  forward pass and the weight KL (:func:`~bayes_nest.nn.bayesian.shared_posterior_scales`);
* no traces, messengers or argument validation.

``Trace_ELBO`` (``loss="trace"`` in :func:`~bayes_nest.infer.bnnn_fit.fit`) has no such fast
path: it goes through Pyro.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nn.bayesian import shared_posterior_scales
from .bnnn_kl import weight_kl_terms

__all__ = ["mean_field_loss"]


def mean_field_loss(
    bnnn, x: torch.Tensor, y: torch.Tensor, *, num_particles: int = 1
) -> torch.Tensor:
    r"""The BNNN's negative ELBO as ``TraceMeanField_ELBO`` computes it (a scalar to minimise).

    Parameters
    ----------
    bnnn : BNNN
    x : Tensor, shape ``(B, ...)``
        A mini-batch of inputs.
    y : Tensor, shape ``(B,)``
        Its class labels (int64).
    num_particles : int
        Monte Carlo samples :math:`P` of masks and pre-activations, drawn one after the other
        (as ``TraceMeanField_ELBO(num_particles=P)`` without vectorisation).

    Returns
    -------
    Tensor, shape ``()``
        Equals ``TraceMeanField_ELBO(num_particles=P).differentiable_loss(bnnn.model,
        bnnn.guide, x, y)`` evaluated from the same random state, value and gradients.
    """
    if y is None or not torch.is_tensor(y) or y.dim() != 1 or len(y) != len(x):
        raise ValueError(
            "y must be a 1-D tensor of labels with one entry per example of x, got "
            f"{None if y is None else tuple(getattr(y, 'shape', ()))} for x of shape "
            f"{tuple(x.shape)}"
        )
    model = bnnn.model
    vous = model._vous
    terms = [vou.step_terms(model.prior_keep_prob[vou.name]) for vou in vous]
    loss = torch.stack([kl for _, _, kl in terms]).sum()
    with shared_posterior_scales(model._bayesian_layers):
        if model.kl_scale != 0.0:
            marginals = {vou.name: m for vou, (_, m, _) in zip(vous, terms, strict=True)}
            weight_kl = weight_kl_terms(model.net, marginals, layers=model._layers)
            loss = loss + model.kl_scale * sum(weight_kl.values())
        batch = len(x)
        size = batch if model.dataset_size is None else model.dataset_size
        for _ in range(num_particles):
            masks = {
                vou.name: vou.draw_block_mask(log_q)
                for vou, (log_q, _, _) in zip(vous, terms, strict=True)
            }
            logits = model.run(x, masks)
            nll = F.cross_entropy(logits, y, reduction="sum")
            loss = loss + nll * (size / (batch * num_particles))
    return loss
