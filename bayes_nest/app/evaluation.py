"""Evaluation of sub-networks: metrics on a split, and the score a search maximises.

`evaluate_config` scores one sub-network (accuracy, NLL, Brier, ECE, OOD AUROC) the same way for
both regimes; `make_score` turns a score name of `bayes_nest.defaults.SCORES` into a function
``config -> float`` for the searches. Networks with batch-norm can be recalibrated per
sub-network first (`bayes_nest.app.contexts.recalibrated`, through
`bayes_nest.subnet.recalibrate_batchnorm`).

Examples
--------
>>> import bayes_nest as bn
>>> spec = bn.ModelSpec("mlp", {"hidden": [64, 64], "groups": 8})
>>> model = bn.fit(spec, bn.load_data("digits", flat=True), epochs=2, progress=False)
>>> data = bn.data_for(model, "digits")  # the model's own splits and standardization
>>> scores = bn.evaluate_config(model, data.test, {"hidden.0": 4, "hidden.1": 4})
>>> sorted(scores)
['accuracy', 'brier', 'ece', 'n', 'nll', 'ood_auroc']
>>> scores["n"] == len(data.test.y)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from .. import metrics
from ..data import Split, corrupt
from ..defaults import DEFAULT_OOD, SCORE_DEFAULTS
from ..search.objectives import default_score, make_objective, score_name
from .contexts import recalibrated, seeded
from .model_file import TrainedModel

__all__ = ["evaluate_config", "make_score"]


def evaluate_config(
    model: TrainedModel,
    split: Split,
    config: Mapping[str, int] | None = None,
    *,
    ood: str | None = DEFAULT_OOD,
    num_samples: int | None = None,
    seed: int = 0,
    n_bins: int = 15,
    return_probs: bool = False,
    calibration: Split | None = None,
) -> dict[str, float] | tuple[dict[str, float], torch.Tensor]:
    """Accuracy, NLL, Brier, ECE and (with ``ood``) OOD AUROC of one sub-network on a split.

    OOD inputs are the split's inputs corrupted with `corrupt` (kind
    ``ood`` at full severity); the OOD score is the predictive entropy of the mean prediction,
    and ``ood_auroc`` separates the split's inputs from their corrupted copies.

    Returns
    -------
    dict
        ``accuracy``, ``nll``, ``brier``, ``ece``, ``ood_auroc`` (NaN without ``ood``), ``n``;
        with ``return_probs`` also the predictions ``(S, N, K)``.

    With ``calibration`` (training data) a network with batch-norm first re-estimates its
    statistics for ``config`` (`recalibrated`), as its export would.

    A segmentation model is scored by
    `bayes_nest.app.segmentation.evaluate_segmentation` instead (GED, Hungarian IoU,
    pixel ECE and NLL; ``ood`` does not apply).
    """
    if model.task == "segmentation":
        from .segmentation import evaluate_segmentation

        return evaluate_segmentation(
            model,
            split,
            config,
            num_samples=num_samples,
            seed=seed,
            n_bins=n_bins,
            return_probs=return_probs,
            calibration=calibration,
        )
    x = model.check_inputs(split.x, "inputs")
    y = torch.as_tensor(split.y)
    if (y < 0).any() or (y >= model.num_classes).any():
        bad = y[(y < 0) | (y >= model.num_classes)][0]
        raise ValueError(
            f"labels hold class {int(bad)}, unknown to a model of {model.num_classes} classes"
        )
    with recalibrated(model, config, calibration):
        with seeded(seed):
            probs = model.predict(x, config, num_samples=num_samples)
        probs_out = None
        if ood is not None and len(x) >= 2:
            shifted = corrupt(x, ood, 1.0, seed=seed)
            with seeded(seed + 1):
                probs_out = model.predict(shifted, config, num_samples=num_samples)
    out = {
        "accuracy": metrics.accuracy(probs, y),
        "nll": metrics.nll(probs, y),
        "brier": metrics.brier_score(probs, y),
        "ece": metrics.expected_calibration_error(probs, y, n_bins=n_bins),
        "ood_auroc": math.nan,
        "n": len(y),
    }
    if probs_out is not None:
        out["ood_auroc"] = metrics.ood_auroc(
            metrics.predictive_entropy(probs), metrics.predictive_entropy(probs_out)
        )
    return (out, probs) if return_probs else out


def make_score(
    model: TrainedModel,
    split: Split,
    score: str | None = None,
    *,
    ece_weight: float = SCORE_DEFAULTS["ece_weight"],
    max_ece: float = SCORE_DEFAULTS["max_ece"],
    num_samples: int | None = None,
    seed: int = 0,
    calibration: Split | None = None,
) -> Callable[[Mapping[str, int]], float]:
    r"""A score ``config -> float`` (higher is better) of sub-networks on ``split``.

    ``score=None`` is the model's default (`bayes_nest.search.objectives.default_score`:
    ``"accuracy"``, or ``"neg_ged"`` for a segmentation model, which also takes
    ``"neg_pixel_nll"``; a segmentation ``split`` holds masks instead of labels).

    ``score`` is a name of `bayes_nest.defaults.SCORES` (the same names as the
    searches and the ``--score`` option): ``"accuracy"``; ``"neg_nll"``, $-\mathrm{NLL}$;
    ``"ece_penalized"``, $\mathrm{acc} - w\,\mathrm{ECE}$ with $w$ = ``ece_weight``;
    ``"ece_capped"``, accuracy while the ECE is at most ``max_ece``, else $-\mathrm{ECE}$.
    BNNN predictions use the same random numbers for every config (common random numbers),
    so differences between configs are not Monte Carlo noise. With ``calibration``, batch-norm
    statistics are re-estimated for every config first (`recalibrated`).

    Raises
    ------
    ValueError
        For an unknown score name or bad settings (a deprecated name gives a `FutureWarning`).
    """
    score = default_score(model.task) if score is None else score
    objective = make_objective(
        score_name(score, model.task), ece_weight=ece_weight, max_ece=max_ece
    )
    x = model.check_inputs(split.x, "inputs")
    y = torch.as_tensor(split.masks if model.task == "segmentation" else split.y)

    def evaluate(config: Mapping[str, int]) -> float:
        if model.task == "segmentation":
            from .segmentation import segmentation_probs

            probs = segmentation_probs(
                model, x, config, num_samples, seed=seed, calibration=calibration
            )
            return float(objective(probs, y))
        with recalibrated(model, config, calibration), seeded(seed):
            probs = model.predict(x, config, num_samples=num_samples)
        return float(objective(probs, y))

    return evaluate
