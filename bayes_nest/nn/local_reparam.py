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

from collections.abc import Callable

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger

__all__ = ["DeferredDraw", "drawn_value", "local_reparameterization", "marginal_of"]

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

    def remember(
        self, value: torch.Tensor | DeferredDraw, loc: torch.Tensor, scale: torch.Tensor
    ) -> None:
        """Record ``value`` as drawn from ``Normal(loc, scale)`` (for trace-free programs)."""
        self.normals.setdefault(id(value), (value, loc, scale))


class DeferredDraw:
    r"""A Normal draw :math:`\mu + \sigma \varepsilon` whose noise is taken now and whose value
    is computed when first read (:func:`drawn_value`).

    Trace-free programs pin such draws on Bayesian layers: under local reparameterization a
    layer reads only the Normal the draw came from (:func:`marginal_of`), so the value is
    computed only for a layer that transforms its weight (a quantizer). Taking the noise at the
    draw keeps the random stream, and so every later draw, as with an eager draw.

    Parameters
    ----------
    noise : Tensor
        :math:`\varepsilon`, standard Normal, of the draw's shape.
    loc_scale : callable
        Returns ``(μ, σ)`` (broadcasting to ``noise``'s shape), called once, when the value is
        first read.
    """

    __slots__ = ("_loc_scale", "_value", "noise")

    def __init__(
        self, noise: torch.Tensor, loc_scale: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        self.noise = noise
        self._loc_scale = loc_scale
        self._value: torch.Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        return self.noise.shape

    def value(self) -> torch.Tensor:
        r""":math:`\mu + \sigma \varepsilon` (computed on the first call, then kept)."""
        if self._value is None:
            loc, scale = self._loc_scale()
            self._value = loc + scale * self.noise  # as Normal.rsample
        return self._value


def drawn_value(value: torch.Tensor | DeferredDraw | None) -> torch.Tensor | None:
    """The tensor of ``value``: a :class:`DeferredDraw`'s value, anything else as it is."""
    return value.value() if isinstance(value, DeferredDraw) else value


def local_reparameterization() -> LocalReparameterization:
    """Context manager and Pyro effect handler: Bayesian layers draw pre-activations from the
    Normal their pinned weights were drawn from (see the module documentation)."""
    return LocalReparameterization()


def active() -> LocalReparameterization | None:
    """The innermost active handler, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def marginal_of(
    value: torch.Tensor | DeferredDraw | None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(loc, scale)`` of the Normal ``value`` was drawn from, under an active handler."""
    if value is None or not _ACTIVE:
        return None
    found = _ACTIVE[-1].normals.get(id(value))
    return None if found is None else (found[1], found[2])
