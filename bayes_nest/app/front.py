"""Fronts of a trained model: search, read back (checked against the model), query a budget.

`search_front` runs the greedy search (`bayes_nest.search.greedy`) over a model's sub-networks,
scored by `bayes_nest.app.evaluation.make_score`, and records the model's fingerprint;
`read_front` reads a front file and refuses one searched on another model; `best_config` picks
the best sub-network within a budget (``"25%"``: that share of the full network's cost).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from .._files import require_file
from ..data import Split
from ..defaults import DEFAULT_COST, SCORE_DEFAULTS
from ..search.objectives import default_score, score_name
from .evaluation import make_score
from .model_file import TrainedModel

__all__ = ["best_config", "read_front", "resolve_budget", "search_front"]


def search_front(
    model: TrainedModel,
    split: Split,
    *,
    cost: str = DEFAULT_COST,
    score: str | None = None,
    ece_weight: float = SCORE_DEFAULTS["ece_weight"],
    max_ece: float = SCORE_DEFAULTS["max_ece"],
    num_samples: int | None = None,
    progress: bool = True,
    calibration: Split | None = None,
    **kwargs: Any,
) -> Any:
    """Greedy front (`bayes_nest.search.greedy`) of ``model``'s sub-networks, scored on
    ``split`` by `make_score` (``calibration``: see there); settings and the model's
    fingerprint (`TrainedModel.fingerprint`, checked by `read_front`) are recorded in
    ``front.info``."""
    from ..search.greedy import greedy

    fingerprint = model.fingerprint()  # of the model as given, before any recalibration
    score = score_name(default_score(model.task) if score is None else score, model.task)
    fn = make_score(
        model,
        split,
        score,
        ece_weight=ece_weight,
        max_ece=max_ece,
        num_samples=num_samples,
        calibration=calibration,
    )
    front = greedy(
        model.module, fn, cost=cost, input_shape=model.input_shape, progress=progress, **kwargs
    )
    front.metric = cost
    front.info.update(
        {
            "score": score,
            "ece_weight": ece_weight,
            "max_ece": max_ece,
            "method": model.method,
            "model_fingerprint": fingerprint,
        }
    )
    return front


def read_front(path: str | os.PathLike, model: TrainedModel) -> Any:
    """A front JSON file (from `search_front`), checked against ``model``.

    The front must have been searched on this very model: its ``info["model_fingerprint"]``
    must equal `TrainedModel.fingerprint` (a front without one, from an older version, is
    accepted with a warning). Every keep count must be a whole number (``2.7`` is an error,
    never truncated) and fit the model's axes.

    Raises
    ------
    ValueError
        For a file that is not a front, a front of another model, or configs that do not fit.
    """
    import json

    from ..search.front import Front
    from ..subnet import validate_config

    text = require_file(path, "front file")
    try:
        with open(text, encoding="utf-8") as f:
            raw = json.load(f)
        points = raw["points"] if isinstance(raw, dict) else None
        for i, point in enumerate(points if isinstance(points, list) else []):
            config = point.get("config") if isinstance(point, dict) else None
            for axis, count in config.items() if isinstance(config, dict) else ():
                whole = isinstance(count, int) or (isinstance(count, float) and count.is_integer())
                if isinstance(count, bool) or not whole:
                    raise ValueError(
                        f"point {i} keeps {count!r} blocks of axis {axis!r}; keep counts are "
                        "whole numbers"
                    )
        front = Front.from_dict(raw)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        msg = " ".join(str(e).split())
        raise ValueError(f"{text} is not a front file: {msg}") from None
    recorded = front.info.get("model_fingerprint")
    if recorded is not None and recorded != model.fingerprint():
        source = front.info.get("checkpoint")
        where = f" ({source})" if source else ""
        raise ValueError(
            f"front {text} was searched on another model{where}, not on this one: its "
            "sub-networks and scores do not apply; search this model's front with "
            "'bayes-nest search'"
        )
    for point in front.points:
        try:
            validate_config(model.module, point.config)
        except (ValueError, TypeError) as e:
            raise ValueError(f"front {text} does not fit the model: {e}") from None
    if recorded is None and front.points:
        warnings.warn(
            f"front {text} does not record the model it was searched on (written by an older "
            "bayes_nest); make sure it belongs to this model",
            stacklevel=2,
        )
    return front


def resolve_budget(budget: float | str, front: Any, model: TrainedModel) -> float:
    """A budget in cost units; ``"25%"`` is that share of the full network's cost."""
    if isinstance(budget, str) and budget.endswith("%"):
        from ..subnet import COST_METRICS

        share = float(budget[:-1]) / 100
        if front.metric in COST_METRICS:
            return share * model.cost_model(front.metric)({})
        return share * max(p.cost for p in front.points)
    return float(budget)


def best_config(front: Any, budget: float | str, model: TrainedModel) -> dict[str, int]:
    """The best config of ``front`` within ``budget`` (a clear error when none fits)."""
    from ..subnet import validate_config

    point = front.best(resolve_budget(budget, front, model))
    return validate_config(model.module, point.config)
