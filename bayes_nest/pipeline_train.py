"""Deprecated location, kept for one release: the training behind `fit` now lives in
`bayes_nest.app.train`.

Each name here is the very object of its new module; import it from there (or from the
package root, ``import bayes_nest as bn``).
"""

from __future__ import annotations

from .app.train import (
    BNNN_DEFAULTS,
    FN3_DEFAULTS,
    cuda_absence,
    make_bnnn,
    resolve_device,
    train_bnnn,
    train_fn3,
    training_device,
    training_options,
    warm_start,
)

__all__ = [
    "BNNN_DEFAULTS",
    "FN3_DEFAULTS",
    "cuda_absence",
    "make_bnnn",
    "resolve_device",
    "train_bnnn",
    "train_fn3",
    "training_device",
    "training_options",
    "warm_start",
]
