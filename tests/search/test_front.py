"""Front: budget queries, Pareto filtering and serialisation."""

from __future__ import annotations

import math

import pytest

from bayes_nest.search import Front, Point


def _front() -> Front:
    return Front(
        [
            Point({"a": 3}, 0.9, 30.0),
            Point({"a": 1}, 0.5, 10.0),
            Point({"a": 2}, 0.8, 20.0),
            Point({"a": 4}, 0.85, 40.0),  # dominated by a=3
            Point({"a": 5}, 0.8, 20.0),  # same cost, same score as a=2
        ],
        evaluations=5,
        metric="macs",
    )


def test_points_sorted_by_cost():
    assert [p.cost for p in _front().points] == [10.0, 20.0, 20.0, 30.0, 40.0]


@pytest.mark.parametrize(
    "budget, config",
    [(10.0, {"a": 1}), (19.999, {"a": 1}), (20.0, {"a": 2}), (35, {"a": 3}), (1e9, {"a": 3})],
)
def test_best_is_highest_score_within_budget(budget, config):
    assert _front().best(budget).config == config


def test_best_breaks_ties_by_cost():
    front = Front([Point({"a": 1}, 0.7, 5.0), Point({"a": 2}, 0.7, 3.0)])
    assert front.best(10).config == {"a": 2}


def test_best_errors():
    with pytest.raises(ValueError, match="cheapest costs 10"):
        _front().best(9.0)
    with pytest.raises(ValueError, match="empty"):
        Front([]).best(1.0)
    with pytest.raises(ValueError, match="NaN"):
        _front().best(math.nan)
    with pytest.raises(TypeError, match="budget"):
        _front().best("big")


def test_pareto_keeps_strict_improvements():
    pareto = _front().pareto()
    assert [(p.config["a"], p.cost) for p in pareto] == [(1, 10.0), (2, 20.0), (3, 30.0)]
    assert pareto.evaluations == 5
    # every budget gets the same answer from the Pareto front
    for budget in (10, 15, 20, 25, 30, 45):
        assert pareto.best(budget).score == _front().best(budget).score


def test_best_scores_marks_infeasible_budgets():
    assert _front().best_scores([5, 20, 100]) == [None, 0.8, 0.9]


def test_json_roundtrip(tmp_path):
    front = _front()
    front.info["path"] = [{"a": 3}, {"a": 2}]
    text = front.to_json(tmp_path / "front.json")
    for source in (text, tmp_path / "front.json", str(tmp_path / "front.json")):
        loaded = Front.from_json(source)
        assert loaded.points == front.points
        assert loaded.evaluations == 5 and loaded.metric == "macs"
        assert loaded.info["path"] == [{"a": 3}, {"a": 2}]


def test_from_dict_rejects_garbage():
    with pytest.raises(ValueError, match="Front"):
        Front.from_dict({"points": [{"config": 1}]})
