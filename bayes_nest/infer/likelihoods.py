r"""Likelihoods of a BNNN: the observation model, the data plate and the dataset-size scaling.

A likelihood turns the network's outputs into the observation site ``"obs"`` of the model. It
owns the data plate ``pyro.plate("data", size=dataset_size, subsample=...)``, so the
log-likelihood of a mini-batch of :math:`B` examples is scaled by :math:`N / B` (:math:`N` =
``dataset_size``; :math:`B` when it is None) and the ELBO of a mini-batch is an unbiased
estimate of the full-data ELBO:

.. math:: \mathcal L = \frac{N}{B} \sum_{n \in \text{batch}} \log p(y_n \mid f(x_n))
   - \mathrm{KL}(q \,\|\, p).

The plate runs over the first dimension of the outputs; every further dimension is part of one
example's event, so per-pixel outputs (segmentation: logits ``(B, K, H, W)`` and labels
``(B, H, W)``; regression maps ``(B, C, H, W)``) are one observation per example whose
log-probability sums over pixels.

Protocol for your own likelihood: any callable ``likelihood(outputs, y=None) -> None`` that emits
the site ``"obs"`` (observed at ``y`` when given) inside the plate ``"data"``. Subclass
:class:`Likelihood` and implement :meth:`Likelihood.distribution` to get the plate, the scaling,
the shape checks and per-example log-likelihoods (used by ArviZ's ``log_likelihood`` group and
by the BNNN's fast ELBO) for free.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Bernoulli", "Categorical", "Likelihood", "Normal", "check_dataset_size"]


def check_dataset_size(value: Any) -> int | None:
    """``value`` as a positive int or None; a clear error otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"dataset_size must be a positive int or None, got {value!r}")
    return int(value)


class Likelihood(nn.Module):
    """Base of the observation models: data plate, dataset-size scaling, shape checks.

    Parameters
    ----------
    dataset_size : int, optional
        :math:`N`, the number of training examples. None: the plate's size is the mini-batch
        size (no scaling). :meth:`~bayes_nest.infer.bnnn.BNNN.fit` sets it from its data.
    """

    def __init__(self, dataset_size: int | None = None) -> None:
        super().__init__()
        self.dataset_size = check_dataset_size(dataset_size)

    # ------------------------------------------------------------------ to implement
    def distribution(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        """The observation distribution of a batch, batch shape ``(B,)`` (event: the rest)."""
        raise NotImplementedError

    def check(self, outputs: torch.Tensor, y: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the mismatch when ``y`` cannot be observations of
        ``outputs``."""
        if y.shape[:1] != outputs.shape[:1]:
            raise ValueError(
                f"{type(self).__name__}: y has {tuple(y.shape)} for outputs of shape "
                f"{tuple(outputs.shape)}; they need the same number of examples"
            )

    # ------------------------------------------------------------------ shared
    def scale(self, batch: int) -> float:
        """The plate's scaling :math:`N / B` of a mini-batch of ``batch`` examples."""
        return 1.0 if self.dataset_size is None else self.dataset_size / batch

    def log_likelihood(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""Per-example :math:`\log p(y_n \mid f(x_n))`, shape ``(B,)`` (summed over pixels)."""
        if outputs.dim() < 1:
            raise ValueError("outputs need a batch dimension, got a scalar")
        self.check(outputs, y)
        return self.distribution(outputs).log_prob(y)

    def forward(self, outputs: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Emit ``"obs"`` (observed at ``y`` when given) inside the scaled plate ``"data"``."""
        if outputs.dim() < 1:
            raise ValueError("outputs need a batch dimension, got a scalar")
        if y is not None:
            self.check(outputs, y)
        batch = outputs.shape[0]
        size = batch if self.dataset_size is None else self.dataset_size
        subsample = torch.arange(batch, device=outputs.device)
        with pyro.plate("data", size=size, subsample=subsample):
            pyro.sample("obs", self.distribution(outputs), obs=y)

    def extra_repr(self) -> str:
        return f"dataset_size={self.dataset_size}"


def _class_last(logits: torch.Tensor) -> torch.Tensor:
    """``(B, K, *spatial)`` -> ``(B, *spatial, K)`` (a view)."""
    return logits if logits.dim() <= 2 else logits.movedim(1, -1)


class Categorical(Likelihood):
    r"""Class labels: :math:`y_n \sim \mathrm{Categorical}(\mathrm{softmax}(f(x_n)))`.

    Outputs are logits ``(B, K)``, or ``(B, K, *spatial)`` per pixel with labels
    ``(B, *spatial)`` (int64 in ``[0, K)``).
    """

    def distribution(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        d = dist.Categorical(logits=_class_last(outputs))
        return d.to_event(outputs.dim() - 2) if outputs.dim() > 2 else d

    def check(self, outputs: torch.Tensor, y: torch.Tensor) -> None:
        if outputs.dim() < 2:
            raise ValueError(f"Categorical needs logits (B, K, ...), got {tuple(outputs.shape)}")
        expected = outputs.shape[:1] + outputs.shape[2:]
        if y.shape != expected:
            raise ValueError(
                f"Categorical: labels have shape {tuple(y.shape)}, expected {tuple(expected)} "
                f"for logits of shape {tuple(outputs.shape)}"
            )
        if y.is_floating_point():
            raise ValueError(f"Categorical: labels must be integers, got dtype {y.dtype}")
        if y.numel():
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= outputs.shape[1]:
                bad = low if low < 0 else high
                raise ValueError(
                    f"Categorical: label {bad} is outside [0, {outputs.shape[1]}) "
                    f"({outputs.shape[1]} classes)"
                )

    def log_likelihood(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check(outputs, y)
        per_item = -F.cross_entropy(outputs, y, reduction="none")
        return per_item.reshape(len(y), -1).sum(-1)

    def probs(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities, softmax over the class dimension (dim 1)."""
        return torch.softmax(outputs, 1)


class Bernoulli(Likelihood):
    r"""Binary targets: :math:`y \sim \mathrm{Bernoulli}(\sigma(f(x)))` per output element.

    Outputs are logits of any shape ``(B, ...)``; targets the same shape with values in {0, 1}
    (any float or integer dtype).
    """

    def distribution(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=outputs).to_event(outputs.dim() - 1)

    def check(self, outputs: torch.Tensor, y: torch.Tensor) -> None:
        if y.shape != outputs.shape:
            raise ValueError(
                f"Bernoulli: targets have shape {tuple(y.shape)}, expected the outputs' "
                f"{tuple(outputs.shape)}"
            )
        if y.numel() and not bool(((y == 0) | (y == 1)).all()):
            bad = y[(y != 0) & (y != 1)][0].item()
            raise ValueError(f"Bernoulli: targets must be 0 or 1, got {bad!r}")

    def forward(self, outputs: torch.Tensor, y: torch.Tensor | None = None) -> None:
        super().forward(outputs, None if y is None else y.to(outputs.dtype))

    def log_likelihood(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check(outputs, y)
        per_item = -F.binary_cross_entropy_with_logits(
            outputs, y.to(outputs.dtype), reduction="none"
        )
        return per_item.reshape(len(y), -1).sum(-1)


class Normal(Likelihood):
    r"""Real targets: :math:`y \sim \mathcal N(f(x), \sigma^2)` per output element
    (homoscedastic).

    Parameters
    ----------
    dataset_size : int, optional
    scale : float, optional
        :math:`\sigma`, fixed. None (default): learned, a point estimate (the model's parameter
        ``likelihood.scale``) starting at ``init_scale``.
    init_scale : float
        Initial :math:`\sigma` when learned.
    """

    def __init__(
        self,
        dataset_size: int | None = None,
        scale: float | None = None,
        *,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__(dataset_size)
        for value, name in ((scale, "scale"), (init_scale, "init_scale")):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a positive float, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value!r}")
        self.fixed_scale = None if scale is None else float(scale)
        if scale is None:
            # log sigma, unconstrained (a point estimate of the model)
            self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        else:
            self.register_parameter("log_scale", None)

    @property
    def scale_value(self) -> torch.Tensor | float:
        r""":math:`\sigma` (a tensor when learned)."""
        return self.fixed_scale if self.log_scale is None else self.log_scale.exp()

    def distribution(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        scale = self.scale_value
        if torch.is_tensor(scale):
            scale = scale.to(outputs.dtype)
        return dist.Normal(outputs, scale).to_event(outputs.dim() - 1)

    def check(self, outputs: torch.Tensor, y: torch.Tensor) -> None:
        if y.shape != outputs.shape:
            raise ValueError(
                f"Normal: targets have shape {tuple(y.shape)}, expected the outputs' "
                f"{tuple(outputs.shape)}"
            )
        if not y.is_floating_point():
            raise ValueError(f"Normal: targets must be floating point, got dtype {y.dtype}")

    def extra_repr(self) -> str:
        scale = "learned" if self.fixed_scale is None else f"{self.fixed_scale:g}"
        return f"dataset_size={self.dataset_size}, scale={scale}"


#: The likelihood classes whose per-example log-likelihood the fast ELBO computes directly.
KNOWN = (Categorical, Normal, Bernoulli)
