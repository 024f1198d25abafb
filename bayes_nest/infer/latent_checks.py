r"""Guard rails and a fitting loop for models with nested latent masks.

Which guide is safe on which mask site (measured on ordered PPCA; the concept page "Nested
priors in your own models" has the table):

* ``OrderingUnit`` / ``AmortizedOrderingUnit`` on a ``"count"`` site under ``TraceEnum_ELBO``:
  orders (the default);
* the same units on a ``"relaxed"`` site under ``TraceMeanField_ELBO``: safe, but the keep
  probabilities learn slowly;
* ``AutoDelta`` (a point mass) on a relaxed site: raises, it diverges;
* ``AutoNormal`` and other reparameterised autoguides on a relaxed site under
  ``TraceMeanField_ELBO``: raises, it diverges; under ``Trace_ELBO``: warns, no order is learned;
* a count site whose guide is not enumerated under ``TraceEnum_ELBO``: warns (score-function
  gradients, noisy).

Why the two raise: the relaxed Downhill density is unbounded at the vertices of its support
(the hard masks). A point-mass guide maximises that density and walks to a vertex; a guide whose
KL with the Downhill prior has no closed form makes ``TraceMeanField_ELBO`` estimate it from the
densities at a sample, which drifts to the same vertices (losses of :math:`-10^4` and below).
Autoguides are fine on every *other* site: build them on
``pyro.poutine.block(model, hide=[mask_site])``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from torch import nn
from tqdm.auto import tqdm

from ..distributions import Downhill
from .latent import _INFER_KEY, nested_elbo

__all__ = ["UnsafeGuideError", "check_guide", "fit_latent"]


class UnsafeGuideError(ValueError):
    """A guide/ELBO combination that diverges on a nested mask site."""


def _unwrap(fn: object) -> object:
    """The distribution under ``Independent`` / ``Expanded`` / ``Masked`` wrappers."""
    wrappers = (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)
    while isinstance(fn, wrappers):
        fn = fn.base_dist
    return fn


def check_guide(
    model: Callable, guide: Callable, elbo: ELBO, *args: object, **kwargs: object
) -> list[str]:
    """Check the guide of every nested mask site of ``model`` (placed by ``nested_mask``).

    Runs the model (to find its mask sites) and the guide once each, with ``args`` and
    ``kwargs``.

    Returns
    -------
    list of str
        Warnings for combinations that run but do not learn an order (also issued with
        :func:`warnings.warn`).

    Raises
    ------
    UnsafeGuideError
        For a mask site without a guide site, a point-mass (``AutoDelta``) guide on a mask site,
        or a relaxed site whose guide is not a Downhill under ``TraceMeanField_ELBO``.
    """
    if not isinstance(elbo, ELBO):
        raise TypeError(f"elbo must be a pyro.infer.ELBO instance, got {type(elbo).__name__}")
    with torch.no_grad(), pyro.validation_enabled(False):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        # not replayed: replay would overwrite the model sites' ``infer`` with the guide's
        model_trace = poutine.trace(model).get_trace(*args, **kwargs)
    messages: list[str] = []
    for name, node in model_trace.nodes.items():
        kind = (node.get("infer") or {}).get(_INFER_KEY) if node["type"] == "sample" else None
        if kind is None:
            continue
        site = guide_trace.nodes.get(name)
        if site is None or site["type"] != "sample":
            raise UnsafeGuideError(f"the guide has no sample site for the mask site {name!r}")
        fn = _unwrap(site["fn"])
        # autoguides return a Delta at the sampled value; AutoDelta's carries no density
        point_mass = isinstance(fn, dist.Delta) and not bool(torch.any(fn.log_density != 0))
        if point_mass:
            raise UnsafeGuideError(
                f"mask site {name!r}: a point-mass guide (AutoDelta) maximises the relaxed "
                "Downhill density, which is unbounded at the hard masks, and diverges; use an "
                "OrderingUnit"
            )
        if kind == "relaxed" and not isinstance(fn, Downhill):
            what = "an autoguide" if isinstance(fn, dist.Delta) else f"a {type(fn).__name__}"
            if isinstance(elbo, TraceMeanField_ELBO):
                raise UnsafeGuideError(
                    f"mask site {name!r}: {what} guide has no closed-form KL "
                    "with the Downhill prior, and TraceMeanField_ELBO's density estimate "
                    "diverges at the hard masks; use an OrderingUnit (or site='count')"
                )
            messages.append(
                f"mask site {name!r}: {what} guide on a relaxed mask does not "
                "learn an order; use an OrderingUnit"
            )
        if kind == "count":
            enumerated = (site.get("infer") or {}).get("enumerate") == "parallel"
            if not (enumerated and isinstance(elbo, TraceEnum_ELBO)):
                messages.append(
                    f"mask site {name!r}: the keep count is not enumerated under "
                    "TraceEnum_ELBO, so its gradients are score-function estimates (noisy); "
                    "use an OrderingUnit with nested_elbo()"
                )
    for message in messages:
        warnings.warn(message, stacklevel=2)
    return messages


def fit_latent(
    model: Callable,
    guide: Callable,
    data: torch.Tensor,
    modules: Iterable[nn.Module],
    *,
    steps: int,
    lr: float = 0.02,
    batch_size: int = 256,
    elbo: ELBO | None = None,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> list[float]:
    r"""Fit ``model``/``guide`` by stochastic variational inference on minibatches of ``data``.

    Both are called as ``fn(batch, dataset_size=len(data))`` (scale the data plate with
    ``pyro.plate("data", size=dataset_size, subsample=...)``). The guide is checked with
    :func:`check_guide` on the first batch. Adam on the parameters of ``modules``.

    Parameters
    ----------
    model, guide : callable
        The Pyro model and guide.
    data : Tensor, shape ``(N, ...)``
        Examples along the first dimension.
    modules : iterable of nn.Module
        The modules holding every learnable parameter of model and guide.
    steps : int
        Number of minibatch steps.
    lr : float
        Adam learning rate.
    batch_size : int
        Examples per step (at most ``N``), drawn with replacement.
    elbo : pyro.infer.ELBO, optional
        Default :func:`~bayes_nest.infer.latent.nested_elbo` (``TraceEnum_ELBO``).
    seed : int
        Seeds Pyro's and the minibatch generator.
    progress : bool
        Show a tqdm progress bar.
    callback : callable, optional
        Called as ``callback(step, loss)`` after every step (``step`` counts from 1, ``loss`` as
        returned), e.g. to score a validation set and keep the best parameters.

    Returns
    -------
    list of float
        The loss (negative ELBO estimate of the whole data set) divided by ``N``, per step.
    """
    if not isinstance(data, torch.Tensor) or data.ndim < 1 or len(data) == 0:
        raise ValueError("data must be a non-empty tensor with examples along dimension 0")
    for value, name in ((steps, "steps"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    elbo = nested_elbo() if elbo is None else elbo
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("modules hold no trainable parameters")
    n = len(data)
    pyro.set_rng_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    size = min(batch_size, n)
    with pyro.validation_enabled(False):
        for step in tqdm(range(steps), disable=not progress, desc="fit", leave=False):
            batch = data[torch.randint(0, n, (size,), generator=generator)]
            if step == 0:
                check_guide(model, guide, elbo, batch, dataset_size=n)
            optimizer.zero_grad()
            loss = elbo.differentiable_loss(model, guide, batch, dataset_size=n)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss.item()} at step {step}")
            loss.backward()
            optimizer.step()
            losses.append(loss.item() / n)
            if callback is not None:
                callback(step + 1, losses[-1])
    return losses
