"""Deprecated location, kept for one release: training behind the fit façade now lives in
`bayes_nest.app.train` (both methods through the one training loop).

Each name here is the very object of its new module; import it from there.
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
