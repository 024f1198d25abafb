"""Property tests of the search: ``Front.best`` against a brute force over the points, the Pareto
front, JSON round trips, and the greedy search against exhaustive enumeration on random
separable concave scores (where greedy is provably optimal at every budget)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from torch import nn

from bayes_nest.nn import NestedModule
from bayes_nest.search import Front, Point, greedy
from tests.property.property_testing import examples

# ----------------------------------------------------------------------------- Front

finite = st.floats(-1e6, 1e6, allow_nan=False)
small = st.integers(-5, 5).map(float)  # few values: many ties in score and in cost


@st.composite
def fronts(draw):
    n = draw(st.integers(0, 25))
    values = st.one_of(small, finite)
    points = [
        Point({"a": i}, draw(values, label="score"), draw(values, label="cost")) for i in range(n)
    ]
    return Front(points, evaluations=n, metric="macs")


def _brute_best(points: list[Point], budget: float) -> Point | None:
    fitting = [p for p in points if p.cost <= budget]
    if not fitting:
        return None
    top = max(p.score for p in fitting)
    return min((p for p in fitting if p.score == top), key=lambda p: p.cost)


budgets = st.one_of(small, finite, st.sampled_from([math.inf, -math.inf]))


@examples(150)
@given(fronts(), budgets)
def test_best_is_the_highest_score_within_budget(front, budget):
    expected = _brute_best(front.points, budget)
    if expected is None:
        with pytest.raises(ValueError, match="empty" if not front.points else "cheapest"):
            front.best(budget)
        return
    got = front.best(budget)
    assert got.cost <= budget
    assert (got.score, got.cost) == (expected.score, expected.cost)
    assert got in front.points


@examples(100)
@given(fronts(), budgets)
def test_pareto_front_answers_every_budget_like_the_whole_front(front, budget):
    pareto = front.pareto()
    costs = [p.cost for p in pareto.points]
    scores = [p.score for p in pareto.points]
    assert costs == sorted(costs) and len(set(costs)) == len(costs)
    assert all(a < b for a, b in itertools.pairwise(scores))  # each strictly beats the cheaper
    for p in front.points:  # every point is matched or beaten by a no-costlier Pareto point
        assert any(q.cost <= p.cost and q.score >= p.score for q in pareto.points)
    expected = _brute_best(front.points, budget)
    if expected is None:
        with pytest.raises(ValueError):
            pareto.best(budget)
    else:
        got = pareto.best(budget)
        assert (got.score, got.cost) == (expected.score, expected.cost)


@examples(50)
@given(fronts(), budgets)
def test_json_round_trip_keeps_every_answer(front, budget):
    again = Front.from_json(front.to_json())
    assert [p.to_dict() for p in again.points] == [p.to_dict() for p in front.points]
    assert again.best_scores([budget]) == front.best_scores([budget])


@examples(20)
@given(fronts(), st.one_of(st.just(math.nan), st.text(max_size=3), st.none(), st.just([1.0])))
@example(Front([Point({"a": 0}, 0.0, 0.0)]), "0")  # float("0") used to accept text
@example(Front([]), "0")
def test_a_budget_that_is_not_a_number_is_rejected(front, budget):
    with pytest.raises((TypeError, ValueError), match="budget"):
        front.best(budget)


# ----------------------------------------------------------------------------- greedy


class _Blocks(NestedModule):
    axis_kind = "width"

    def forward(self, x):  # never called: the scores below do not run the network
        return x


def _space(sizes: list[tuple[int, int]]) -> nn.Module:
    return nn.ModuleList(
        _Blocks(size=s, always_on=a, axis_name=f"ax{i}") for i, (s, a) in enumerate(sizes)
    )


@st.composite
def separable_problems(draw):
    """Axes (size, always_on) and a concave increasing gain per axis: a score
    ``sum_a f_a(c_a)`` whose greedy path is optimal under a cost that counts kept blocks."""
    n_axes = draw(st.integers(1, 4))
    sizes, gains = [], []
    for _ in range(n_axes):
        size = draw(st.integers(1, 6))
        always_on = draw(st.integers(0, min(size, 2)))
        increments = draw(
            st.lists(st.integers(0, 20), min_size=size - always_on, max_size=size - always_on)
        )
        increments = sorted(increments, reverse=True)  # concave: diminishing returns
        gains.append([0, *itertools.accumulate(increments)])
        sizes.append((size, always_on))
    return sizes, gains


@examples(80)
@given(separable_problems(), st.sampled_from(["both", "down", "up"]))
def test_greedy_matches_exhaustive_on_separable_concave_scores(problem, direction):
    sizes, gains = problem
    module = _space(sizes)
    names = [f"ax{i}" for i in range(len(sizes))]

    def score(config):
        return float(sum(gains[i][config[n] - sizes[i][1]] for i, n in enumerate(names)))

    def cost(config):
        return float(sum(config.values()))

    front = greedy(module, score, cost=cost, direction=direction, progress=False)
    for p in front.points:  # every point is scored and costed correctly
        assert p.score == score(p.config) and p.cost == cost(p.config)
    ranges = [range(a, s + 1) for s, a in sizes]
    configs = [dict(zip(names, counts, strict=True)) for counts in itertools.product(*ranges)]
    lo, hi = sum(a for _, a in sizes), sum(s for s, _ in sizes)
    for budget in range(lo, hi + 1):
        best = max(score(c) for c in configs if cost(c) <= budget)
        assert front.best(budget).score == best, (budget, direction)
    with pytest.raises(ValueError, match="cheapest"):
        front.best(lo - 1)
