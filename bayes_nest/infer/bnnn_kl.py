r"""The nested weight KL of Bayesian nested networks.

BNNN's objective charges each output block's weights only when the block is kept (DESIGN §2):

.. math:: \sum_{\text{layers}} \sum_k P(b \ge k)\, \mathrm{KL}(q(W_k) \,\|\, p(W_k)),

where :math:`W_k` are the weights (rows and bias entries) feeding output block :math:`k` of a
width layer and :math:`P(b \ge k)` is the posterior keep marginal of that block (1 for always-on
blocks). Weights of a dropped block revert to the prior and cost nothing. Bayesian layers that do
not feed a width axis (heads, layers inside depth or path blocks) are weighted 1.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..nn.axis import axis_owners
from ..nn.bayesian import BayesianLayer

__all__ = ["bayesian_layers", "weight_kl_terms"]


def bayesian_layers(module: nn.Module) -> list[tuple[str, BayesianLayer, str | None, int]]:
    """Every Bayesian layer of ``module`` with the axis whose blocks it feeds.

    Returns
    -------
    list of ``(path, layer, axis_name, block_size)``
        ``axis_name`` is the width axis of the nested layer whose ``.affine`` this is (its output
        units form ``block_size``-unit blocks), or None for layers outside a width layer.
    """
    owners = {}
    for name, owner in axis_owners(module):
        affine = getattr(owner, "affine", None)
        if owner.axis_kind == "width" and isinstance(affine, BayesianLayer):
            owners[id(affine)] = (name, owner.axis_block_size)
    found = []
    for path, sub in module.named_modules():
        if isinstance(sub, BayesianLayer):
            axis, block = owners.get(id(sub), (None, 1))
            found.append((path, sub, axis, block))
    return found


def weight_kl_terms(
    module: nn.Module,
    block_marginals: Mapping[str, torch.Tensor] | None = None,
    *,
    layers: list[tuple[str, BayesianLayer, str | None, int]] | None = None,
) -> dict[str, torch.Tensor]:
    r"""Keep-weighted weight KL of every Bayesian layer.

    Parameters
    ----------
    module : nn.Module
    block_marginals : mapping axis name -> Tensor of shape ``(size,)``, optional
        :math:`P(b \ge k)` for every block of the axis (ones for always-on blocks), e.g. the
        posterior keep marginals of the axis's variational ordering unit. Axes not given (and
        layers without an axis) get weight 1.
    layers : list, optional
        The result of :func:`bayesian_layers` for ``module`` (computed when not given).

    Returns
    -------
    dict path -> scalar Tensor
        :math:`\sum_k P(b \ge k) \sum_{i \in \text{block } k} \mathrm{KL}_i` per layer.
    """
    block_marginals = block_marginals or {}
    terms = {}
    for path, layer, axis, block_size in layers or bayesian_layers(module):
        weights = block_marginals.get(axis) if axis is not None else None
        if weights is None:
            terms[path] = layer.kl()
            continue
        blocks = layer.weight_loc.shape[0] // block_size
        if weights.shape != (blocks,):
            raise ValueError(
                f"axis {axis!r}: block marginals have shape {tuple(weights.shape)}, layer "
                f"{path!r} has {blocks} blocks"
            )
        terms[path] = layer.block_weighted_kl(weights.to(layer.weight_loc.dtype), block_size)
    return terms
