"""A trained model at a list of budgets: its front, the best sub-network per budget and that
sub-network's test metrics, collected in an `Analysis` (what a report shows about one model).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from ..data import DataBundle
from ..defaults import DEFAULT_COST, DEFAULT_OOD, SCORE_DEFAULTS
from ..search.objectives import default_score, score_name
from .evaluation import evaluate_config
from .front import resolve_budget, search_front
from .model_file import TrainedModel
from .tables import config_summary

__all__ = ["Analysis", "analyse"]


@dataclass
class Analysis:
    """What a report shows about one trained model.

    Attributes
    ----------
    label : str
        Name in tables and legends, e.g. ``"FN3"``.
    model : TrainedModel
    front : object
        Search front (``.points`` with ``.config``, ``.score``, ``.cost``).
    rows : list of dict
        One per budget: ``budget``, ``config`` (summary), ``subnet`` (the config), ``macs``,
        ``params``, ``accuracy``, ``nll``, ``ece``, ``ood_auroc``, ...
    probs : list of (Tensor, Tensor)
        Test predictions ``(S, N, K)`` and labels ``(N,)`` of each row's sub-network (of a
        segmentation model: probabilities ``(S, N, H, W)`` and masks ``(N, A, H, W)``).
    cost, score : str
        Cost metric and score of the front.
    """

    label: str
    model: Any
    front: Any
    rows: list[dict[str, Any]]
    probs: list[tuple[Any, Any]] = field(default_factory=list)
    cost: str = DEFAULT_COST
    score: str = "accuracy"
    images: Any = None
    """Test images ``(N, C, H, W)`` of a segmentation model (for its samples figure)."""


def analyse(
    model: TrainedModel,
    data: DataBundle,
    *,
    label: str,
    budgets: Sequence[float | str],
    cost: str = DEFAULT_COST,
    score: str | None = None,
    ece_weight: float = SCORE_DEFAULTS["ece_weight"],
    max_ece: float = SCORE_DEFAULTS["max_ece"],
    ood: str | None = DEFAULT_OOD,
    num_samples: int | None = None,
    progress: bool = True,
    front: Any = None,
    skip_infeasible: bool = False,
) -> Any:
    """Search the front on ``data.val`` (unless given), pick the best sub-network for every
    budget and evaluate it on ``data.test``; returns a `Analysis`.
    Networks with batch-norm are recalibrated on ``data.train`` for every sub-network.
    ``skip_infeasible``: leave out (with a warning) budgets below the cheapest sub-network,
    e.g. default shares on a small model, instead of failing.

    Raises
    ------
    ValueError
        For a budget no sub-network fits (the message names the cheapest cost).
    """
    score = score_name(default_score(model.task) if score is None else score, model.task)
    if front is None:
        front = search_front(
            model,
            data.val,
            cost=cost,
            score=score,
            ece_weight=ece_weight,
            max_ece=max_ece,
            num_samples=num_samples,
            progress=progress,
            calibration=data.train,
        )
    resolved = [(b, resolve_budget(b, front, model)) for b in budgets]
    if skip_infeasible and front.points:
        cheapest = min(p.cost for p in front.points)
        fits = [(b, c) for b, c in resolved if c >= cheapest]
        if len(fits) < len(resolved):
            left = [str(b) for b, c in resolved if c < cheapest]
            warnings.warn(
                f"{label}: budget(s) {', '.join(left)} lie below the cheapest sub-network "
                f"({cheapest:,.6g} {front.metric}); left out",
                stacklevel=2,
            )
        resolved = fits or [(f"{cheapest:.6g}", cheapest)]
    chosen = [(b, front.best(c)) for b, c in resolved]
    macs, params = model.cost_model("macs"), model.cost_model("params")
    rows, probs = [], []
    bar = tqdm(chosen, desc=f"evaluating {label}", unit="budget", disable=not progress)
    for budget, point in bar:
        scores, p = evaluate_config(
            model,
            data.test,
            point.config,
            ood=ood,
            num_samples=num_samples,
            return_probs=True,
            calibration=data.train,
        )
        rows.append(
            {
                "budget": str(budget),
                "config": config_summary(model.module, point.config),
                "subnet": dict(point.config),
                "macs": macs(point.config),
                "params": params(point.config),
                "cost": point.cost,
                "front_score": point.score,
                **scores,
            }
        )
        probs.append((p, data.test.masks if model.task == "segmentation" else data.test.y))
    analysis = Analysis(label, model, front, rows, probs, cost=cost, score=score)
    if model.task == "segmentation":
        analysis.images = data.test.x
    return analysis
