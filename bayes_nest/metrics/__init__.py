r"""Metrics: classification, calibration, uncertainty, out-of-distribution and segmentation.

Classification metrics take probabilities ``(N, K)`` or posterior samples ``(S, N, K)``
(averaged in probability space first) and integer labels ``(N,)``; the out-of-distribution
functions take ``(scores_in, scores_out)`` with higher meaning more out-of-distribution (module
``bayes_nest.metrics.classification`` states the conventions).

Segmentation metrics compare binary model samples ``(S, N, H, W)`` with several annotations per
image ``(N, A, H, W)``: the generalized energy distance, Hungarian-matched IoU, and per-pixel
calibration error and negative log-likelihood (module
``bayes_nest.metrics.segmentation``).
"""

from .classification import (
    SUM_TOLERANCE,
    CalibrationBins,
    accuracy,
    brier_score,
    calibration_bins,
    expected_calibration_error,
    fpr_at_95_tpr,
    max_calibration_error,
    mutual_information,
    nll,
    ood_aupr,
    ood_auroc,
    predictive_entropy,
    probs_from_logits,
)
from .segmentation import (
    generalized_energy_distance,
    hungarian_iou,
    iou_distances,
    pixel_ece,
    pixel_nll,
)

__all__ = [
    "SUM_TOLERANCE",
    "CalibrationBins",
    "accuracy",
    "brier_score",
    "calibration_bins",
    "expected_calibration_error",
    "fpr_at_95_tpr",
    "generalized_energy_distance",
    "hungarian_iou",
    "iou_distances",
    "max_calibration_error",
    "mutual_information",
    "nll",
    "ood_aupr",
    "ood_auroc",
    "pixel_ece",
    "pixel_nll",
    "predictive_entropy",
    "probs_from_logits",
]
