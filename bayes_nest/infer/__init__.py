"""Inference: FN3 training with ordered dropout, prediction and evaluation, checkpoints, and the
Pyro mask sites shared with Bayesian nested networks."""

from . import masks
from .evaluate import evaluate, predict_probs
from .fn3 import FN3Trainer, History, NonFiniteLossError, fit_fn3
from .ordered_dropout import (
    COUPLING,
    DISTRIBUTIONS,
    OrderedDropout,
    conditional_keep_probs,
    keep_count_probs,
)

__all__ = [
    "COUPLING",
    "DISTRIBUTIONS",
    "FN3Trainer",
    "History",
    "NonFiniteLossError",
    "OrderedDropout",
    "conditional_keep_probs",
    "evaluate",
    "fit_fn3",
    "keep_count_probs",
    "masks",
    "predict_probs",
]
