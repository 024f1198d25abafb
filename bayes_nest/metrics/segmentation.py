r"""Metrics of ambiguous segmentation: model samples against several annotations per image.

Notation: ``N`` images of ``H × W`` pixels, ``S`` binary samples per image from the model
``(S, N, H, W)``, ``A`` binary annotations per image ``(N, A, H, W)``. Masks may be boolean,
integer or floating arrays holding only 0 and 1 (or tensors).

The distance between two masks is $d(a, b) = 1 - \mathrm{IoU}(a, b)$ with
$\mathrm{IoU}(a, b) = |a \cap b| / |a \cup b|$, and two empty masks are at distance 0 (they
agree perfectly: "no lesion"), an empty and a non-empty mask at distance 1 — the convention of the
probabilistic U-Net literature (Kohl et al., 2018).

Per-pixel calibration scores the foreground probabilities $p \in [0, 1]$ ``(N, H, W)`` (or
per-sample ``(S, N, H, W)``, averaged first) against every annotation: each pixel of each
annotation is one binary prediction, so a pixel marked by half of the annotators is best
predicted by $p = 1/2$.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .classification import _as_tensor, expected_calibration_error, nll

__all__ = [
    "generalized_energy_distance",
    "hungarian_iou",
    "iou_distances",
    "pixel_ece",
    "pixel_nll",
]


def _as_masks(masks, name: str, ndim: int, shape: str) -> torch.Tensor:
    m = _as_tensor(masks, name)
    if m.is_complex():
        raise TypeError(f"{name} must hold binary masks, got dtype {m.dtype}")
    if m.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(m.shape)}")
    if m.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(m.shape)}")
    if m.dtype != torch.bool:
        binary = (m == 0) | (m == 1)
        if not bool(binary.all()):
            raise ValueError(
                f"{name} must be binary (0/1 or bool); found {int((~binary).sum())} other "
                f"values, e.g. {m[~binary][0].item()!r}"
            )
        m = m != 0
    return m


def _samples_and_annotations(samples, annotations) -> tuple[torch.Tensor, torch.Tensor]:
    s = _as_masks(samples, "samples", 4, "(S, N, H, W)")
    y = _as_masks(annotations, "annotations", 4, "(N, A, H, W)")
    if s.shape[1] != y.shape[0] or s.shape[2:] != y.shape[2:]:
        raise ValueError(
            f"samples (S, N, H, W) = {tuple(s.shape)} and annotations (N, A, H, W) = "
            f"{tuple(y.shape)} must agree on N, H and W"
        )
    return s.to(y.device), y


def iou_distances(a, b) -> torch.Tensor:
    r"""Pairwise distances $d = 1 - \mathrm{IoU}$ between two sets of masks of every image.

    Parameters
    ----------
    a : tensor or array, shape ``(N, P, H, W)``
    b : tensor or array, shape ``(N, Q, H, W)``
        Binary masks; ``N`` images, ``P`` and ``Q`` masks each.

    Returns
    -------
    Tensor, shape ``(N, P, Q)``, float64
        $d_{npq} = 1 - |a_{np} \cap b_{nq}| / |a_{np} \cup b_{nq}|$, and 0 where both masks
        are empty.
    """
    a = _as_masks(a, "a", 4, "(N, P, H, W)")
    b = _as_masks(b, "b", 4, "(N, Q, H, W)")
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must agree on N, H and W")
    fa = a.flatten(2).double()
    fb = b.flatten(2).to(fa.device).double()
    inter = fa @ fb.transpose(1, 2)  # exact: integer counts held in float64
    union = fa.sum(-1)[:, :, None] + fb.sum(-1)[:, None, :] - inter
    return torch.where(union > 0, 1 - inter / union.clamp_min(1), torch.zeros_like(union))


def _mean_pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return iou_distances(a, b).mean((1, 2))


def generalized_energy_distance(samples, annotations, *, reduction: str = "mean"):
    r"""Squared generalized energy distance between model samples and annotations.

    Per image, with $s, s'$ independent model samples and $y, y'$ independent annotations,

    $$D^2_\text{GED} = 2\,\mathbb E[d(s, y)] - \mathbb E[d(s, s')] - \mathbb E[d(y, y')],
    \qquad d = 1 - \mathrm{IoU},$$

    every expectation the mean over *all* ordered pairs of the given masks, identical indices
    included (the V-statistic of Kohl et al., 2018: a sample set equal to the annotation set
    scores exactly 0). Lower is better; a model that always predicts one mask is penalised by the
    annotators' diversity, a model whose samples disagree at random by its own.

    Parameters
    ----------
    samples : tensor or array, shape ``(S, N, H, W)``
        Binary samples of the model, ``S >= 1`` per image.
    annotations : tensor or array, shape ``(N, A, H, W)``
        Binary annotations, ``A >= 1`` per image.
    reduction : {"mean", "none"}
        Average over images (a Python float) or return the ``(N,)`` tensor.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    s, y = _samples_and_annotations(samples, annotations)
    s = s.transpose(0, 1)  # (N, S, H, W)
    ged = 2 * _mean_pairwise(s, y) - _mean_pairwise(s, s) - _mean_pairwise(y, y)
    return ged.mean().item() if reduction == "mean" else ged


def hungarian_iou(samples, annotations, *, reduction: str = "mean"):
    r"""Mean IoU of an optimal one-to-one matching between model samples and annotations.

    Per image, the cost matrix $d(s_i, y_j)$ of
    [`iou_distances`][bayes_nest.metrics.iou_distances] is solved by the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``) and the score is $1 - $ the mean matched
    distance: the IoU of the matched pairs, two empty masks counting as IoU 1. When ``S`` and
    ``A`` differ, the smaller set is repeated to the size of the larger, which must be a
    multiple of it (e.g. 16 samples against 4 annotations, each annotation used 4 times).

    Parameters
    ----------
    samples : tensor or array, shape ``(S, N, H, W)``
    annotations : tensor or array, shape ``(N, A, H, W)``
    reduction : {"mean", "none"}
        Average over images (a Python float) or return the ``(N,)`` tensor.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    s, y = _samples_and_annotations(samples, annotations)
    num_s, num_a = s.shape[0], y.shape[1]
    if max(num_s, num_a) % min(num_s, num_a):
        raise ValueError(
            f"the number of samples ({num_s}) and of annotations ({num_a}) must be equal or one "
            "a multiple of the other, so that each is matched equally often"
        )
    d = iou_distances(s.transpose(0, 1), y).cpu().numpy()
    d = np.tile(d, (1, max(1, num_a // num_s), max(1, num_s // num_a)))
    scores = np.empty(len(d))
    for n, cost in enumerate(d):
        rows, cols = linear_sum_assignment(cost)
        scores[n] = 1 - cost[rows, cols].mean()
    out = torch.as_tensor(scores)
    return out.mean().item() if reduction == "mean" else out


def _pixel_predictions(probs, annotations) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten to one two-class prediction per pixel and annotation: ``(M, 2)``, ``(M,)``."""
    p = _as_tensor(probs, "probs")
    if not p.is_floating_point():
        raise TypeError(f"probs must hold foreground probabilities, got dtype {p.dtype}")
    if p.dim() == 4:
        p = p.mean(0)
    if p.dim() != 3:
        raise ValueError(
            f"probs must have shape (N, H, W) or per sample (S, N, H, W), got {tuple(p.shape)}"
        )
    y = _as_masks(annotations, "annotations", 4, "(N, A, H, W)")
    if p.shape != y.shape[:1] + y.shape[2:]:
        raise ValueError(
            f"probs {tuple(p.shape)} and annotations (N, A, H, W) = {tuple(y.shape)} must agree "
            "on N, H and W"
        )
    if torch.isnan(p).any():
        raise ValueError("probs contains NaN")
    lo, hi = p.min().item(), p.max().item()
    if lo < 0 or hi > 1:
        raise ValueError(
            f"probs must be foreground probabilities in [0, 1], got values in [{lo:.4g}, "
            f"{hi:.4g}]; apply a sigmoid to logits first"
        )
    fg = p[:, None].expand(y.shape).reshape(-1)
    return torch.stack([1 - fg, fg], dim=-1), y.reshape(-1).long().to(fg.device)


def pixel_ece(probs, annotations, *, n_bins: int = 15) -> float:
    r"""Per-pixel expected calibration error against every annotation.

    Each pixel of each annotation is a binary prediction with confidence
    $\max(p, 1 - p)$, scored by the top-label
    [`expected_calibration_error`][bayes_nest.metrics.expected_calibration_error] with
    ``n_bins`` equal-width bins.

    Parameters
    ----------
    probs : tensor or array, shape ``(N, H, W)`` or ``(S, N, H, W)``
        Foreground probabilities (per-sample ones are averaged first).
    annotations : tensor or array, shape ``(N, A, H, W)``
    n_bins : int
    """
    p, y = _pixel_predictions(probs, annotations)
    return expected_calibration_error(p, y, n_bins=n_bins)


def pixel_nll(probs, annotations, *, eps: float = 1e-12) -> float:
    r"""Mean per-pixel negative log-likelihood (binary cross-entropy) of every annotation.

    $$-\frac{1}{N A H W} \sum_{n, a, u} \log \max\bigl(p_{nu}^{y_{nau}}
    (1 - p_{nu})^{1 - y_{nau}}, \epsilon\bigr)$$

    Parameters
    ----------
    probs : tensor or array, shape ``(N, H, W)`` or ``(S, N, H, W)``
        Foreground probabilities (per-sample ones are averaged first).
    annotations : tensor or array, shape ``(N, A, H, W)``
    eps : float
        Floor on the probability of the annotated label.
    """
    p, y = _pixel_predictions(probs, annotations)
    return nll(p, y, eps=eps)
