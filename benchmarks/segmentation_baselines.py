r"""Baselines of the segmentation benchmark: plain, MC-dropout, ensemble and probabilistic U-Nets.

Every baseline is built on :class:`bayes_nest.models.UNet` computing its full network (no mask
is ever set, so it is an ordinary U-Net) and trained with the same recipe as the nested models:
per-pixel binary cross-entropy against one annotator drawn at random per example and epoch
(:class:`bayes_nest.data.RandomAnnotatorDataset`), Adam, the same epochs and batch size.

Samples ``(S, N, H, W)`` of binary masks come from

* **deterministic U-Net** — one mask, ``sigmoid(logits) > 1/2``;
* **MC dropout** (Gal & Ghahramani, 2016) — channel dropout before every decoder convolution,
  left on at test time: one mask per dropout draw;
* **deep ensemble** (Lakshminarayanan et al., 2017) — one mask per member;
* **probabilistic U-Net** (Kohl et al., 2018) — a conditional VAE: a prior net
  :math:`p(z \mid x)` and a posterior net :math:`q(z \mid x, y)` map to a diagonal Gaussian over
  a low-dimensional latent ``z``; the U-Net's features and ``z`` (broadcast over pixels) are
  combined by 1×1 convolutions into the logits. Trained on
  :math:`\mathrm{BCE}(f(x, z), y) + \beta\, \mathrm{KL}(q(z \mid x, y) \,\|\, p(z \mid x))`,
  ``z ~ q`` by reparameterisation; sampled with ``z ~ p(z | x)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from bayes_nest.models import UNet

__all__ = ["ProbabilisticUNet", "masks_from_probs", "sample_masks", "train_plain"]


def masks_from_probs(probs: torch.Tensor) -> torch.Tensor:
    """Binary masks of foreground probabilities: ``p > 1/2``."""
    return probs > 0.5


class _LatentEncoder(nn.Module):
    """Conv encoder to the mean and log-variance of a diagonal Gaussian over ``z``."""

    def __init__(self, in_channels: int, widths: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for i, width in enumerate(widths):
            if i:
                layers.append(nn.AvgPool2d(2))
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU()]
            previous = width
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(previous, 2 * latent_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.distributions.Normal:
        stats = self.out(self.body(x).mean(dim=(-2, -1), keepdim=True)).flatten(1)
        loc, log_scale = stats.chunk(2, dim=-1)
        return torch.distributions.Normal(loc, torch.exp(log_scale.clamp(-6, 4)))


class ProbabilisticUNet(nn.Module):
    """A small probabilistic U-Net: U-Net features, prior/posterior nets over ``z``, 1×1 combiner.

    Parameters
    ----------
    in_channels : int
    widths : sequence of int
        Widths of the U-Net levels (its 1×1 output layer gives ``widths[0]`` feature maps) and
        of the prior and posterior encoders.
    latent_dim : int
        Dimension of ``z`` (Kohl et al. use 6).
    beta : float
        Weight of the KL term.
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (8, 16, 32),
        *,
        latent_dim: int = 6,
        beta: float = 1.0,
        bottleneck_blocks: int = 2,
        groups: int = 4,
    ) -> None:
        super().__init__()
        features = widths[0]
        self.unet = UNet(
            in_channels, features, widths, bottleneck_blocks=bottleneck_blocks, groups=groups
        )
        self.prior = _LatentEncoder(in_channels, widths, latent_dim)
        self.posterior = _LatentEncoder(in_channels + 1, widths, latent_dim)
        self.combine = nn.Sequential(
            nn.Conv2d(features + latent_dim, features, 1),
            nn.ReLU(),
            nn.Conv2d(features, features, 1),
            nn.ReLU(),
            nn.Conv2d(features, 1, 1),
        )
        self.latent_dim = latent_dim
        self.beta = float(beta)

    def decode(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` from U-Net features ``(B, F, H, W)`` and latents ``(B, L)``."""
        tiled = z[:, :, None, None].expand(-1, -1, *features.shape[-2:])
        return self.combine(torch.cat([features, tiled], dim=1))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The negative ELBO per example: BCE summed over pixels plus ``beta`` times the KL."""
        features = self.unet(x)
        q = self.posterior(torch.cat([x, y], dim=1))
        p = self.prior(x)
        logits = self.decode(features, q.rsample())
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none").flatten(1).sum(-1)
        kl = torch.distributions.kl_divergence(q, p).sum(-1)
        return (bce + self.beta * kl).mean()

    @torch.no_grad()
    def sample_probs(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Foreground probabilities ``(S, N, H, W)``, one latent ``z ~ p(z | x)`` per sample."""
        features = self.unet(x)
        p = self.prior(x)
        return torch.stack(
            [torch.sigmoid(self.decode(features, p.sample()))[:, 0] for _ in range(num_samples)]
        )


def train_plain(
    model: nn.Module,
    loader: DataLoader,
    *,
    epochs: int,
    lr: float = 1e-3,
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Train with Adam on ``loss(model, x, y)`` (default: BCE of ``model(x)``) on ``device``;
    returns the epoch losses."""
    if loss is None:

        def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(m(x), y)

    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    history = []
    for _ in range(epochs):
        total, batches = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            value = loss(model, x, y)
            value.backward()
            optimizer.step()
            total += float(value.detach())
            batches += 1
        history.append(total / max(batches, 1))
    model.eval()
    return history


@torch.no_grad()
def sample_masks(
    method: str, models: Sequence[nn.Module], x: torch.Tensor, num_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary samples ``(S, N, H, W)`` and per-sample probabilities of a baseline.

    ``method`` is ``"deterministic"`` (one model, ``S = 1``), ``"mc_dropout"`` (one model with
    dropout, ``S = num_samples``), ``"ensemble"`` (``S = len(models)``) or ``"prob_unet"``
    (one :class:`ProbabilisticUNet`, ``S = num_samples``).
    """
    if method == "prob_unet":
        probs = models[0].sample_probs(x, num_samples)
    elif method == "mc_dropout":
        net = models[0].eval()
        dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout2d)]
        if not dropouts:
            raise ValueError("mc_dropout needs a model with dropout > 0")
        for m in dropouts:
            m.train()
        try:
            probs = torch.stack([torch.sigmoid(net(x))[:, 0] for _ in range(num_samples)])
        finally:
            for m in dropouts:
                m.eval()
    elif method in ("deterministic", "ensemble"):
        members = models[:1] if method == "deterministic" else models
        probs = torch.stack([torch.sigmoid(m.eval()(x))[:, 0] for m in members])
    else:
        raise ValueError(f"unknown baseline {method!r}")
    return masks_from_probs(probs), probs
