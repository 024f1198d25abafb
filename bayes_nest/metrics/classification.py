r"""Classification, calibration, uncertainty and out-of-distribution metrics.

Notation: ``N`` examples, ``K`` classes, ``S`` posterior samples. Probabilities come as ``(N, K)``
or, one row per posterior sample, as ``(S, N, K)``. Every metric on ``(S, N, K)`` first averages in
probability space to the posterior predictive (Bayesian model average)

$$\bar p_{nk} = \frac{1}{S} \sum_{s=1}^S p_{snk},$$

and then scores $\bar p$ exactly as it would score an ``(N, K)`` input. Top-label
confidence and prediction are $c_n = \max_k \bar p_{nk}$ and
$\hat y_n = \arg\max_k \bar p_{nk}$ (ties go to the lowest class index).

Inputs are *probabilities*, never logits: rows must be non-negative and sum to one within
``1e-3`` (use [`probs_from_logits`][bayes_nest.metrics.probs_from_logits] to convert).
Labels are integer class indices ``(N,)``. Torch tensors, NumPy arrays and nested lists are
accepted. Scalar metrics return a Python ``float``; the per-example
[`predictive_entropy`][bayes_nest.metrics.predictive_entropy] and
[`mutual_information`][bayes_nest.metrics.mutual_information] return tensors of shape ``(N,)``.

The out-of-distribution (OOD) functions take ``(scores_in, scores_out)``: one score per
in-distribution and per OOD example, *higher meaning more likely OOD* (e.g. predictive entropy
or mutual information). OOD is the positive class. They are exact (no threshold grid) and treat
tied scores as a single threshold.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "CalibrationBins",
    "accuracy",
    "brier_score",
    "calibration_bins",
    "expected_calibration_error",
    "fpr_at_95_tpr",
    "max_calibration_error",
    "mutual_information",
    "nll",
    "ood_aupr",
    "ood_auroc",
    "predictive_entropy",
    "probs_from_logits",
]

SUM_TOLERANCE = 1e-3
"""Largest accepted ``|Σ_k p_k - 1|`` for a row of probabilities."""


# ----------------------------------------------------------------------------- validation


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}") from err


def _as_probs(probs, name: str = "probs", *, allow_samples: bool = True) -> torch.Tensor:
    """Validate probabilities of shape ``(N, K)`` or ``(S, N, K)``; return a floating tensor."""
    p = _as_tensor(probs, name)
    if p.dtype == torch.bool or p.is_complex():
        raise TypeError(f"{name} must hold real probabilities, got dtype {p.dtype}")
    if not p.is_floating_point() or p.dtype in (torch.float16, torch.bfloat16):
        p = p.to(torch.float32 if p.is_floating_point() else torch.float64)
    shapes = "(N, K) or (S, N, K)" if allow_samples else "(N, K)"
    if p.dim() not in ((2, 3) if allow_samples else (2,)):
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(p.shape)}")
    if p.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(p.shape)}")
    lo, hi = (v.item() for v in torch.aminmax(p))  # NaN propagates to both
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name} contains NaN")
    if lo < 0 or hi > 1:
        raise ValueError(
            f"{name} must be probabilities in [0, 1] (got values in [{lo:.4g}, {hi:.4g}]); "
            "pass logits through probs_from_logits first"
        )
    sum_lo, sum_hi = (v.item() for v in torch.aminmax(p.sum(-1)))
    err = max(abs(sum_lo - 1), abs(sum_hi - 1))
    if err > SUM_TOLERANCE:
        raise ValueError(
            f"{name} rows must sum to 1 over the last (class) dimension; the worst row is off by "
            f"{err:.4g}"
        )
    return p


def _mean_probs(probs, name: str = "probs") -> torch.Tensor:
    p = _as_probs(probs, name)
    return p.mean(0) if p.dim() == 3 else p


def _as_labels(labels, n: int, k: int) -> torch.Tensor:
    y = _as_tensor(labels, "labels")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match probs, got {tuple(y.shape)}")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(
            f"labels must lie in [0, {k - 1}] for {k} classes, got values in "
            f"[{y.min().item()}, {y.max().item()}]"
        )
    return y.long()


def _probs_and_labels(probs, labels) -> tuple[torch.Tensor, torch.Tensor]:
    p = _mean_probs(probs)
    return p, _as_labels(labels, p.shape[0], p.shape[1]).to(p.device)


def probs_from_logits(logits, *, average_samples: bool = False) -> torch.Tensor:
    r"""Softmax over the last (class) dimension of logits ``(N, K)`` or ``(S, N, K)``.

    Parameters
    ----------
    logits : tensor or array, shape ``(N, K)`` or ``(S, N, K)``
        Unnormalised log-probabilities.
    average_samples : bool
        If ``True`` and ``logits`` is ``(S, N, K)``, return the posterior predictive
        $\bar p = \frac1S \sum_s \mathrm{softmax}(z_s)$ of shape ``(N, K)``; otherwise keep
        the shape (needed by [`mutual_information`][bayes_nest.metrics.mutual_information]).
    """
    z = _as_tensor(logits, "logits")
    if not z.is_floating_point():
        z = z.double()
    if z.dim() not in (2, 3) or z.numel() == 0:
        raise ValueError(f"logits must have shape (N, K) or (S, N, K), got {tuple(z.shape)}")
    if torch.isnan(z).any():
        raise ValueError("logits contains NaN")
    p = torch.softmax(z, dim=-1)
    return p.mean(0) if average_samples and p.dim() == 3 else p


# ----------------------------------------------------------------------------- accuracy, NLL, Brier


def accuracy(probs, labels) -> float:
    r"""Top-1 accuracy $\frac1N \sum_n 1[\hat y_n = y_n]$ of the predictive probabilities.

    Parameters
    ----------
    probs : tensor or array, shape ``(N, K)`` or ``(S, N, K)``
    labels : integer tensor or array, shape ``(N,)``
    """
    p, y = _probs_and_labels(probs, labels)
    return (p.argmax(-1) == y).double().mean().item()


def nll(probs, labels, *, eps: float = 1e-12) -> float:
    r"""Mean negative log-likelihood $-\frac1N \sum_n \log \max(\bar p_{n, y_n}, \epsilon)$.

    Parameters
    ----------
    probs : tensor or array, shape ``(N, K)`` or ``(S, N, K)``
    labels : integer tensor or array, shape ``(N,)``
    eps : float
        Floor on the probability of the true class, so that a zero probability costs
        $-\log \epsilon \approx 27.6$ nats instead of infinity.
    """
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1), got {eps}")
    p, y = _probs_and_labels(probs, labels)
    p_true = p.gather(-1, y[:, None]).squeeze(-1).double()
    return -p_true.clamp_min(eps).log().mean().item()


def brier_score(probs, labels) -> float:
    r"""Multi-class Brier score $\frac1N \sum_n \sum_k (\bar p_{nk} - 1[y_n = k])^2$.

    Summed over classes (range ``[0, 2]``), as in Brier (1950) and robustness_metrics.

    Parameters
    ----------
    probs : tensor or array, shape ``(N, K)`` or ``(S, N, K)``
    labels : integer tensor or array, shape ``(N,)``
    """
    p, y = _probs_and_labels(probs, labels)
    one_hot = torch.nn.functional.one_hot(y, p.shape[-1]).double()
    return (p.double() - one_hot).pow(2).sum(-1).mean().item()


# ----------------------------------------------------------------------------- calibration


class CalibrationBins(NamedTuple):
    """Per-bin statistics of top-label confidence, from
    [`calibration_bins`][bayes_nest.metrics.calibration_bins].

    All arrays have ``n_bins + 1`` entries: the ``n_bins`` bins ``[lo, hi)`` followed by the bin
    of confidences exactly equal to ``1``. Empty bins have ``count == 0`` and NaN means.
    """

    edges: np.ndarray
    """Bin edges, ``(n_bins + 1,)``, ``linspace(0, 1, n_bins + 1)``."""
    count: np.ndarray
    """Number of examples per bin."""
    accuracy: np.ndarray
    """Mean of ``1[ŷ = y]`` per bin."""
    confidence: np.ndarray
    """Mean top-label confidence per bin."""


def _validate_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def calibration_bins(probs, labels, n_bins: int = 15) -> CalibrationBins:
    r"""Bin examples by top-label confidence and average accuracy and confidence per bin.

    Bins are ``n_bins`` equal-width, left-closed intervals ``[b/n_bins, (b+1)/n_bins)``; a
    confidence of exactly ``1`` falls past the last edge and forms an extra bin of its own. This
    is the binning of ``torchmetrics`` (``bucketize(c, linspace(0, 1, n_bins + 1), right=True)``),
    done in the floating dtype of ``probs``.

    Parameters
    ----------
    probs : tensor or array, shape ``(N, K)`` or ``(S, N, K)``
    labels : integer tensor or array, shape ``(N,)``
    n_bins : int
        Number of equal-width bins on ``[0, 1)``.
    """
    _validate_n_bins(n_bins)
    p, y = _probs_and_labels(probs, labels)
    conf, pred = p.max(-1)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype, device=conf.device)
    idx = torch.bucketize(conf, edges, right=True) - 1
    count = torch.bincount(idx, minlength=n_bins + 1).double()
    correct = torch.bincount(idx, weights=(pred == y).double(), minlength=n_bins + 1)
    conf_sum = torch.bincount(idx, weights=conf.double(), minlength=n_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        count_np = count.cpu().numpy()
        acc = correct.cpu().numpy() / count_np
        mean_conf = conf_sum.cpu().numpy() / count_np
    return CalibrationBins(edges.double().cpu().numpy(), count_np.astype(np.int64), acc, mean_conf)


def _bin_gaps(probs, labels, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    bins = calibration_bins(probs, labels, n_bins)
    full = bins.count > 0
    gap = np.abs(bins.accuracy[full] - bins.confidence[full])
    return gap, bins.count[full] / bins.count.sum()


def expected_calibration_error(probs, labels, *, n_bins: int = 15) -> float:
    r"""Top-label expected calibration error (Naeini et al., 2015; Guo et al., 2017).

    $$\mathrm{ECE} = \sum_b \frac{n_b}{N}\, \bigl|\mathrm{acc}_b - \mathrm{conf}_b\bigr|$$

    over the bins of [`calibration_bins`][bayes_nest.metrics.calibration_bins]; equals
    torchmetrics' ``multiclass_calibration_error(..., n_bins, norm="l1")`` computed on
    $\bar p$.

    Parameters
    ----------
    probs : tensor or array, shape ``(N, K)`` or ``(S, N, K)``
    labels : integer tensor or array, shape ``(N,)``
    n_bins : int
        Number of equal-width confidence bins (default 15).
    """
    gap, weight = _bin_gaps(probs, labels, n_bins)
    return float((gap * weight).sum())


def max_calibration_error(probs, labels, *, n_bins: int = 15) -> float:
    r"""Top-label maximum calibration error $\max_b |\mathrm{acc}_b - \mathrm{conf}_b|$.

    The maximum runs over non-empty bins of
    [`calibration_bins`][bayes_nest.metrics.calibration_bins]; equals torchmetrics'
    ``multiclass_calibration_error(..., n_bins, norm="max")`` computed on $\bar p$.

    Parameters
    ----------
    probs : tensor or array, shape ``(N, K)`` or ``(S, N, K)``
    labels : integer tensor or array, shape ``(N,)``
    n_bins : int
        Number of equal-width confidence bins (default 15).
    """
    gap, _ = _bin_gaps(probs, labels, n_bins)
    return float(gap.max())


# ----------------------------------------------------------------------------- uncertainty


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return torch.special.entr(p).sum(-1)


def predictive_entropy(probs) -> torch.Tensor:
    r"""Entropy of the predictive distribution per example, in nats.

    $$\mathbb H[\bar p_n] = -\sum_k \bar p_{nk} \log \bar p_{nk} \quad (0 \log 0 = 0)$$

    Parameters
    ----------
    probs : tensor or array, shape ``(N, K)`` or ``(S, N, K)``

    Returns
    -------
    Tensor, shape ``(N,)``
        Between ``0`` (one-hot) and ``log K`` (uniform).
    """
    return _entropy(_mean_probs(probs))


def mutual_information(probs) -> torch.Tensor:
    r"""Mutual information between the label and the weights per example (BALD), in nats.

    $$\mathrm{MI}_n = \mathbb H[\bar p_n] - \frac1S \sum_s \mathbb H[p_{sn}]$$

    The epistemic part of the predictive entropy: zero when all samples agree. Tiny negative
    values from rounding are clamped to ``0``.

    Parameters
    ----------
    probs : tensor or array, shape ``(S, N, K)``
        Per-sample probabilities; ``S`` must be the leading dimension.

    Returns
    -------
    Tensor, shape ``(N,)``
    """
    p = _as_probs(probs)
    if p.dim() != 3:
        raise ValueError(
            f"probs must have shape (S, N, K) with one row per posterior sample, got "
            f"{tuple(p.shape)}"
        )
    return (_entropy(p.mean(0)) - _entropy(p).mean(0)).clamp_min(0)


# ----------------------------------------------------------------------------- OOD detection


def _ood_scores(scores_in, scores_out) -> tuple[np.ndarray, np.ndarray]:
    """Return (scores sorted descending, OOD indicator in the same order)."""
    arrays = []
    for name, s in (("scores_in", scores_in), ("scores_out", scores_out)):
        t = _as_tensor(s, name)
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{name} must hold real scores, got dtype {t.dtype}")
        if t.dim() != 1 or t.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array, got shape {tuple(t.shape)}")
        a = t.double().cpu().numpy()
        if np.isnan(a).any():
            raise ValueError(f"{name} contains NaN")
        arrays.append(a)
    scores = np.concatenate(arrays)
    is_out = np.concatenate([np.zeros(arrays[0].size), np.ones(arrays[1].size)])
    order = np.argsort(-scores, kind="stable")
    return scores[order], is_out[order]


def _roc_counts(scores_in, scores_out) -> tuple[np.ndarray, np.ndarray, int, int]:
    """True and false positives at every distinct threshold, highest threshold first.

    Thresholding at ``score >= t`` for each distinct score ``t`` in decreasing order.
    """
    scores, is_out = _ood_scores(scores_in, scores_out)
    # compare neighbours (not their difference, which is NaN for two equal infinite scores)
    last_of_group = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), scores.size - 1]
    tp = np.cumsum(is_out)[last_of_group]
    fp = (last_of_group + 1) - tp
    return tp, fp, int(is_out.sum()), int(is_out.size - is_out.sum())


def ood_auroc(scores_in, scores_out) -> float:
    r"""Area under the ROC curve for detecting OOD examples (OOD = positive class).

    The Mann–Whitney statistic $P(s_\text{out} > s_\text{in}) + \tfrac12
    P(s_\text{out} = s_\text{in})$ over all in/out pairs, i.e. the trapezoidal area under the
    exact ROC curve.

    Parameters
    ----------
    scores_in : tensor or array, shape ``(N_in,)``
        Scores of in-distribution examples (higher = more OOD).
    scores_out : tensor or array, shape ``(N_out,)``
        Scores of OOD examples.
    """
    tp, fp, n_out, n_in = _roc_counts(scores_in, scores_out)
    tp, fp = np.r_[0, tp], np.r_[0, fp]
    area = np.sum(np.diff(fp) * (tp[1:] + tp[:-1]) / 2)
    return float(area / (n_out * n_in))


def ood_aupr(scores_in, scores_out) -> float:
    r"""Area under the precision–recall curve with OOD as the positive class ("AUPR-Out").

    Computed as average precision $\sum_t (R_t - R_{t-1}) P_t$ over the distinct score
    thresholds ``t`` in decreasing order, with $R_0 = 0$; this is the definition of
    scikit-learn's ``average_precision_score`` (a step function, no interpolation).

    Parameters
    ----------
    scores_in : tensor or array, shape ``(N_in,)``
        Scores of in-distribution examples (higher = more OOD).
    scores_out : tensor or array, shape ``(N_out,)``
        Scores of OOD examples.
    """
    tp, fp, n_out, _ = _roc_counts(scores_in, scores_out)
    precision = tp / (tp + fp)
    # divide once at the end: each term is then at most its integer gain, so the result is <= 1
    return float(np.sum(np.diff(np.r_[0, tp]) * precision) / n_out)


def fpr_at_95_tpr(scores_in, scores_out, *, tpr: float = 0.95) -> float:
    r"""False-positive rate at 95% true-positive rate (OOD = positive class).

    Among the thresholds ``t`` (flag an example as OOD when ``score >= t``) whose true-positive
    rate $\mathrm{TPR}(t) = |\{s_\text{out} \ge t\}| / N_\text{out}$ is at least ``tpr``,
    the smallest false-positive rate $|\{s_\text{in} \ge t\}| / N_\text{in}$. This is the
    fraction of in-distribution examples wrongly flagged when 95% of the OOD ones are caught;
    lower is better.

    Parameters
    ----------
    scores_in : tensor or array, shape ``(N_in,)``
        Scores of in-distribution examples (higher = more OOD).
    scores_out : tensor or array, shape ``(N_out,)``
        Scores of OOD examples.
    tpr : float
        Required true-positive rate, in ``(0, 1]``.
    """
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
    tp, fp, n_out, n_in = _roc_counts(scores_in, scores_out)
    first = np.searchsorted(tp / n_out, tpr, side="left")
    return float(fp[first] / n_in)
