"""A plain model made nested goes through FN3, cost, export, search and BNNN."""

from __future__ import annotations

import copy
import functools

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from bayes_nest import search, subnet
from bayes_nest.infer import BNNN, fit_fn3
from bayes_nest.nn import NestedLinear, NestError, SlicedLinear, axes, check_narrowing, nest
from bayes_nest.testing import assert_close


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well separated Gaussian classes in 6 dimensions (a linear boundary separates them)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[3.0, 0, 0, 0, 0, 0], [0, 3.0, 0, 0, 0, 0], [0, 0, 3.0, 0, 0, 0]])
    y = torch.randint(0, 3, (n,), generator=g)
    return centers[y] + 0.7 * torch.randn(n, 6, generator=g), y


def plain_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Linear(16, 3),
    )  # fmt: skip


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 2 * 2, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.avg_pool2d(torch.tanh(self.conv2(x)), 2)
        return self.out(F.relu(self.fc(torch.flatten(x, 1))))


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, config=None) -> float:
    net.eval()
    with torch.no_grad(), subnet.use(net, config or {}):
        return (net(x).argmax(-1) == y).float().mean().item()


@pytest.fixture(scope="module")
def trained():
    """A nested MLP trained with FN3 for a few epochs (shared by the tests below)."""
    torch.manual_seed(0)
    net = nest(plain_mlp(), groups=4)
    adam = functools.partial(torch.optim.Adam, lr=0.02)
    history = fit_fn3(
        net, blobs(300, 0), epochs=3, batch_size=32, optimizer=adam, seed=0, progress=False
    )
    return net, history


def test_fn3_trains_every_sub_network(trained):
    net, history = trained
    assert history.loss[-1] < history.loss[0]
    x, y = blobs(200, 1)
    # chance is 1/3; the smallest sub-network keeps 8 and 4 hidden units
    assert accuracy(net, x, y, subnet.smallest(net)) > 0.9
    assert accuracy(net, x, y, subnet.full(net)) > 0.9


def test_export_of_a_smaller_config_equals_the_masked_model():
    torch.manual_seed(1)
    net = nest(SmallCNN(), groups=4)
    assert list(axes(net)) == ["conv1", "conv2", "fc"]
    net.conv1.norm.running_mean.normal_()
    x = torch.randn(6, 1, 8, 8)
    config = {"conv1": 2, "conv2": 3, "fc": 1}
    exported = subnet.export(net, config, input_shape=(1, 8, 8))
    assert isinstance(exported, SmallCNN) and exported.conv2.in_channels == 4
    net.eval()
    with torch.no_grad(), subnet.use(net, config):
        expected = net(x)
    with torch.no_grad():
        assert_close(exported(x), expected)
        assert_close(torch.export.export(exported, (x,)).module()(x), expected)
    macs = 8 * 8 * 4 * 9 + 4 * 4 * 12 * 4 * 9 + 12 * 4 * 2 + 2 * 3
    assert subnet.cost(net, config, "macs", (1, 8, 8)) == macs


def test_search_front_on_a_nested_plain_model(trained):
    net, _ = trained
    x, y = blobs(200, 2)
    front = search.greedy(net, lambda c: accuracy(net, x, y, c), input_shape=(6,), progress=False)
    costs = [p.cost for p in front.points]
    assert costs == sorted(costs)
    full, smallest = subnet.full(net), subnet.smallest(net)
    assert costs[0] == subnet.cost(net, smallest, "macs", (6,)) == 6 * 8 + 8 * 4 + 4 * 3
    assert costs[-1] == subnet.cost(net, full, "macs", (6,)) == 6 * 32 + 32 * 16 + 16 * 3
    budget = 0.5 * costs[-1]
    best = front.best(budget)
    assert best.cost <= budget
    assert best.score == accuracy(net, x, y, best.config)  # the same computation, repeated
    assert best.score == max(p.score for p in front.points if p.cost <= budget)


def test_bnnn_fits_a_nested_plain_model(trained):
    net, _ = trained
    bnnn = BNNN(copy.deepcopy(net))
    pyro.set_rng_seed(0)
    x, y = blobs(300, 0)
    bnnn.fit((x, y), epochs=1, progress=False)
    trace = poutine.trace(bnnn.model).get_trace(x[:4])
    assert set(axes(net)) <= {
        name for name, site in trace.nodes.items() if site["type"] == "sample"
    }
    test_x, test_y = blobs(200, 3)
    probs = bnnn.predict(test_x, num_samples=4)
    assert probs.shape == (4, 200, 3)
    assert_close(probs.sum(-1), torch.ones(4, 200))
    assert (probs.mean(0).argmax(-1) == test_y).float().mean().item() > 0.9


def test_hand_nested_net_with_plain_head_gets_a_clear_error_or_is_fixed_by_nest():
    hand = nn.Sequential(NestedLinear(4, 8, groups=4), nn.Linear(8, 2))
    with pytest.raises(NestError, match=r"Linear '1' is fed by the width layer '0'.*nn.nest"):
        check_narrowing(hand)
    with pytest.raises(NestError, match=r"Linear '1' is fed by the width layer '0'"):
        with subnet.use(hand, {"0": 2}):
            hand(torch.zeros(1, 4))
    with pytest.raises(NestError, match=r"Linear '1' is fed by the width layer '0'"):
        fit_fn3(hand, (torch.zeros(4, 4), torch.zeros(4, dtype=torch.long)), epochs=1)
    check_narrowing(nn.Sequential(NestedLinear(4, 8, groups=4, always_on=4), nn.Linear(8, 2)))
    fixed = nest(hand, groups=4)
    assert type(fixed[1]) is SlicedLinear and fixed[0] is not hand[0]
    check_narrowing(fixed)
    with subnet.use(fixed, {"0": 2}):
        assert fixed(torch.zeros(3, 4)).shape == (3, 2)
