r"""Local reparameterization as a Pyro effect handler on the BNNN's program.

Inside ``with local_reparameterization():`` a Normal weight site (``Normal`` or
:class:`~bayes_nest.distributions.NestedNormal`, possibly ``to_event``) remembers the location and
scale of the distribution its value was drawn from, the first time the value is seen (in SVI the
guide runs first, so the guide's :math:`q` is remembered; run alone, the model's prior). A
Bayesian layer whose pinned weight is such a value then draws its *pre-activations* instead of
using the weight (Kingma, Salimans & Welling 2015):

.. math:: a = x \mu^\top + \mu_b + \sqrt{x^2 (\sigma^2)^\top + \sigma_b^2} \odot \varepsilon,
   \qquad \varepsilon \sim \mathcal N(0, I),

the exact marginal of each pre-activation under :math:`q`, with independent noise per example
(lower-variance gradients than one weight draw per mini-batch). The weight sites, their KLs and
the rest of the program are unchanged; only the network's forward pass is.

For a :class:`~bayes_nest.distributions.NestedNormal` (a weight posterior that reverts to the
prior in the rows of dropped blocks) the pre-activations are drawn from the *posterior* in every
row: a dropped block's output is zeroed by its mask, so its value never reaches the likelihood,
and a straight-through mask gradient then sees what the block computes when it is kept (a draw
from the prior would make that gradient noise).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger

__all__ = ["local_reparameterization", "marginal_of"]

_ACTIVE: list[LocalReparameterization] = []


class LocalReparameterization(Messenger):
    """The effect handler behind :func:`local_reparameterization`."""

    def __init__(self) -> None:
        super().__init__()
        self.normals: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __enter__(self):
        self.normals = {}
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *args):
        _ACTIVE.remove(self)
        self.normals = {}
        return super().__exit__(*args)

    def _pyro_post_sample(self, msg: dict) -> None:
        fn = msg["fn"]
        while isinstance(fn, dist.Independent | torch.distributions.Independent):
            fn = fn.base_dist
        value = msg["value"]
        if isinstance(fn, torch.distributions.Normal) and id(value) not in self.normals:
            # a NestedNormal's dropped rows: the posterior's marginal (see the module doc)
            loc, scale = getattr(fn, "post_loc", fn.loc), getattr(fn, "post_scale", fn.scale)
            self.normals[id(value)] = (value, loc, scale)

    def remember(self, value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> None:
        """Record ``value`` as drawn from ``Normal(loc, scale)`` (for trace-free programs)."""
        self.normals.setdefault(id(value), (value, loc, scale))


def local_reparameterization() -> LocalReparameterization:
    """Context manager and Pyro effect handler: Bayesian layers draw pre-activations from the
    Normal their pinned weights were drawn from (see the module documentation)."""
    return LocalReparameterization()


def active() -> LocalReparameterization | None:
    """The innermost active handler, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def marginal_of(value: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(loc, scale)`` of the Normal ``value`` was drawn from, under an active handler."""
    if value is None or not _ACTIVE:
        return None
    found = _ACTIVE[-1].normals.get(id(value))
    return None if found is None else (found[1], found[2])
