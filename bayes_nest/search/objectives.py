r"""Scores of sub-networks, named once for the whole package: search, evaluation, the
``bayes-nest`` commands and reports all take the names of :data:`SCORES`.

A *score* maps predictions and labels to a number, higher is better:

``"accuracy"``
    Top-1 accuracy.
``"neg_nll"``
    :math:`-\mathrm{NLL}` (negative log-likelihood in nats, negated).
``"ece_penalized"``
    :math:`\mathrm{acc} - w\,\mathrm{ECE}` (uncertainty-aware selection; :math:`w` =
    ``ece_weight``, default 1).
``"ece_capped"``
    Accuracy if :math:`\mathrm{ECE} \le` ``max_ece`` (default 0.05), else :math:`-\mathrm{ECE}`:
    every sub-network over the ECE ceiling scores below every one under it.

Segmentation models (per-pixel foreground probabilities ``(S, N, H, W)`` scored against the
annotator masks ``(N, A, H, W)``, see :mod:`bayes_nest.metrics.segmentation`) have their own
scores, :data:`SEGMENTATION_SCORES`:

``"neg_ged"``
    :math:`-D^2_\text{GED}`, the negated generalized energy distance between the binary samples
    :math:`p > 1/2` (one per posterior draw) and the annotations.
``"neg_pixel_nll"``
    :math:`-\mathrm{NLL}` per pixel of the mean foreground probability, against every
    annotation.

The ECE uses ``n_bins`` equal-width confidence bins (default 15). The spellings of earlier
releases, ``"nll"`` and ``"ece-penalised"`` (and the weight's name ``lam``), are accepted for
one more release with a `FutureWarning` (:data:`DEPRECATED_SCORES`, :func:`score_name`).

Predictions are probabilities ``(N, K)`` or per posterior sample ``(S, N, K)`` (averaged in
probability space first, as in :mod:`bayes_nest.metrics`).

:class:`Evaluator` turns a model and validation data into ``score(config)`` for the searches: it
runs the module under :func:`~bayes_nest.subnet.use` (or a user ``predict`` function, e.g.
Monte Carlo predictions of a Bayesian network), optionally recalibrates batch-norm for every
config first, and caches scores.

Examples
--------
>>> import torch
>>> from bayes_nest.search.objectives import make_objective
>>> probs, labels = torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 0])
>>> make_objective("accuracy")(probs, labels)
0.5
>>> make_objective("ece_capped", max_ece=0.05)(probs, labels) < 0  # ECE 0.5 > 0.05
True
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .. import metrics
from ..defaults import (
    DEPRECATED_SCORES,
    SCORE_DEFAULTS,
    SCORE_LABELS,
    SCORES,
    SEGMENTATION_SCORES,
)
from ..subnet._trace import eval_mode
from ..subnet.config import use, validate_config
from ..subnet.recalibrate import recalibrate_batchnorm

__all__ = [
    "DEPRECATED_SCORES",
    "OBJECTIVES",
    "SCORES",
    "SCORE_DEFAULTS",
    "SCORE_LABELS",
    "SEGMENTATION_SCORES",
    "Evaluator",
    "default_score",
    "make_objective",
    "score_name",
]

Objective = Callable[[torch.Tensor, torch.Tensor], float]
OBJECTIVES = SCORES
"""Another name of :data:`SCORES`."""


def default_score(task: str = "classification") -> str:
    """The score a search uses unless told otherwise: ``"accuracy"`` for a classifier,
    ``"neg_ged"`` for a segmentation model."""
    if task == "segmentation":
        return SEGMENTATION_SCORES[0]
    if task == "classification":
        return SCORES[0]
    raise ValueError(f"unknown task {task!r}; choose 'classification' or 'segmentation'")


def score_name(name: str, task: str | None = None) -> str:
    """The name of :data:`SCORES` (or, with ``task="segmentation"``, of
    :data:`SEGMENTATION_SCORES`) that ``name`` means.

    ``task=None`` accepts the names of both tasks.

    A deprecated spelling (:data:`DEPRECATED_SCORES`) is translated with a `FutureWarning`.

    Raises
    ------
    ValueError
        For any other name (the message lists :data:`SCORES`).
    """
    if task not in (None, "classification", "segmentation"):
        raise ValueError(f"unknown task {task!r}; choose 'classification' or 'segmentation'")
    names = {None: (*SCORES, *SEGMENTATION_SCORES), "segmentation": SEGMENTATION_SCORES}
    known = names.get(task, SCORES)
    if isinstance(name, str) and name in known:
        return name
    if task == "segmentation":
        raise ValueError(
            f"score {name!r} does not apply to a segmentation model; choose one of {known}"
        )
    if task == "classification" and name in SEGMENTATION_SCORES:
        raise ValueError(
            f"score {name!r} applies to segmentation models only; a classifier takes one of "
            f"{SCORES}"
        )
    if isinstance(name, str) and name in DEPRECATED_SCORES:
        new = DEPRECATED_SCORES[name]
        warnings.warn(
            f"score {name!r} is deprecated and will be removed in the next release; use {new!r}",
            FutureWarning,
            stacklevel=3,
        )
        return new
    raise ValueError(f"unknown score {name!r}; choose one of {SCORES}")


def _check_settings(ece_weight: Any, max_ece: Any, n_bins: Any) -> None:
    if isinstance(ece_weight, bool) or not isinstance(ece_weight, int | float) or ece_weight < 0:
        raise ValueError(f"ece_weight must be a non-negative number, got {ece_weight!r}")
    if isinstance(max_ece, bool) or not isinstance(max_ece, int | float) or not 0 <= max_ece <= 1:
        raise ValueError(f"max_ece must be in [0, 1], got {max_ece!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def make_objective(
    name: str | Objective = "accuracy",
    *,
    ece_weight: float = SCORE_DEFAULTS["ece_weight"],
    max_ece: float = SCORE_DEFAULTS["max_ece"],
    n_bins: int = SCORE_DEFAULTS["n_bins"],
    lam: float | None = None,
) -> Objective:
    """The score ``(probs, labels) -> float`` called ``name`` (see the module docstring).

    A callable ``name`` is returned unchanged. ``lam`` is the deprecated name of
    ``ece_weight`` (a `FutureWarning`).
    """
    if lam is not None:
        warnings.warn(
            "lam is deprecated and will be removed in the next release; use ece_weight",
            FutureWarning,
            stacklevel=2,
        )
        ece_weight = lam
    _check_settings(ece_weight, max_ece, n_bins)
    if callable(name):
        return name
    every = (*SCORES, *SEGMENTATION_SCORES, *DEPRECATED_SCORES)
    if not isinstance(name, str) or name not in every:
        raise ValueError(
            f"objective must be one of {SCORES + SEGMENTATION_SCORES} or a callable, got {name!r}"
        )
    name = score_name(name)
    if name == "neg_ged":
        return lambda probs, masks: -metrics.generalized_energy_distance(probs > 0.5, masks)
    if name == "neg_pixel_nll":
        return lambda probs, masks: -metrics.pixel_nll(probs, masks)
    if name == "accuracy":
        return metrics.accuracy
    if name == "neg_nll":
        return lambda probs, labels: -metrics.nll(probs, labels)

    def ece(probs: torch.Tensor, labels: torch.Tensor) -> float:
        return metrics.expected_calibration_error(probs, labels, n_bins=n_bins)

    if name == "ece_penalized":
        return lambda probs, labels: (
            metrics.accuracy(probs, labels) - ece_weight * ece(probs, labels)
        )

    def capped(probs: torch.Tensor, labels: torch.Tensor) -> float:
        error = ece(probs, labels)
        return metrics.accuracy(probs, labels) if error <= max_ece else -error

    return capped


def _materialise(data: Any, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(x, y)`` from a pair of tensors or an iterable of pairs."""
    if (
        isinstance(data, tuple | list)
        and len(data) == 2
        and isinstance(data[0], torch.Tensor)
        and isinstance(data[1], torch.Tensor)
    ):
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"data: {len(x)} inputs but {len(y)} labels")
        return list(zip(x.split(batch_size), y.split(batch_size), strict=True))
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be an (x, y) pair or an iterable of batches, got {data!r}")
    batches = []
    for batch in data:
        if not isinstance(batch, tuple | list) or len(batch) < 2:
            raise ValueError("data must yield (x, y) batches")
        batches.append((torch.as_tensor(batch[0]), torch.as_tensor(batch[1]).long().reshape(-1)))
    if not batches:
        raise ValueError("data holds no batches")
    return batches


class Evaluator:
    """``score(config) -> float``: an objective on validation predictions of a sub-network.

    Parameters
    ----------
    module : nn.Module
        The nested model.
    data : (x, y) pair of tensors or iterable of (x, y) batches
        Validation data (held out from training; not the test set).
    objective : str or callable
        A name of :data:`SCORES` or ``(probs, labels) -> float``.
    predict : callable, optional
        ``predict(config, x) -> probs`` of shape ``(B, K)`` or ``(S, B, K)`` (e.g. Monte Carlo
        predictions of a Bayesian network). Default: softmax of ``module(x)`` under
        ``use(module, config)`` in eval mode.
    recalibration_data : optional
        When given, batch-norm statistics are recalibrated on it for every config before
        predicting (and the module's statistics restored afterwards).
    recalibration_batches : int, optional
        Batches of ``recalibration_data`` used per config.
    batch_size : int
        Batch size when ``data`` is a pair of tensors.
    cache : bool
        Remember the score of every config.
    **objective_kwargs
        ``ece_weight``, ``max_ece``, ``n_bins`` for :func:`make_objective`.

    Attributes
    ----------
    evaluations : int
        Number of configs actually evaluated (cache misses).
    """

    def __init__(
        self,
        module: nn.Module,
        data: Any,
        objective: str | Objective = "accuracy",
        *,
        predict: Callable[[Mapping[str, int], torch.Tensor], torch.Tensor] | None = None,
        recalibration_data: Any = None,
        recalibration_batches: int | None = None,
        batch_size: int = 512,
        cache: bool = True,
        **objective_kwargs: Any,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        if predict is not None and not callable(predict):
            raise TypeError(f"predict must be a callable (config, x) -> probs, got {predict!r}")
        self.module = module
        self.batches = _materialise(data, batch_size)
        self.labels = torch.cat([y for _, y in self.batches])
        self.objective = make_objective(objective, **objective_kwargs)
        self.predict_fn = predict
        self.recalibration_data = recalibration_data
        self.recalibration_batches = recalibration_batches
        self.cache = cache
        self._scores: dict[tuple, float] = {}
        self.evaluations = 0

    def _predict_batch(self, config: Mapping[str, int], x: torch.Tensor) -> torch.Tensor:
        if self.predict_fn is not None:
            return torch.as_tensor(self.predict_fn(dict(config), x)).float()
        device = next(iter(self.module.parameters()), torch.empty(0)).device
        logits = self.module(x.to(device))
        return torch.softmax(logits.float(), dim=-1).cpu()

    def predictions(self, config: Mapping[str, int]) -> torch.Tensor:
        """Probabilities of sub-network ``config`` on the validation data, ``(N, K)`` or
        ``(S, N, K)``."""
        config = validate_config(self.module, config)
        saved = None
        if self.recalibration_data is not None:
            saved = copy.deepcopy(
                {
                    k: v
                    for k, v in self.module.state_dict().items()
                    if "running" in k or "num_b" in k
                }
            )
            recalibrate_batchnorm(
                self.module, self.recalibration_data, config, num_batches=self.recalibration_batches
            )
        try:
            with eval_mode(self.module), torch.no_grad(), use(self.module, config):
                chunks = [self._predict_batch(config, x) for x, _ in self.batches]
        finally:
            if saved is not None:
                self.module.load_state_dict(saved, strict=False)
        dim = chunks[0].dim() - 2
        if dim not in (0, 1):
            raise ValueError(
                f"predictions must be (B, K) or (S, B, K), got {tuple(chunks[0].shape)}"
            )
        return torch.cat(chunks, dim=dim)

    def __call__(self, config: Mapping[str, int]) -> float:
        config = validate_config(self.module, config)
        key = tuple(sorted(config.items()))
        if self.cache and key in self._scores:
            return self._scores[key]
        value = float(self.objective(self.predictions(config), self.labels))
        self.evaluations += 1
        self._scores[key] = value
        return value
