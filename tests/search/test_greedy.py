"""Greedy search against exhaustive search on scores where its optimality is known."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from bayes_nest.models import MLP, ConvNet
from bayes_nest.nn import axes
from bayes_nest.search import exhaustive, greedy
from bayes_nest.subnet import CostModel
from bayes_nest.testing import assert_close


def _net() -> nn.Module:
    return MLP(6, [8, 12, 16], 3, groups=4, always_on=1)  # three axes of 4 blocks


def _concave_gains(net: nn.Module, seed: int) -> dict[str, list[float]]:
    """Decreasing positive gains of blocks 1..size of every axis (a concave score)."""
    rng = random.Random(seed)
    return {
        name: sorted((rng.uniform(0.01, 1.0) for _ in range(a.size)), reverse=True)
        for name, a in axes(net).items()
    }


def _additive_score(gains):
    def score(config):
        return sum(sum(gains[name][: config[name]]) for name in config)

    return score


def _blocks(config):
    return float(sum(config.values()))


@pytest.mark.parametrize("direction", ["both", "down", "up"])
@pytest.mark.parametrize("seed", range(4))
def test_exactly_optimal_for_concave_additive_scores_and_block_costs(seed, direction):
    net = _net()
    score = _additive_score(_concave_gains(net, seed))
    front = greedy(net, score, cost=_blocks, direction=direction, progress=False)
    oracle = exhaustive(net, score, cost=_blocks, progress=False)
    for budget in range(3, 13):
        assert_close(front.best(budget).score, oracle.best(budget).score)


@pytest.mark.parametrize("seed", range(5))
def test_small_gap_with_unequal_block_costs(seed):
    """With MACs as the cost, greedy is a knapsack heuristic: its gap at any budget is at most
    the largest single block gain (it never lacks more than one block of the optimum)."""
    net = _net()
    gains = _concave_gains(net, seed)
    score = _additive_score(gains)
    macs = CostModel(net, "macs", (6,))
    front = greedy(net, score, cost=macs, progress=False)
    oracle = exhaustive(net, score, cost=macs, progress=False)
    largest_gain = max(max(g) for g in gains.values())
    path_costs = sorted({macs(c) for c in front.info["path"]})
    for budget in torch.linspace(oracle.points[0].cost, oracle.points[-1].cost, 25).tolist():
        assert front.best(budget).score >= oracle.best(budget).score - largest_gain - 1e-12
    # at the costs of the path's own configs greedy matches the oracle here
    gaps = [oracle.best(c).score - front.best(c).score for c in path_costs]
    assert max(gaps) <= largest_gain


def test_path_goes_from_full_to_smallest_one_block_at_a_time():
    net = _net()
    score = _additive_score(_concave_gains(net, 0))
    front = greedy(net, score, cost=_blocks, direction="down", progress=False)
    path = front.info["path"]
    assert path[0] == {n: 4 for n in axes(net)} and path[-1] == {n: 1 for n in axes(net)}
    for a, b in zip(path, path[1:], strict=False):
        assert sum(a.values()) - sum(b.values()) == 1
    assert len(path) == 1 + 3 * 3
    up = greedy(net, score, cost=_blocks, direction="up", progress=False).info["path"]
    assert up[0] == path[-1] and up[-1] == path[0] and len(up) == len(path)


def test_both_walks_meet_halfway():
    net = _net()
    front = greedy(net, _additive_score(_concave_gains(net, 0)), cost=_blocks, progress=False)
    down, up = front.info["paths"]["down"], front.info["paths"]["up"]
    assert down[0] == {n: 4 for n in axes(net)} and up[0] == {n: 1 for n in axes(net)}
    # full costs 12 blocks, smallest 3: the walks stop once past 7.5
    assert _blocks(down[-1]) == 7 and _blocks(down[-2]) == 8
    assert _blocks(up[-1]) == 8 and _blocks(up[-2]) == 7
    assert front.info["path"] == down


@pytest.mark.parametrize("k", [1, 2])
def test_candidates_bound_the_evaluations(k):
    net = _net()
    calls = []
    gains = _concave_gains(net, 1)

    def score(config):
        calls.append(dict(config))
        return _additive_score(gains)(config)

    front = greedy(net, score, cost=_blocks, candidates=k, progress=False)
    steps = sum(len(p) - 1 for p in front.info["paths"].values())
    assert front.evaluations == len(calls) <= 2 + k * steps
    full = greedy(net, score, cost=_blocks, progress=False)
    assert full.evaluations > front.evaluations


def test_step_and_start():
    net = _net()
    score = _additive_score(_concave_gains(net, 2))
    front = greedy(net, score, cost=_blocks, step=2, direction="down", progress=False)
    counts = {c for config in front.info["path"] for c in config.values()}
    assert counts == {4, 2, 1}  # 4 -> 2 -> 1 (clipped at always_on)
    start = {"hidden.0": 2, "hidden.1": 2, "hidden.2": 2}
    front = greedy(
        net,
        score,
        cost=_blocks,
        start=start,
        step={"hidden.0": 1},
        direction="up",
        progress=False,
    )
    assert front.info["path"][0] == start and front.info["path"][-1] == {n: 4 for n in axes(net)}
    with pytest.raises(ValueError, match="one-way"):
        greedy(net, score, cost=_blocks, start=start, progress=False)


def test_bits_axis_not_reduced_when_it_saves_no_macs(tiny_mlp):
    net = tiny_mlp(bits=4)

    def score(config):
        return float(sum(config.values()))

    front = greedy(net, score, input_shape=(6,), direction="down", progress=False)
    assert all(config["bits"] == 4 for config in front.info["path"])
    front = greedy(net, score, cost="bitops", input_shape=(6,), direction="down", progress=False)
    assert front.info["path"][-1] == {"hidden.0": 1, "bits": 1}


def test_cache_and_progress_bar():
    net = _net()
    calls = []

    def score(config):
        calls.append(1)
        return float(sum(config.values()))

    front = greedy(net, score, cost=_blocks, progress=True)
    assert front.evaluations == len(calls)
    uncached = greedy(net, score, cost=_blocks, cache=False, progress=False)
    assert uncached.evaluations > front.evaluations


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"candidates": 0}, ValueError, "candidates"),
        ({"step": 0}, ValueError, "step"),
        ({"step": {"nope": 1}}, ValueError, "unknown axis"),
        ({"cost": "flops", "input_shape": (6,)}, ValueError, "cost"),
        ({"cost": "macs", "input_shape": (5,)}, ValueError, r"\(N, 6\)"),
        ({"cost": 3}, TypeError, "cost"),
        ({"start": {"hidden.0": 9}, "direction": "down"}, ValueError, "out of range"),
        ({"direction": "sideways"}, ValueError, "direction"),
    ],
)
def test_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        greedy(_net(), lambda c: 0.0, **({"cost": _blocks} | kwargs), progress=False)


def test_bad_scores_and_modules():
    with pytest.raises(ValueError, match="NaN"):
        greedy(_net(), lambda c: math.nan, cost=_blocks, progress=False)
    with pytest.raises(TypeError, match="number"):
        greedy(_net(), lambda c: "high", cost=_blocks, progress=False)
    with pytest.raises(TypeError, match="score"):
        greedy(_net(), 3.0, cost=_blocks, progress=False)
    with pytest.raises(ValueError, match="input_shape"):  # an image size is not fixed by layers
        greedy(ConvNet(2, 1, (4,), groups=2), lambda c: 0.0, progress=False)
    with pytest.raises(ValueError, match="no axes"):
        greedy(nn.Linear(2, 2), lambda c: 0.0, cost=_blocks, progress=False)
