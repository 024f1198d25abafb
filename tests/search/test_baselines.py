"""Baseline searches: exhaustive, random and evolutionary."""

from __future__ import annotations

import pytest

from bayes_nest.models import MLP
from bayes_nest.nn import axes
from bayes_nest.search import evolutionary, exhaustive, random_search
from bayes_nest.subnet import CostModel
from bayes_nest.testing import assert_close


def _net():
    return MLP(6, [8, 12, 16], 3, groups=4)


def _score(config):
    return float(sum(v**0.5 for v in config.values()))


def _blocks(config):
    return float(sum(config.values()))


def test_exhaustive_scores_every_config_once():
    front = exhaustive(_net(), _score, cost=_blocks, progress=False)
    assert front.evaluations == len(front) == 4**3
    assert len({tuple(p.config.values()) for p in front}) == 64


def test_exhaustive_refuses_large_spaces():
    with pytest.raises(ValueError, match="64 configs, more than max_configs=10"):
        exhaustive(_net(), _score, cost=_blocks, max_configs=10, progress=False)


def test_random_search_distinct_configs_with_extremes():
    net = _net()
    front = random_search(net, _score, cost=_blocks, evaluations=20, seed=3, progress=False)
    configs = [tuple(p.config.values()) for p in front]
    assert front.evaluations == 20 == len(set(configs))
    assert (4, 4, 4) in configs and (1, 1, 1) in configs
    again = random_search(net, _score, cost=_blocks, evaluations=20, seed=3, progress=False)
    assert [p.config for p in again] == [p.config for p in front]
    # more evaluations than configs: the whole space once
    assert (
        random_search(net, _score, cost=_blocks, evaluations=500, progress=False).evaluations == 64
    )


def test_evolutionary_respects_evaluations_and_budgets():
    net = _net()
    macs = CostModel(net, "macs", (6,))
    budgets = [150.0, 300.0, 500.0]
    front = evolutionary(
        net, _score, cost=macs, evaluations=30, budgets=budgets, population=6, progress=False
    )
    assert front.evaluations <= 30
    assert front.evaluations >= 20
    assert front.info["budgets"] == budgets
    assert all(p.cost <= max(budgets) for p in front)
    for b in budgets:
        assert front.best(b).cost <= b


def test_evolutionary_finds_the_optimum_of_a_small_space():
    net = _net()
    front = evolutionary(
        net, _score, cost=_blocks, evaluations=60, budgets=[7.0], seed=1, progress=False
    )
    oracle = exhaustive(net, _score, cost=_blocks, progress=False)
    assert_close(front.best(7.0).score, oracle.best(7.0).score)


def test_evolutionary_default_budgets_and_errors():
    net = _net()
    front = evolutionary(net, _score, cost=_blocks, evaluations=12, progress=False)
    assert front.info["budgets"][-1] == 12.0 and len(front.info["budgets"]) == 5
    with pytest.raises(ValueError, match="below the cost of the smallest"):
        evolutionary(net, _score, cost=_blocks, evaluations=5, budgets=[2.0], progress=False)
    with pytest.raises(ValueError, match="evaluations"):
        evolutionary(net, _score, cost=_blocks, evaluations=0, progress=False)
    with pytest.raises(ValueError, match="mutation_prob"):
        evolutionary(net, _score, cost=_blocks, evaluations=5, mutation_prob=2, progress=False)
    with pytest.raises(ValueError, match="evaluations"):
        random_search(net, _score, cost=_blocks, evaluations=-1, progress=False)


def test_axes_are_those_of_the_module():
    front = exhaustive(MLP(4, [8], 2, groups=2), _score, cost=_blocks, progress=False)
    assert {tuple(p.config) for p in front} == {tuple(axes(MLP(4, [8], 2, groups=2)))}


def test_evolutionary_tight_budget_starts_from_the_smallest_network():
    net = _net()
    front = evolutionary(net, _score, cost=_blocks, evaluations=5, budgets=[3.0], progress=False)
    assert front.best(3.0).config == {name: 1 for name in axes(net)}
