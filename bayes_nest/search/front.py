"""Search results: evaluated sub-networks and their Pareto front, queried per budget."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Front", "Point"]


@dataclass(frozen=True)
class Point:
    """One evaluated sub-network.

    Attributes
    ----------
    config : dict[str, int]
        Axis name to keep count.
    score : float
        Higher is better.
    cost : float
    """

    config: dict[str, int]
    score: float
    cost: float

    def to_dict(self) -> dict[str, Any]:
        return {"config": dict(self.config), "score": self.score, "cost": self.cost}


def _check_number(value: Any, name: str) -> float:
    if isinstance(value, str | bytes):  # float("10") would parse; a budget is not text
        raise TypeError(f"{name} must be a number, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)  # numpy / torch scalars
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number, got {value!r}") from None
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


@dataclass
class Front:
    """Evaluated sub-networks of one search, sorted by cost.

    Attributes
    ----------
    points : list of Point
        Every evaluated sub-network (not only the non-dominated ones), by increasing cost.
    evaluations : int
        Number of calls of the score function the search made.
    metric : str
        Name of the cost (e.g. ``"macs"``), for reports.
    info : dict
        Search settings and extras (e.g. the greedy path).
    """

    points: list[Point]
    evaluations: int = 0
    metric: str = "cost"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = sorted(self.points, key=lambda p: (p.cost, -p.score))

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[Point]:
        return iter(self.points)

    def pareto(self) -> Front:
        """The non-dominated points: each one scores strictly higher than every cheaper one."""
        kept: list[Point] = []
        for p in self.points:  # by increasing cost, ties by decreasing score
            if not kept or p.score > kept[-1].score:
                if kept and p.cost == kept[-1].cost:
                    continue
                kept.append(p)
        return Front(kept, self.evaluations, self.metric, dict(self.info))

    def best(self, budget: float) -> Point:
        """The highest-scoring point with ``cost <= budget`` (the cheaper one on ties).

        Raises
        ------
        ValueError
            If no point fits the budget (the message gives the cheapest cost).
        """
        budget = _check_number(budget, "budget")
        fitting = [p for p in self.points if p.cost <= budget]
        if not fitting:
            if not self.points:
                raise ValueError("the front is empty")
            raise ValueError(
                f"no sub-network fits budget {budget:g} {self.metric}; the cheapest costs "
                f"{self.points[0].cost:g}"
            )
        return max(fitting, key=lambda p: (p.score, -p.cost))

    def best_scores(self, budgets: Iterable[float]) -> list[float | None]:
        """``best(b).score`` for each budget (``None`` where nothing fits)."""
        out: list[float | None] = []
        for b in budgets:
            try:
                out.append(self.best(b).score)
            except ValueError:
                out.append(None)
        return out

    # ------------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "evaluations": self.evaluations,
            "info": self.info,
            "points": [p.to_dict() for p in self.points],
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialise to JSON; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Front:
        try:
            points = [
                Point(
                    {str(k): int(v) for k, v in p["config"].items()},
                    float(p["score"]),
                    float(p["cost"]),
                )
                for p in data["points"]
            ]
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"not a serialised Front: {err}") from None
        for i, p in enumerate(points):  # NaN would make best() answer arbitrarily
            if math.isnan(p.score) or math.isnan(p.cost):
                raise ValueError(f"not a serialised Front: point {i} has a NaN score or cost")
        return cls(
            points,
            int(data.get("evaluations", 0)),
            str(data.get("metric", "cost")),
            dict(data.get("info", {})),
        )

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> Front:
        """Load from a JSON string or a path to a JSON file."""
        text = str(source)
        if isinstance(source, os.PathLike) or not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        return cls.from_dict(json.loads(text))
