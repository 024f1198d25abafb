"""Ordered probabilistic PCA: a nested prior orders the latent dimensions of a Pyro model.

Data with a known spectrum: 10 observed dimensions, 5 latent directions with distinct variances
(9, 6, 4, 2.5, 1.5) and isotropic noise. The model has ``L = 8`` latent dimensions::

    b ~ KeepCount(π)          per example: dimensions 1..b are used
    z ~ N(0, I_L)
    x ~ N(W (m ⊙ z) + c, σ² I),   m_k = 1[k <= b]

and the guide is the recipe's default (:mod:`bayes_nest.infer.latent`): a learned
:class:`~bayes_nest.infer.latent.OrderingUnit` (capped keep probabilities, the keep count summed
out exactly) and a linear encoder for ``z`` whose dropped dimensions fall back to the prior
(:func:`~bayes_nest.infer.latent.masked_normal`). Every prefix of the code must explain the
data, so column ``k`` of ``W`` learns the ``k``-th principal direction, and the posterior keep
probabilities learn how many dimensions the data needs: the three spare columns are switched off.

Run ``python examples/pca_downhill.py`` (or ``--quick``); ``--plot keep.png`` saves the ArviZ-style
view of the learned keep probabilities.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayes_nest.infer.latent import OrderingUnit, masked_normal, nested_mask
from bayes_nest.infer.latent_checks import fit_latent

EIGENVALUES = (9.0, 6.0, 4.0, 2.5, 1.5)
FEATURES = 10
NOISE = 0.3


def data_with_spectrum(
    n: int, seed: int = 0, eigenvalues: Sequence[float] = EIGENVALUES, noise: float = NOISE
) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` samples ``x = U diag(sqrt(λ)) u + noise · e + 2`` with a random orthonormal
    ``U`` of shape ``(10, len(λ))``; returns the data ``(n, 10)`` and ``U`` (columns in the
    order of ``λ``)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((FEATURES, FEATURES)))
    basis = basis[:, : len(eigenvalues)]
    u = rng.standard_normal((n, len(eigenvalues))) * np.sqrt(np.asarray(eigenvalues))
    x = u @ basis.T + noise * rng.standard_normal((n, FEATURES)) + 2.0
    return torch.as_tensor(x, dtype=torch.float32), basis


class OrderedPPCA(nn.Module):
    """Model and guide of ordered PPCA with ``latent`` dimensions and a nested mask ``order``."""

    def __init__(self, features: int, latent: int, *, keep_prob: float = 0.8, center=None):
        super().__init__()
        self.latent = latent
        self.keep_prob = keep_prob
        self.loadings = nn.Parameter(0.1 * torch.randn(features, latent))
        self.center = nn.Parameter(torch.zeros(features) if center is None else center.clone())
        self.log_noise = nn.Parameter(torch.zeros(()))
        self.encoder = nn.Linear(features, latent)
        self.log_scale = nn.Parameter(torch.full((latent,), -1.0))
        self.unit = OrderingUnit("order", latent)

    def model(self, x: torch.Tensor, dataset_size: int) -> None:
        with pyro.plate("data", size=dataset_size, subsample=torch.arange(len(x))):
            mask = nested_mask("order", self.latent, keep_prob=self.keep_prob)
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([self.latent]).to_event(1))
            loc = (z * mask) @ self.loadings.T + self.center
            pyro.sample("x", dist.Normal(loc, self.log_noise.exp()).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, dataset_size: int) -> None:
        with pyro.plate("data", size=dataset_size, subsample=torch.arange(len(x))):
            mask = self.unit()
            loc = self.encoder(x - self.center)
            pyro.sample("z", masked_normal(loc, self.log_scale.exp(), mask).to_event(1))


@dataclass
class Fit:
    """A fitted ordered PPCA: loadings, learned keep probabilities and the loss trace."""

    loadings: np.ndarray  # (features, latent)
    keep_probs: np.ndarray  # (latent,) conditional keep probabilities of the guide
    keep_marginals: np.ndarray  # (latent,) P(dimension k kept)
    losses: list[float]


def fit_ordered_ppca(
    x: torch.Tensor,
    latent: int = 8,
    *,
    steps: int = 1000,
    lr: float = 0.03,
    seed: int = 0,
    progress: bool = False,
) -> tuple[OrderedPPCA, Fit]:
    """Fit :class:`OrderedPPCA` with the recipe's default guide and ``TraceEnum_ELBO``."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    ppca = OrderedPPCA(x.shape[1], latent, center=x.mean(0))
    losses = fit_latent(
        ppca.model, ppca.guide, x, [ppca], steps=steps, lr=lr, seed=seed, progress=progress
    )
    with torch.no_grad():
        fit = Fit(
            loadings=ppca.loadings.numpy().copy(),
            keep_probs=ppca.unit.keep_probs().numpy(),
            keep_marginals=ppca.unit.keep_marginals().numpy(),
            losses=losses,
        )
    return ppca, fit


def direction_cosines(fit: Fit, basis: np.ndarray) -> np.ndarray:
    """``|cos|`` between loading column ``k`` and true direction ``k``, shape ``(len(λ),)``."""
    columns = fit.loadings[:, : basis.shape[1]]
    return np.abs(np.sum(columns * basis, 0)) / np.linalg.norm(columns, axis=0)


def column_norms(fit: Fit) -> np.ndarray:
    """Norm of every loading column (the standard deviation that dimension adds), ``(latent,)``."""
    return np.linalg.norm(fit.loadings, axis=0)


def keep_view(ppca: OrderedPPCA, draws: int = 1000, seed: int = 0):
    """ArviZ data of mask draws from the learned ordering (``order`` of shape ``(1, draws, L)``;
    its posterior mean is the keep marginal of each latent dimension)."""
    from bayes_nest.analysis import to_arviz

    with torch.no_grad(), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        counts = ppca.unit.distribution().sample((draws,))
        masks = (torch.arange(ppca.latent) < counts.unsqueeze(-1)).float()
    return to_arviz({"order": masks}, dims={"order": ["latent"]})


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, fewer steps (~10 s)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--plot", help="save the keep-probability figure to this file")
    args = parser.parse_args(argv)
    seeds, steps = (1, 500) if args.quick else (args.seeds, args.steps)
    rows = []
    for seed in range(seeds):
        x, basis = data_with_spectrum(2000, seed=seed)
        ppca, fit = fit_ordered_ppca(x, steps=steps, seed=seed)
        cosines, norms = direction_cosines(fit, basis), column_norms(fit)
        rows.append({"seed": seed, "cos": cosines, "norms": norms, "fit": fit, "model": ppca})
        print(f"seed {seed}")
        print("  |cos| with direction k:", np.round(cosines, 3))
        print("  loading column norms:  ", np.round(norms, 2))
        print("  keep marginals:        ", np.round(fit.keep_marginals, 2))
    if args.plot:
        import arviz as az
        import matplotlib

        matplotlib.use("Agg")
        from bayes_nest.plots import keep_probabilities

        print(az.summary(keep_view(rows[0]["model"]), kind="stats"))
        fig = keep_probabilities({"order": rows[0]["fit"].keep_probs}, marginal=True)
        fig.savefig(args.plot, dpi=120, bbox_inches="tight")
    return rows


if __name__ == "__main__":
    main()
