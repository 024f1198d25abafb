r"""Nested priors for the latent dimensions of your own Pyro model.

A *latent group* is a vector of :math:`L` latent dimensions (the code of a factor model or a
VAE). A nested mask over it keeps a prefix: dimensions :math:`1..b` are used, the others are
switched off, with the keep count :math:`b` drawn from the nested-dropout prior
:math:`p(b)` (truncated geometric, conditional keep probability :math:`\pi`). Inside a data plate
the mask is drawn per example, so every prefix of the code must explain the data; this is what
puts the most useful direction first, the next one second, and so on.

The recipe, in the model::

    with pyro.plate("data", n):
        mask = nested_mask("order", L)                      # (N, L) prefix masks
        z = pyro.sample("z", dist.Normal(0., 1.).expand([L]).to_event(1))
        pyro.sample("x", likelihood(decoder(z * mask)), obs=x)

and in the guide::

    with pyro.plate("data", n):
        mask = unit(x)                                       # an ordering unit
        pyro.sample("z", masked_normal(loc, scale, mask).to_event(1))

fitted with ``TraceEnum_ELBO`` (see :func:`nested_elbo`): the default ``"count"`` site is a
:class:`~bayes_nest.distributions.KeepCount` that the ordering unit enumerates, so the
expectation over the :math:`L + 1` prefixes is exact and the keep probabilities get exact
gradients.

Two design points, each measured on ordered PPCA (``examples/pca_downhill.py``):

* **The posterior of a dropped dimension is its prior** (:func:`masked_normal`), so the latent
  KL is paid only for kept dimensions; otherwise a rarely kept dimension pays its KL always,
  gains only when kept, and collapses.
* **Capped keep probabilities** :math:`\beta_k = \beta_{\max,k}\,\sigma(\ell_k)`
  (``max_keep_prob``). Uncapped, the keep probabilities of every useful dimension rise to 1,
  the shorter prefixes vanish from the objective and nothing rewards the order any more (the
  leading directions end up as a rotation of the principal subspace). Dimensions the data does
  not need still go unused: their loadings go to zero.

Guard rails (:func:`~bayes_nest.infer.latent_checks.check_guide`) refuse the guide/ELBO pairs
that diverge on relaxed mask sites and warn about the ones that do not order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..distributions import DownhillStraightThrough, KeepCount, hard_mask
from ..distributions.keep_count import log_keep_marginals

__all__ = [
    "MASK_SITES",
    "AmortizedOrderingUnit",
    "OrderingUnit",
    "masked_normal",
    "nested_elbo",
    "nested_mask",
]

#: Kinds of nested mask site: ``"count"`` (a discrete keep count, summed out exactly) and
#: ``"relaxed"`` (a reparameterised straight-through Downhill mask).
MASK_SITES = ("count", "relaxed")

_INFER_KEY = "nested_mask"


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_prob(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a float in (0, 1), got {value!r}")
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def _check_site(site: object) -> str:
    if site not in MASK_SITES:
        raise ValueError(f"site must be one of {MASK_SITES}, got {site!r}")
    return str(site)


def _check_temperature(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"temperature must be a positive float, got {value!r}")
    return float(value)


def _cap_profile(cap: object, orderable: int) -> torch.Tensor | None:
    r"""The caps :math:`\beta_{\max, k}`, shape ``(D,)``: a float for every dimension,
    ``"uniform"`` for :math:`(D - k + 1) / (D - k + 2)` (every prefix equally likely when all
    keep probabilities sit at their caps), or one value per dimension."""
    if cap is None:
        return None
    if isinstance(cap, str):
        if cap != "uniform":
            raise ValueError(f"max_keep_prob must be a float, a sequence or 'uniform', got {cap!r}")
        k = torch.arange(1, orderable + 1, dtype=torch.float64)
        return ((orderable - k + 1) / (orderable - k + 2)).float()
    if isinstance(cap, int | float):
        return torch.full((orderable,), _check_prob(cap, "max_keep_prob"))
    values = torch.as_tensor(cap, dtype=torch.float32)
    if values.shape != (orderable,) or not bool(((values > 0) & (values < 1)).all()):
        raise ValueError(f"max_keep_prob must hold {orderable} values in (0, 1), got {cap!r}")
    return values


def _orderable(dim: int, always_on: int) -> int:
    _check_int(dim, "dim", 1)
    _check_int(always_on, "always_on", 0)
    if always_on >= dim:
        raise ValueError(f"always_on ({always_on}) must be smaller than dim ({dim})")
    return dim - always_on


def _full_mask(value: torch.Tensor, site: str, orderable: int, always_on: int) -> torch.Tensor:
    """The ``(..., dim)`` mask from a count ``(...)`` or an orderable mask ``(..., D)``."""
    if site == "count":
        value = hard_mask(value, orderable, dtype=torch.get_default_dtype())
    if always_on:
        value = torch.cat([value.new_ones(value.shape[:-1] + (always_on,)), value], -1)
    return value


def nested_mask(
    name: str,
    dim: int,
    *,
    keep_prob: float = 0.8,
    always_on: int = 0,
    site: str = "count",
    temperature: float = 0.5,
) -> torch.Tensor:
    r"""Place a nested mask site over a latent group of ``dim`` dimensions (model side).

    The first ``always_on`` dimensions are always kept; over the other :math:`D =
    \text{dim} - \text{always\_on}` the keep count has the nested-dropout prior
    :math:`p(b) = \pi^b (1 - \pi)` for :math:`b < D` and :math:`p(D) = \pi^D`. Called inside a
    ``pyro.plate`` the mask is drawn per example (what orders the dimensions); outside any plate
    it is one global mask.

    Parameters
    ----------
    name : str
        Name of the Pyro sample site.
    dim : int
        Number of latent dimensions :math:`L` of the group.
    keep_prob : float
        Prior conditional keep probability :math:`\pi \in (0, 1)`.
    always_on : int
        Leading dimensions that are never dropped (``0 <= always_on < dim``).
    site : {"count", "relaxed"}
        ``"count"``: a :class:`~bayes_nest.distributions.KeepCount` site (value :math:`b`, shape
        of the plates), meant to be enumerated by an ordering unit under ``TraceEnum_ELBO``.
        ``"relaxed"``: a :class:`~bayes_nest.distributions.DownhillStraightThrough` site (value a
        hard mask with relaxed gradients), for ``TraceMeanField_ELBO``.
    temperature : float
        Relaxation temperature of a ``"relaxed"`` site (ignored for ``"count"``).

    Returns
    -------
    Tensor, shape ``plates + (dim,)``
        The mask :math:`m` with :math:`m_i = 1[i \le \text{always\_on} + b]` (under
        enumeration the enumerated count adds its own leading dimension).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    orderable = _orderable(dim, always_on)
    prob = _check_prob(keep_prob, "keep_prob")
    site = _check_site(site)
    probs = torch.full((orderable,), prob)
    if site == "count":
        fn = KeepCount(keep_probs=probs)
    else:
        fn = DownhillStraightThrough(keep_probs=probs, temperature=_check_temperature(temperature))
    value = pyro.sample(name, fn, infer={_INFER_KEY: site})
    return _full_mask(value, site, orderable, always_on)


def masked_normal(
    loc: torch.Tensor,
    scale: torch.Tensor,
    mask: torch.Tensor,
    *,
    prior_loc: float = 0.0,
    prior_scale: float = 1.0,
) -> dist.Normal:
    r"""The guide of a latent group given its nested mask: the prior where a dimension is dropped.

    .. math:: q(z_k \mid x, m) = \mathcal N\big(m_k \mu_k + (1 - m_k) \mu_0,\;
       m_k s_k + (1 - m_k) s_0\big)

    so with a hard mask the KL to the prior :math:`\mathcal N(\mu_0, s_0^2)` is
    :math:`\sum_k m_k \mathrm{KL}_k`: a dropped dimension costs nothing.

    Parameters
    ----------
    loc, scale : Tensor, shape ``(..., L)``
        Encoder mean :math:`\mu` and standard deviation :math:`s > 0`.
    mask : Tensor, shape ``(..., L)``
        The nested mask of the group (from an ordering unit), broadcastable against ``loc``.
    prior_loc, prior_scale : float
        The prior of one latent dimension, :math:`\mathcal N(\mu_0, s_0^2)`.

    Returns
    -------
    pyro.distributions.Normal
        Batch shape the broadcast of the three tensors (call ``.to_event(1)`` for the group).
    """
    if loc.shape[-1] != mask.shape[-1] or scale.shape[-1] != mask.shape[-1]:
        raise ValueError(
            f"loc {tuple(loc.shape)}, scale {tuple(scale.shape)} and mask "
            f"{tuple(mask.shape)} must agree in the last (latent) dimension"
        )
    if not prior_scale > 0:
        raise ValueError(f"prior_scale must be positive, got {prior_scale!r}")
    return dist.Normal(mask * loc + (1 - mask) * prior_loc, mask * scale + (1 - mask) * prior_scale)


def nested_elbo(max_plate_nesting: int = 1, **kwargs) -> pyro.infer.TraceEnum_ELBO:
    """``TraceEnum_ELBO`` for models with ``"count"`` mask sites (exact sum over prefixes).

    ``max_plate_nesting`` is the number of plates around the deepest site (1 for a data plate);
    other keyword arguments go to ``TraceEnum_ELBO``.
    """
    return pyro.infer.TraceEnum_ELBO(max_plate_nesting=max_plate_nesting, **kwargs)


class _OrderingUnit(nn.Module):
    """Shared machinery: capped keep probabilities and the guide's mask site."""

    def __init__(
        self,
        name: str,
        dim: int,
        *,
        always_on: int,
        max_keep_prob: float | str | Sequence[float] | None,
        site: str,
        temperature: float,
    ) -> None:
        super().__init__()
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        self.dim = dim
        self.always_on = always_on
        self.orderable = _orderable(dim, always_on)
        self.max_keep_prob = max_keep_prob
        cap = _cap_profile(max_keep_prob, self.orderable)
        self.register_buffer("cap", cap)
        self.site = _check_site(site)
        self.temperature = _check_temperature(temperature)

    def raw_logits(self, *args: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def keep_logits(self, *args: torch.Tensor) -> torch.Tensor:
        r"""Logits of the capped conditional keep probabilities, shape ``batch + (D,)``."""
        raw = self.raw_logits(*args)
        if self.cap is None:
            return raw
        log_keep = torch.log(self.cap) + F.logsigmoid(raw)
        return log_keep - torch.log1p(-torch.exp(log_keep))

    def keep_probs(self, *args: torch.Tensor) -> torch.Tensor:
        r"""Conditional keep probabilities :math:`\beta`, shape ``batch + (D,)``."""
        return torch.sigmoid(self.keep_logits(*args))

    def keep_marginals(self, *args: torch.Tensor) -> torch.Tensor:
        r""":math:`P(\text{dim } k \text{ kept}) = \prod_{j \le k} \beta_j` over all ``dim``
        dimensions (ones for the always-on ones), shape ``batch + (dim,)``."""
        marginals = log_keep_marginals(self.keep_logits(*args)).exp()
        return _full_mask(marginals, "relaxed", self.orderable, self.always_on)

    def distribution(self, *args: torch.Tensor) -> torch.distributions.Distribution:
        """The posterior of the mask site (``KeepCount`` or ``DownhillStraightThrough``)."""
        logits = self.keep_logits(*args)
        if self.site == "count":
            return KeepCount(keep_logits=logits)
        return DownhillStraightThrough(keep_logits=logits, temperature=self.temperature)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        """Sample the mask site (enumerated when it is a ``"count"`` site); return the mask
        ``plates + (dim,)`` as :func:`nested_mask` does."""
        infer = {"enumerate": "parallel"} if self.site == "count" else {}
        value = pyro.sample(self.name, self.distribution(*args), infer=infer)
        return _full_mask(value, self.site, self.orderable, self.always_on)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, dim={self.dim}, always_on={self.always_on}, "
            f"max_keep_prob={self.max_keep_prob}, site={self.site!r}"
        )


class OrderingUnit(_OrderingUnit):
    r"""A learned ordering of a latent group, shared by all examples (guide of its mask site).

    Holds keep logits :math:`\ell \in \mathbb R^D` with conditional keep probabilities
    :math:`\beta_k = \beta_{\max}\sigma(\ell_k)` (the keep-count posterior
    :math:`q_b = \beta_1\cdots\beta_b(1 - \beta_{b+1})`). Call it inside the same plate as the
    model's :func:`nested_mask`; it samples the site of the same name and returns the mask.

    Parameters
    ----------
    name : str
        Name of the model's mask site.
    dim : int
        Latent dimensions :math:`L` (as in :func:`nested_mask`).
    always_on : int
        As in :func:`nested_mask`.
    init_keep_prob : float, optional
        Initial :math:`\beta_k`, below every cap; default the smaller of 0.9 and 95 % of
        each cap.
    max_keep_prob : float, "uniform", sequence of float, or None
        The cap :math:`\beta_{\max}` (default 0.95), one per dimension, or ``"uniform"``:
        :math:`\beta_{\max,k} = (D - k + 1)/(D - k + 2)`, under which every prefix is equally
        likely when all keep probabilities sit at their caps. ``None`` lifts it (then the keep
        probabilities of useful dimensions rise to 1 and the order is lost, see the module notes).
    site : {"count", "relaxed"}
        Must match the model's site.
    temperature : float
        Relaxation temperature of a ``"relaxed"`` site.
    """

    def __init__(
        self,
        name: str,
        dim: int,
        *,
        always_on: int = 0,
        init_keep_prob: float | None = None,
        max_keep_prob: float | str | Sequence[float] | None = 0.95,
        site: str = "count",
        temperature: float = 0.5,
    ) -> None:
        super().__init__(
            name,
            dim,
            always_on=always_on,
            max_keep_prob=max_keep_prob,
            site=site,
            temperature=temperature,
        )
        cap = torch.ones(self.orderable) if self.cap is None else self.cap
        if init_keep_prob is None:
            init = torch.clamp(0.95 * cap, max=0.9)
        else:
            init = torch.full_like(cap, _check_prob(init_keep_prob, "init_keep_prob"))
            if bool((init >= cap).any()):
                raise ValueError(
                    f"init_keep_prob ({init_keep_prob}) must be below max_keep_prob "
                    f"({self.max_keep_prob})"
                )
        self.logits = nn.Parameter(torch.logit(init / cap))

    def raw_logits(self, *args: torch.Tensor) -> torch.Tensor:
        return self.logits


class AmortizedOrderingUnit(_OrderingUnit):
    r"""A learned ordering per example: an encoder maps each input to its keep logits.

    :math:`\beta_k(x) = \beta_{\max}\sigma(f_\phi(x)_k)` with a user network
    :math:`f_\phi: \text{input} \to \mathbb R^D`; each example gets its own keep-count posterior
    (how many latent dimensions it needs). Call ``unit(x)`` inside the data plate of the guide.

    Parameters
    ----------
    name : str
        Name of the model's mask site.
    encoder : nn.Module
        Maps the guide's inputs ``(N, ...)`` to logits ``(N, D)``, ``D = dim - always_on``.
    dim, always_on, max_keep_prob, site, temperature
        As in :class:`OrderingUnit`.
    """

    def __init__(
        self,
        name: str,
        encoder: nn.Module,
        dim: int,
        *,
        always_on: int = 0,
        max_keep_prob: float | str | Sequence[float] | None = 0.95,
        site: str = "count",
        temperature: float = 0.5,
    ) -> None:
        super().__init__(
            name,
            dim,
            always_on=always_on,
            max_keep_prob=max_keep_prob,
            site=site,
            temperature=temperature,
        )
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
        self.encoder = encoder

    def raw_logits(self, *args: torch.Tensor) -> torch.Tensor:
        if not args:
            raise TypeError(f"{type(self).__name__} needs the inputs: call unit(x)")
        logits = self.encoder(*args)
        if logits.shape[-1] != self.orderable:
            raise ValueError(
                f"encoder returned logits of shape {tuple(logits.shape)}; the last dimension "
                f"must be dim - always_on = {self.orderable}"
            )
        return logits
