"""Inference: FN3 training with ordered dropout, prediction and evaluation, checkpoints, and the
Pyro mask sites shared with Bayesian nested networks."""

from . import distributed, latent, likelihoods, masks
from .bnnn import BNNN
from .bnnn_elbo import NestedMeanFieldELBO
from .bnnn_fit import BNNNHistory
from .distributed_bnnn import fit_bnnn_distributed
from .distributed_fn3 import DistributedFN3Trainer, fit_fn3_distributed
from .evaluate import evaluate, predict_probs
from .fn3 import FN3Trainer, History, NonFiniteLossError, fit_fn3
from .ordered_dropout import (
    COUPLING,
    DISTRIBUTIONS,
    OrderedDropout,
    conditional_keep_probs,
    keep_count_probs,
)
from .vou import ExponentialTemperature, VariationalOrderingUnit
from .watchdog import NonFiniteError, Watchdog

__all__ = [
    "BNNN",
    "BNNNHistory",
    "NestedMeanFieldELBO",
    "ExponentialTemperature",
    "VariationalOrderingUnit",
    "Watchdog",
    "COUPLING",
    "DISTRIBUTIONS",
    "DistributedFN3Trainer",
    "FN3Trainer",
    "History",
    "NonFiniteError",
    "NonFiniteLossError",
    "OrderedDropout",
    "conditional_keep_probs",
    "distributed",
    "evaluate",
    "fit_bnnn_distributed",
    "fit_fn3",
    "fit_fn3_distributed",
    "keep_count_probs",
    "latent",
    "likelihoods",
    "masks",
    "predict_probs",
]
