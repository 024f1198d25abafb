"""Deprecated location, kept for one release: segmentation models in the main job now live in
`bayes_nest.app.segmentation`.

Each name here is the very object of its new module; import it from there (or from the
package root, ``import bayes_nest as bn``).
"""

from __future__ import annotations

from .app.segmentation import (
    LESIONS_DEFAULTS,
    check_segmentation_fit,
    evaluate_segmentation,
    holds_segmentation_arrays,
    load_segmentation_data,
    predict_segmentation,
    segmentation_data_for,
    segmentation_figure,
    segmentation_probs,
    train_segmentation,
)

__all__ = [
    "LESIONS_DEFAULTS",
    "check_segmentation_fit",
    "evaluate_segmentation",
    "holds_segmentation_arrays",
    "load_segmentation_data",
    "predict_segmentation",
    "segmentation_data_for",
    "segmentation_figure",
    "segmentation_probs",
    "train_segmentation",
]
