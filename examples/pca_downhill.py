"""A hand-written Pyro model whose Downhill prior orders the latent dimensions of a linear
autoencoder: the learned code is PCA, component by component, in order of explained variance.

The model draws an ordered mask for every example from ``Downhill(π)`` over the latent
dimensions (the first dimension is always kept), encodes ``z = m ⊙ (E (x - c))`` and
reconstructs ``x ~ Normal(D z + c, σ)``. A dimension is kept only when all earlier ones are, so the
reconstruction must be good for every prefix of the code: the first dimension learns the top
principal direction, the second the next one, and so on (nested dropout recovers ordered PCA,
Rippel et al. 2014).

The guide of the mask site is, by default, the prior itself (``learn_order=False``): its KL term
vanishes and the ELBO is the nested-dropout objective. With ``learn_order=True`` the guide is a
Downhill posterior with learnable keep probabilities (a variational ordering unit). Its keep
probabilities then rise towards 1 for dimensions that explain much variance and stay lower for
the others, which also weakens the ordering pressure *between* the leading dimensions: they are
rarely dropped, so their order is learned more slowly.

Run ``python examples/pca_downhill.py`` to fit data with a known spectrum and compare the
learned order with the eigen-decomposition.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.nn import PyroModule, PyroParam
from scipy.linalg import subspace_angles
from torch.distributions import constraints

from bayes_nest.distributions import DownhillStraightThrough


class NestedLinearAutoencoder(PyroModule):
    """``x ≈ D (m ⊙ E x) + c`` with an ordered mask ``m`` over the ``latent`` code dimensions."""

    def __init__(
        self, features: int, latent: int, *, keep_prob: float, temperature: float, center=None
    ):
        super().__init__()
        self.latent = latent
        self.keep_prob = keep_prob
        self.temperature = temperature
        self.encoder = PyroParam(0.1 * torch.randn(latent, features))
        self.decoder = PyroParam(0.1 * torch.randn(features, latent))
        self.center = PyroParam(torch.zeros(features) if center is None else center.clone())
        self.noise = PyroParam(torch.tensor(1.0), constraint=constraints.positive)

    def mask_prior(self) -> DownhillStraightThrough:
        keep = torch.full((self.latent - 1,), self.keep_prob)
        return DownhillStraightThrough(keep_probs=keep, temperature=self.temperature)

    def forward(self, x: torch.Tensor, dataset_size: int | None = None) -> torch.Tensor:
        size = dataset_size or len(x)
        with pyro.plate("data", size=size, subsample=torch.arange(len(x))):
            # one ordered mask per example: m_1 >= m_2 >= ... (the first dimension always kept)
            order = pyro.sample("order", self.mask_prior().expand([len(x)]))
            mask = torch.cat([order.new_ones(len(x), 1), order], dim=-1)
            code = (x - self.center) @ self.encoder.T * mask
            recon = code @ self.decoder.T + self.center
            pyro.sample("x", dist.Normal(recon, self.noise).to_event(1), obs=x)
        return recon


class OrderGuide(PyroModule):
    """Downhill posterior over the mask with learnable keep logits (a variational ordering unit)."""

    def __init__(self, model: NestedLinearAutoencoder, learn: bool = True):
        super().__init__()
        self.temperature = model.temperature
        logit = float(np.log(model.keep_prob / (1 - model.keep_prob)))
        init = torch.full((model.latent - 1,), logit)
        self.keep_logits = PyroParam(init) if learn else init

    def forward(self, x: torch.Tensor, dataset_size: int | None = None) -> torch.Tensor:
        fn = DownhillStraightThrough(keep_logits=self.keep_logits, temperature=self.temperature)
        with pyro.plate("data", size=dataset_size or len(x), subsample=torch.arange(len(x))):
            return pyro.sample("order", fn.expand([len(x)]))


@dataclass
class Fit:
    """A fitted nested autoencoder: weights, keep probabilities and the loss trace."""

    encoder: np.ndarray  # (latent, features)
    decoder: np.ndarray  # (features, latent)
    center: np.ndarray
    keep_probs: np.ndarray
    losses: list[float]


def fit_pca_downhill(
    x: torch.Tensor,
    latent: int,
    *,
    steps: int = 1500,
    lr: float = 0.02,
    batch_size: int = 256,
    keep_prob: float = 0.5,
    temperature: float = 0.5,
    learn_order: bool = False,
    seed: int = 0,
) -> Fit:
    """Fit the nested linear autoencoder by SVI (``TraceMeanField_ELBO``: the mask's KL is the
    registered closed-form keep-count KL)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = NestedLinearAutoencoder(
        x.shape[1], latent, keep_prob=keep_prob, temperature=temperature, center=x.mean(0)
    )
    guide = OrderGuide(model, learn=learn_order)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), TraceMeanField_ELBO())
    g = torch.Generator().manual_seed(seed)
    losses = []
    with pyro.validation_enabled(False):
        for _ in range(steps):
            idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g)
            losses.append(svi.step(x[idx], dataset_size=len(x)) / len(x))
    with torch.no_grad():
        return Fit(
            encoder=model.encoder.detach().numpy().copy(),
            decoder=model.decoder.detach().numpy().copy(),
            center=model.center.detach().numpy().copy(),
            keep_probs=torch.sigmoid(torch.as_tensor(guide.keep_logits)).detach().numpy(),
            losses=losses,
        )


def data_with_spectrum(
    n: int, eigenvalues: list[float], seed: int = 0
) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` Gaussian samples with covariance ``U diag(eigenvalues) U^T`` for a random rotation
    ``U``; returns the data and ``U`` (columns in order of decreasing eigenvalue)."""
    rng = np.random.default_rng(seed)
    d = len(eigenvalues)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    z = rng.standard_normal((n, d)) * np.sqrt(np.asarray(eigenvalues))
    return torch.as_tensor(z @ rotation.T + 3.0, dtype=torch.float32), rotation


def explained_variance_per_dim(fit: Fit, x: torch.Tensor) -> np.ndarray:
    """Reduction of the mean squared reconstruction error when code dimension ``k`` is added
    to the first ``k - 1`` (the variance each latent dimension explains, in order)."""
    xc = x.numpy() - fit.center
    code = xc @ fit.encoder.T
    errors = [np.mean(np.sum(xc**2, 1))]
    for k in range(1, fit.encoder.shape[0] + 1):
        recon = code[:, :k] @ fit.decoder[:, :k].T
        errors.append(np.mean(np.sum((xc - recon) ** 2, 1)))
    return -np.diff(errors)


def principal_angles(fit: Fit, rotation: np.ndarray, k: int) -> np.ndarray:
    """Principal angles (radians) between the span of the first ``k`` decoder columns and the
    top-``k`` principal subspace."""
    return subspace_angles(fit.decoder[:, :k], rotation[:, :k])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learn-order", action="store_true", help="learn the keep probabilities")
    args = parser.parse_args()
    eigenvalues = [9.0, 6.0, 4.0, 2.5, 1.5, 1.0, 0.6, 0.4, 0.25, 0.1]
    x, rotation = data_with_spectrum(4000, eigenvalues, seed=args.seed)
    fit = fit_pca_downhill(
        x, args.latent, steps=args.steps, seed=args.seed, learn_order=args.learn_order
    )
    explained = explained_variance_per_dim(fit, x)
    print("dim  explained variance  true eigenvalue  max principal angle (first k dims)")
    for k in range(args.latent):
        angle = principal_angles(fit, rotation, k + 1).max()
        print(f"{k + 1:>3}  {explained[k]:>18.3f}  {eigenvalues[k]:>15.3f}  {angle:>10.4f} rad")
    print("posterior keep probabilities:", np.round(fit.keep_probs, 3))


if __name__ == "__main__":
    main()
