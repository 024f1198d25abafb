r"""The one source of the package's defaults: training (FN3 and BNNN), the data split, and the
score names that rank sub-networks.

Every layer reads its defaults from here: the library's trainers and models
(:class:`~bayes_nest.infer.FN3Trainer`, :func:`~bayes_nest.infer.fit_fn3`,
:class:`~bayes_nest.infer.BNNN` and its ``fit`` and ``predict``, the data-parallel trainers),
the loaders of `bayes_nest.data`, the searches and scores of `bayes_nest.search.objectives`, the
application's :func:`bayes_nest.app.fitting.fit` and `bayes_nest.app`, and the
``bayes-nest`` commands with their config files (an option left out takes the value below). A
test compares every command-line and config-file option with its library source. The module
imports nothing but the standard library, so the command line reads it without loading torch.

The training values are those of the recorded benchmark results (``benchmarks/results``): Adam
with learning rate :math:`3\cdot10^{-3}` for both regimes, FN3 with a geometric keep-count prior
of keep rate :math:`\pi = 0.9` and no sandwich rule, BNNN with prior and initial keep
probability 0.95, Downhill temperature :math:`\tau = 1`, a standard Normal weight prior and the
full weight KL (``kl_scale = 1``, the ELBO). Applications that want another recipe pass it
explicitly (the demo trains FN3 with the sandwich rule and the BNNN at :math:`\tau = 0.5`; see
:data:`bayes_nest.app.demo.RECIPE`).

The tables are read-only mappings; copy one (``dict(FN3_DEFAULTS)``) to change values.

Examples
--------
>>> from bayes_nest.defaults import BNNN_DEFAULTS, FN3_DEFAULTS, SCORES
>>> FN3_DEFAULTS["lr"], FN3_DEFAULTS["sandwich"], BNNN_DEFAULTS["temperature"]
(0.003, None, 1.0)
>>> SCORES
('accuracy', 'neg_nll', 'ece_penalized', 'ece_capped')
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "BNNN_DEFAULTS",
    "DEFAULT_BUDGETS",
    "DEFAULT_COST",
    "DEFAULT_METHOD",
    "DEFAULT_MODEL",
    "DEFAULT_OOD",
    "MASK_SITE_TEMPERATURE",
    "DEPRECATED_SCORES",
    "FN3_DEFAULTS",
    "METHOD_DEFAULTS",
    "SCORES",
    "SCORE_DEFAULTS",
    "SCORE_LABELS",
    "SEGMENTATION_SCORES",
    "SPLIT_DEFAULTS",
    "defaults_of",
]

FN3_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "epochs": 30,
        "batch_size": 128,
        "lr": 3e-3,
        "weight_decay": 0.0,
        "keep_prob": 0.9,
        "distribution": "geometric",
        "sandwich": None,
        "seed": 0,
    }
)
"""FN3 training: ``epochs``, mini-batch size, Adam's learning rate and weight decay, the keep
rate and law of the ordered-dropout keep counts, the sandwich rule (``None``: none; the
command line spells it ``"none"``) and the training seed of an application run."""

BNNN_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "epochs": 100,
        "batch_size": 128,
        "lr": 3e-3,
        "keep_prob": 0.95,
        "init_keep_prob": 0.95,
        "temperature": 1.0,
        "prior_scale": 1.0,
        "kl_scale": 1.0,
        "predict_samples": 16,
        "seed": 0,
    }
)
r"""BNNN training: ``epochs``, mini-batch size, Adam's learning rate, the prior keep probability
:math:`\pi` of the Downhill priors (``keep_prob``, the BNNN's ``prior_keep_prob``), the initial
posterior keep probability, the Downhill temperature :math:`\tau`, the standard deviation of the
Normal weight prior, the weight of the weight KL, the posterior samples of a prediction and the
training seed of an application run."""

METHOD_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {"fn3": FN3_DEFAULTS, "bnnn": BNNN_DEFAULTS}
)
"""The defaults of each training method by name."""

MASK_SITE_TEMPERATURE = 0.5
r"""Temperature :math:`\tau` of the Downhill mask sites of a nested network written as a Pyro
model (`bayes_nest.infer.masks.mask_priors`, `bayes_nest.infer.OrderedDropout.sample_sites`);
the BNNN's variational ordering units relax at ``BNNN_DEFAULTS["temperature"]``."""

DEFAULT_METHOD = "fn3"
"""The training method of `bayes_nest.app.fitting.fit` and ``bayes-nest fit`` when none is named."""

DEFAULT_MODEL = "mlp"
"""The architecture of `bayes_nest.app.spec.ModelSpec` and ``bayes-nest fit`` when none is
named."""

SPLIT_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"seed": 0, "val_fraction": 0.1, "test_fraction": 0.2}
)
"""The default train/validation/test split: the seed of the shuffle and the shares of the
examples held out for validation and test (the rest trains). Every loader
(`bayes_nest.data.from_arrays`, `bayes_nest.data.load_dataset`,
`bayes_nest.app.data.load_data`) and the ``bayes-nest fit`` options ``--split-seed``,
``--val-fraction`` and ``--test-fraction`` default to it."""

DEFAULT_COST = "macs"
"""The cost metric of searches, fronts and reports (`bayes_nest.app.front.search_front`,
`bayes_nest.app.budgets.analyse`, ``--cost``)."""
DEFAULT_OOD = "gaussian_noise"
"""The corruption that makes out-of-distribution inputs for the OOD AUROC of an evaluation
(`bayes_nest.app.evaluation.evaluate_config`, `bayes_nest.app.budgets.analyse`, ``--ood``)."""
DEFAULT_BUDGETS = ("10%", "25%", "50%", "100%")
"""Budgets of a report, as shares of the full network's cost (the demo, ``bayes-nest report``)."""

SCORES = ("accuracy", "neg_nll", "ece_penalized", "ece_capped")
"""The score names every layer accepts, the first the default; their meaning is defined by
`bayes_nest.search.objectives.make_objective`."""
SEGMENTATION_SCORES = ("neg_ged", "neg_pixel_nll")
"""The score names of segmentation models (negated GED, negated pixel NLL), the first the
default (`bayes_nest.search.objectives.default_score`)."""
SCORE_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "accuracy": "accuracy",
        "neg_nll": "-NLL",
        "ece_penalized": "accuracy - w*ECE",
        "ece_capped": "accuracy, ECE-capped",
        "neg_ged": "-GED",
        "neg_pixel_nll": "-pixel NLL",
    }
)
"""How reports and tables label each score."""
SCORE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"ece_weight": 1.0, "max_ece": 0.05, "n_bins": 15}
)
"""Default settings of the scores: ECE weight :math:`w`, ECE ceiling and ECE bins."""
DEPRECATED_SCORES: Mapping[str, str] = MappingProxyType(
    {"nll": "neg_nll", "ece-penalised": "ece_penalized"}
)
"""Spellings of earlier releases and the names that replace them (accepted with a
`FutureWarning` until the next release)."""


def defaults_of(method: str) -> Mapping[str, Any]:
    """The defaults of training ``method`` (``"fn3"`` or ``"bnnn"``).

    Raises
    ------
    ValueError
        For an unknown method (the message lists the known ones).
    """
    try:
        return METHOD_DEFAULTS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown method {method!r}; choose one of {tuple(METHOD_DEFAULTS)}"
        ) from None
