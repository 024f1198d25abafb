"""Masks as Pyro sample sites: one site per axis, named after the axis.

The *model* of a nested network draws the mask of every axis from a prior (a Downhill
distribution with constant keep probability π over the axis's orderable blocks); a *guide* may
draw the same sites from learned posteriors. Either way the drawn values are padded with ones for
the always-on blocks and set on the axis owners, so the next forward pass computes that
sub-network. One draw per axis per call (i.e. per mini-batch).
"""

from __future__ import annotations

from collections.abc import Mapping

import pyro
import torch
from torch import nn
from torch.distributions import Distribution

from ..defaults import BNNN_DEFAULTS, MASK_SITE_TEMPERATURE
from ..nn.axis import Axis, axes, full_block_mask, set_masks

__all__ = ["mask_prior", "mask_priors", "sample_mask_sites"]


def mask_prior(
    axis: Axis,
    keep_prob: float = BNNN_DEFAULTS["keep_prob"],
    *,
    temperature: float = MASK_SITE_TEMPERATURE,
    straight_through: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Distribution:
    """The nested-dropout prior of one axis: Downhill with constant keep probability π.

    Its keep count is the truncated geometric ``q_b = π^b (1 - π)`` for ``b < D`` and
    ``q_D = π^D``, with ``D = axis.orderable``.
    """
    from ..distributions import Downhill, DownhillStraightThrough

    if not 0.0 < float(keep_prob) < 1.0:
        raise ValueError(f"keep_prob must be in (0, 1), got {keep_prob!r}")
    if axis.orderable < 1:
        raise ValueError(f"axis {axis.name!r} has no orderable blocks")
    keep_probs = torch.full((axis.orderable,), float(keep_prob), dtype=dtype, device=device)
    cls = DownhillStraightThrough if straight_through else Downhill
    return cls(keep_probs=keep_probs, temperature=temperature)


def mask_priors(
    module: nn.Module,
    keep_prob: float | Mapping[str, float] = BNNN_DEFAULTS["keep_prob"],
    *,
    temperature: float = MASK_SITE_TEMPERATURE,
    straight_through: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, Distribution]:
    """Prior of every axis of ``module`` that has orderable blocks.

    ``keep_prob`` is one π for all axes or a mapping axis name -> π (missing axes use
    ``BNNN_DEFAULTS["keep_prob"]``, 0.95).
    """
    priors = {}
    for name, axis in axes(module).items():
        if axis.orderable == 0:
            continue
        pi = (
            keep_prob.get(name, BNNN_DEFAULTS["keep_prob"])
            if isinstance(keep_prob, Mapping)
            else keep_prob
        )
        priors[name] = mask_prior(
            axis, pi, temperature=temperature, straight_through=straight_through, device=device
        )
    return priors


def sample_mask_sites(
    module: nn.Module, distributions: Mapping[str, Distribution]
) -> dict[str, torch.Tensor]:
    """Draw one mask per axis as Pyro sample sites and set them on ``module``.

    Parameters
    ----------
    module : nn.Module
        The nested network.
    distributions : Mapping[str, Distribution]
        Axis name -> distribution over the axis's orderable blocks (event shape ``(D,)``), e.g.
        :func:`mask_priors` in a model or variational ordering units in a guide.

    Returns
    -------
    dict[str, Tensor]
        Axis name -> full block mask of shape ``(size,)`` (ones for always-on blocks).
    """
    known = axes(module)
    masks = {}
    for name, fn in distributions.items():
        if name not in known:
            raise ValueError(f"unknown axis {name!r}; known axes: {sorted(known)}")
        value = pyro.sample(name, fn)
        masks[name] = full_block_mask(known[name], value)
    set_masks(module, masks)
    return masks
