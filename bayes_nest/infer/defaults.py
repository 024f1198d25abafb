r"""The one source of the training defaults of FN3 and BNNN.

Every layer reads its defaults from here: the library's trainers and models
(:class:`~bayes_nest.infer.FN3Trainer`, :func:`~bayes_nest.infer.fit_fn3`,
:class:`~bayes_nest.infer.BNNN` and its ``fit`` and ``predict``, the data-parallel trainers),
the application's :func:`bayes_nest.pipeline.fit`, and the ``bayes-nest fit`` command with its
config files (an option left out takes the value below). A test compares every command-line
and config-file option with its library source.

The values are those of the recorded benchmark results (``benchmarks/results``): Adam with
learning rate :math:`3\cdot10^{-3}` for both regimes, FN3 with a geometric keep-count prior of
keep rate :math:`\pi = 0.9` and no sandwich rule, BNNN with prior and initial keep probability
0.95, Downhill temperature :math:`\tau = 1`, a standard Normal weight prior and the full weight
KL (``kl_scale = 1``, the ELBO). Applications that want another recipe pass it explicitly (the
demo trains FN3 with the sandwich rule and the BNNN at :math:`\tau = 0.5`; see
:data:`bayes_nest.demo.RECIPE`).

Both tables are read-only mappings; copy one (``dict(FN3_DEFAULTS)``) to change values.

Examples
--------
>>> from bayes_nest.infer.defaults import BNNN_DEFAULTS, FN3_DEFAULTS
>>> FN3_DEFAULTS["lr"], FN3_DEFAULTS["sandwich"], BNNN_DEFAULTS["temperature"]
(0.003, None, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["BNNN_DEFAULTS", "DEFAULT_METHOD", "FN3_DEFAULTS", "METHOD_DEFAULTS", "defaults_of"]

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

DEFAULT_METHOD = "fn3"
"""The training method of `bayes_nest.pipeline.fit` and ``bayes-nest fit`` when none is named."""


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
