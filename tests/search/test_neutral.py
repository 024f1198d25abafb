"""Greedy search with axes whose moves cost nothing, and the checks on what a score returns."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from bayes_nest.models import MLP, ResNeXt
from bayes_nest.nn import axes
from bayes_nest.search import exhaustive, greedy
from bayes_nest.subnet import CostModel
from bayes_nest.testing import assert_close

# Score lost to quantization at each kept bit count of a 4-bit axis.
BITS_PENALTY = {1: 0.8, 2: 0.3, 3: 0.05, 4: 0.0}


def _budgets(front, n: int = 25) -> list[float]:
    costs = [p.cost for p in front.points]
    return torch.linspace(min(costs), max(costs), n).tolist()


@pytest.fixture(scope="module")
def bits_mlp():
    net = MLP(16, [32, 32], 4, groups=8, always_on=1, bits=4)

    def score(config):
        return (config["hidden.0"] + config["hidden.1"]) / 16 - BITS_PENALTY[config["bits"]]

    return net, score, exhaustive(net, score, input_shape=(16,), progress=False)


@pytest.mark.parametrize("direction", ["both", "down", "up"])
def test_bits_reach_their_best_value_under_macs(direction, bits_mlp):
    """Width blocks score 1/16 each, bits cost no MACs: every budget keeps 4 bits."""
    net, score, oracle = bits_mlp
    front = greedy(net, score, input_shape=(16,), direction=direction, progress=False)
    for budget in _budgets(oracle):
        assert front.best(budget).config["bits"] == 4
        assert_close(front.best(budget).score, oracle.best(budget).score)
    # A quarter of the way up the cost range (the case that returned 1-bit networks).
    low, high = min(p.cost for p in oracle.points), max(p.cost for p in oracle.points)
    quarter = front.best(low + 0.25 * (high - low))
    assert_close(quarter.score, oracle.best(low + 0.25 * (high - low)).score)


@pytest.mark.parametrize("direction", ["both", "down", "up"])
def test_best_neutral_value_need_not_be_an_end_of_the_axis(direction, tiny_mlp):
    """A score peaking at 2 of 4 bits: both walks find 2 (scored, not assumed)."""
    net = tiny_mlp(bits=4)
    peak = {1: -0.5, 2: 0.0, 3: -0.2, 4: -0.1}

    def score(config):
        return config["hidden.0"] / 4 + peak[config["bits"]]

    front = greedy(net, score, input_shape=(6,), direction=direction, progress=False)
    for path in front.info["paths"].values():
        assert all(config["bits"] == 2 for config in path[1:])
    oracle = exhaustive(net, score, input_shape=(6,), progress=False)
    for budget in _budgets(oracle):
        assert_close(front.best(budget).score, oracle.best(budget).score)


def test_neutral_moves_are_in_the_path_at_unchanged_cost():
    net = MLP(16, [32, 32], 4, groups=8, bits=4)

    def score(config):
        return (config["hidden.0"] + config["hidden.1"]) / 16 - BITS_PENALTY[config["bits"]]

    front = greedy(net, score, input_shape=(16,), direction="up", progress=False)
    path = front.info["path"]
    macs = CostModel(net, "macs", (16,))
    assert path[0] == {"hidden.0": 1, "hidden.1": 1, "bits": 1}
    assert path[1] == {"hidden.0": 1, "hidden.1": 1, "bits": 4}  # best neutral value at once
    assert macs(path[1]) == macs(path[0])
    assert path[-1] == {"hidden.0": 8, "hidden.1": 8, "bits": 4}


# ----------------------------------------------------------------------- every axis kind


def _every_kind() -> ResNeXt:
    """Width, depth, paths and bits axes in a space small enough to search exhaustively."""
    torch.manual_seed(0)
    net = ResNeXt(3, 2, (4,), (2,), cardinality=2, path_width=2, groups=2, bits=3)
    assert {a.kind for a in axes(net).values()} == {"width", "depth", "paths", "bits"}
    return net


def _concave_score(net, seed: int):
    """Additive score with decreasing positive gains per block on every axis."""
    rng = random.Random(seed)
    gains = {
        name: sorted((rng.uniform(0.01, 1.0) for _ in range(a.size)), reverse=True)
        for name, a in axes(net).items()
    }

    def score(config):
        return sum(sum(gains[name][: config[name]]) for name in config)

    return score, gains


@pytest.mark.parametrize("direction", ["both", "down", "up"])
@pytest.mark.parametrize("seed", range(3))
def test_exactly_optimal_on_every_axis_kind_with_free_bits(seed, direction):
    """Separable concave score, cost one per non-bits block (bits free): greedy is exact."""
    net = _every_kind()
    score, _ = _concave_score(net, seed)

    def blocks(config):
        return float(sum(n for name, n in config.items() if name != "bits"))

    front = greedy(net, score, cost=blocks, direction=direction, progress=False)
    oracle = exhaustive(net, score, cost=blocks, progress=False)
    for budget in range(6, 13):
        assert_close(front.best(budget).score, oracle.best(budget).score)
        assert front.best(budget).config["bits"] == 3


@pytest.fixture(scope="module")
def every_kind_macs():
    net = _every_kind()
    return net, CostModel(net, "macs", (2, 4, 4))  # shared: its cache serves every seed


@pytest.mark.parametrize("seed", range(3))
def test_every_axis_kind_under_macs_against_exhaustive(seed, every_kind_macs):
    """Under MACs (bits free, the paths of a dropped block free too) greedy keeps the bits at
    their best and lacks at most one non-bits block of the optimum at every budget."""
    net, macs = every_kind_macs
    score, gains = _concave_score(net, seed)
    front = greedy(net, score, cost=macs, progress=False)
    oracle = exhaustive(net, score, cost=macs, progress=False)
    largest_block = max(max(g) for name, g in gains.items() if name != "bits")
    for budget in _budgets(oracle, 30):
        found = front.best(budget)
        assert found.config["bits"] == 3
        assert found.score >= oracle.best(budget).score - largest_block - 1e-12


# ----------------------------------------------------------------------- score checks


@pytest.mark.parametrize(
    "value, error, match",
    [
        ("0.5", TypeError, "real number, got '0.5'"),
        (None, TypeError, "real number, got None"),
        (True, TypeError, "real number, got True"),
        (1 + 2j, TypeError, "real number"),
        (torch.tensor([0.1, 0.2]), TypeError, "real number"),
        (np.array(["0.3"]), TypeError, "real number"),
        (math.nan, ValueError, "NaN"),
        (math.inf, ValueError, "infinite"),
        (torch.tensor(-math.inf), ValueError, "infinite"),
    ],
)
def test_scores_that_are_not_finite_real_numbers_are_refused(value, error, match, tiny_mlp):
    net = tiny_mlp()
    with pytest.raises(error, match=match) as info:
        greedy(net, lambda config: value, input_shape=(6,), progress=False)
    assert "hidden.0" in str(info.value)  # the message names the config
    with pytest.raises(error, match=match):
        exhaustive(net, lambda config: value, input_shape=(6,), progress=False)


@pytest.mark.parametrize(
    "value", [np.float32(0.25), np.int64(1), torch.tensor(0.25), np.array([0.25]), 0.25, 1]
)
def test_numeric_scores_of_every_kind_are_accepted(value, tiny_mlp):
    net = tiny_mlp()
    front = greedy(net, lambda config: value, input_shape=(6,), progress=False)
    expected = 1.0 if value == 1 else 0.25
    assert all(p.score == expected and type(p.score) is float for p in front.points)
