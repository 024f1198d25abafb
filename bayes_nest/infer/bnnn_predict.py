r"""Predictions and posterior draws of a :class:`~bayes_nest.infer.bnnn.BNNN`.

Sub-networks are run by truncation (an ``int`` keep count per axis, so the layers slice) or, with
``scale_by_keep_marginals``, by a per-block multiplier that keeps the first blocks scaled by their
posterior keep marginals :math:`P(b \ge k)` and zeroes the rest. Weights come from the posterior
(one draw per sample, or its means); every draw of a keep count uses the VOU's posterior
:math:`q(b)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..nn.axis import masked
from ..nn.bayesian import deterministic_weights, pinned_weights
from ..subnet.config import validate_config
from . import likelihoods
from .bnnn_kl import bayesian_layers
from .defaults import BNNN_DEFAULTS

__all__ = ["posterior_draws", "posterior_samples", "predict", "predictive_mean"]


def predictive_mean(likelihood, outputs: torch.Tensor) -> torch.Tensor:
    """The mean of the observation given the network's outputs: class probabilities (softmax
    over dim 1) for a Categorical likelihood (and a user likelihood), success probabilities for
    Bernoulli, the outputs themselves for Normal."""
    if isinstance(likelihood, likelihoods.Bernoulli):
        return torch.sigmoid(outputs)
    if isinstance(likelihood, likelihoods.Normal):
        return outputs
    return torch.softmax(outputs, 1 if outputs.dim() > 1 else -1)


def _masks(bnnn, config: Mapping[str, int] | None, scale: bool) -> dict:
    if config is None:
        counts = {n: int(v.sample_keep_counts()) for n, v in bnnn.vous.items()}
    else:
        counts = dict(config)
    if not scale:
        return counts
    marginals = bnnn.keep_marginals()
    masks: dict = {}
    for n, count in counts.items():
        if n not in marginals:
            masks[n] = count
            continue
        m = marginals[n].clone()
        m[count:] = 0.0
        masks[n] = m
    return masks


@torch.no_grad()
def predict(
    bnnn,
    x: torch.Tensor,
    *,
    config: Mapping[str, int] | None = None,
    num_samples: int = BNNN_DEFAULTS["predict_samples"],
    scale_by_keep_marginals: bool = False,
    sample_weights: bool = True,
    batch_size: int = 1024,
) -> torch.Tensor:
    r"""Posterior predictive class probabilities of sub-networks.

    Parameters
    ----------
    bnnn : BNNN
    x : Tensor, shape ``(N, ...)``
    config : mapping axis -> keep count, optional
        Run this sub-network (hard truncation; missing axes kept whole), e.g.
        ``subnet.full(bnnn.net)``. ``None``: every sample draws its own keep counts from
        the posterior :math:`q(b)` of each axis, i.e. the posterior predictive over
        sub-networks.
    num_samples : int
        Monte Carlo samples :math:`S`.
    scale_by_keep_marginals : bool
        Multiply each kept block by its posterior keep marginal :math:`P(b \ge k)`
        (BNNN's weight-scaling inference); always-on blocks keep 1.
    sample_weights : bool
        Draw the weights from the posterior, one draw per sample (default), or use the
        posterior mean weights (then all samples with a fixed ``config`` agree).
    batch_size : int
        Examples per forward pass.

    Returns
    -------
    Tensor, shape ``(S, N, K)``
        Softmax probabilities (float32, on the CPU), one row per sample, for a Categorical
        likelihood (``(S, N, K, *spatial)`` per pixel); the likelihood's mean for others
        (:func:`predictive_mean`). The network runs in eval mode.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a Tensor of shape (N, ...), got {type(x).__name__}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    checked = None if config is None else validate_config(bnnn.net, config)
    return _run(bnnn, x, num_samples, checked, scale_by_keep_marginals, sample_weights, batch_size)


def _run(bnnn, x, num_samples, config, scale, sample_weights, batch_size, weights=None):
    net = bnnn.net
    layers = bayesian_layers(net)
    x = x.to(next(net.parameters()).device)
    was_training = net.training
    net.eval()
    out = []
    try:
        for s in range(num_samples):
            masks = _masks(bnnn, config, scale)
            if weights is not None:
                pinned = {k: v[s] for k, v in weights.items()}
            elif sample_weights:  # one weight draw per sample, as the generative model draws
                pinned = {path: layer.sample_weight() for path, layer, *_ in layers}
            else:
                pinned = {}
            with (
                masked(net, masks),
                deterministic_weights(net, not sample_weights),
                pinned_weights(net, pinned),
            ):
                chunks = [net(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
            out.append(predictive_mean(bnnn.likelihood, torch.cat(chunks)).float().cpu())
    finally:
        net.train(was_training)
    return torch.stack(out)


@torch.no_grad()
def posterior_samples(
    bnnn,
    num_samples: int,
    x: torch.Tensor | None = None,
    *,
    weights: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Draws from the posterior, as a dict of arrays for :func:`bayes_nest.analysis.to_arviz`.

    Parameters
    ----------
    bnnn : BNNN
    num_samples : int
        :math:`S`.
    x : Tensor, optional
        Inputs for predictive probabilities.
    weights : sequence of str, optional
        Paths of Bayesian layers whose weight draws to return (default: the last layer).

    Returns
    -------
    dict of numpy arrays, leading dimension ``S``
        ``"keep_probs/<axis>"`` ``(S, D)`` (the variational parameter, repeated),
        ``"keep_count/<axis>"`` ``(S,)`` (kept blocks, always-on included),
        ``"mask/<axis>"`` ``(S, D)`` (the hard mask of the orderable blocks),
        ``"weight/<layer>"`` ``(S, *weight_shape)``, and with ``x`` ``"probs"`` ``(S, N, K)``
        (the sub-network and weights of each draw; a posterior-predictive quantity).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    layers = {path: layer for path, layer, *_ in bayesian_layers(bnnn.net)}
    chosen = [list(layers)[-1]] if weights is None else list(weights)
    for path in chosen:
        if path not in layers:
            raise ValueError(f"no Bayesian layer {path!r}; Bayesian layers: {sorted(layers)}")
    out: dict[str, np.ndarray] = {}
    counts = {n: v.sample_keep_counts((num_samples,)).cpu() for n, v in bnnn.vous.items()}
    for n, v in bnnn.vous.items():
        out[f"keep_probs/{n}"] = v.keep_probs().detach().expand(num_samples, -1).cpu().numpy()
        out[f"keep_count/{n}"] = counts[n].cpu().numpy()
        blocks = torch.arange(v.axis.always_on, v.axis.size)
        out[f"mask/{n}"] = (blocks < counts[n][:, None]).float().cpu().numpy()
    draws = {p: [layers[p].sample_weight() for _ in range(num_samples)] for p in chosen}
    for p in chosen:
        out[f"weight/{p}"] = torch.stack([w for w, _ in draws[p]]).cpu().numpy()
    if x is not None:
        probs = []
        for s in range(num_samples):
            config = {n: int(c[s]) for n, c in counts.items()}
            pinned = {p: [draws[p][s]] for p in chosen}
            probs.append(_run(bnnn, x, 1, config, False, True, 1024, pinned)[0])
        out["probs"] = torch.stack(probs).cpu().numpy()
    return out


@torch.no_grad()
def posterior_draws(
    bnnn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_samples: int,
    weights: Sequence[str] | None = None,
    batch_size: int = 1024,
) -> dict[str, dict[str, torch.Tensor]]:
    """The groups of :func:`bayes_nest.analysis.from_bnnn` as tensors (see there): each of the
    ``num_samples`` draws runs the guide once (masks and weights) and the network on ``x``."""
    from pyro import poutine

    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not (torch.is_tensor(x) and torch.is_tensor(y)) or len(x) != len(y):
        raise ValueError("x and y must be tensors with the same number of examples")
    known = set(bnnn.weight_site_names())
    chosen = list(weights or [])
    for name in chosen:
        if name not in known:
            raise ValueError(f"no weight site {name!r}; weight sites: {sorted(known)}")
    model, likelihood = bnnn.model, bnnn.likelihood
    device = next(bnnn.parameters()).device
    x, y = x.to(device), y.to(device)
    draws: dict[str, list] = {}
    predictive, loglik = [], []
    was_training = bnnn.net.training
    bnnn.net.eval()
    try:
        for _ in range(num_samples):
            trace = poutine.trace(bnnn.guide).get_trace(x, y)
            masks = {}
            for name, vou in bnnn.vous.items():
                mask = trace.nodes[name]["value"]
                masks[name] = torch.cat([mask.new_ones(vou.axis.always_on), mask])
                draws.setdefault(f"mask/{name}", []).append(mask)
                count = vou.axis.always_on + mask.sum()
                draws.setdefault(f"keep_count/{name}", []).append(count.round().long())
            sites = model.sites
            drawn = {
                s.path: (
                    trace.nodes[s.weight_name]["value"],
                    None if s.bias_name is None else trace.nodes[s.bias_name]["value"],
                )
                for s in sites
            }
            for name in chosen:
                draws.setdefault(name, []).append(trace.nodes[name]["value"])
            outputs = torch.cat(
                [
                    model.run(x[i : i + batch_size], masks, drawn)
                    for i in range(0, len(x), batch_size)
                ]
            )
            predictive.append(predictive_mean(likelihood, outputs).float().cpu())
            loglik.append(likelihood.log_likelihood(outputs, y).double().cpu())
    finally:
        bnnn.net.train(was_training)
    key = "probs" if isinstance(likelihood, likelihoods.Categorical) else "mean"
    return {
        "posterior": {k: torch.stack(v).cpu() for k, v in draws.items()},
        "posterior_predictive": {key: torch.stack(predictive)},
        "log_likelihood": {"obs": torch.stack(loglik)},
        "observed_data": {"obs": y.cpu()},
    }
