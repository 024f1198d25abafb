"""Bring your own network: a plain PyTorch CNN made nested, trained, searched, exported.

Story: you already have a model written in plain PyTorch -- here a small CNN with its own
``forward`` (convolutions, batch norm, ReLU, pooling, a flatten and two linear layers). One call,
``bayes_nest.nn.nest(model, groups=8)``, turns its convolution and hidden linear layers into
nested layers with 8 ordered blocks each (the output layer stays whole); before training it still
computes exactly what the plain model computes. FN3 training then makes every prefix of blocks a
working classifier, the greedy search finds the best sub-network for each budget of
multiply-accumulates, :func:`~bayes_nest.subnet.export` gives each back as a plain model of your
own class, and a BNNN refines the same network into a Bayesian one.

Run::

    python examples/own_network.py
    python examples/own_network.py --quick
"""

from __future__ import annotations

import argparse
import copy
import functools

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from bayes_nest import search, subnet
from bayes_nest.app import format_table
from bayes_nest.data import load_dataset
from bayes_nest.infer import BNNN, fit_fn3
from bayes_nest.nn import axes, nest, nest_plan

SHAPE = (1, 8, 8)  # scikit-learn's digits as 8x8 images


class DigitsCNN(nn.Module):
    """An ordinary PyTorch model: nothing in it knows about nesting."""

    def __init__(self, width: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width * 2 * 2, hidden)
        self.dropout = nn.Dropout(0.1)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], *SHAPE)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = self.dropout(F.relu(self.fc(torch.flatten(x, 1))))
        return self.out(x)


def accuracy(net: nn.Module, data: tuple[torch.Tensor, torch.Tensor], config=None) -> float:
    x, y = data
    net.eval()
    with torch.no_grad(), subnet.use(net, config or {}):
        return (net(x).argmax(-1) == y).float().mean().item()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a narrower model, fewer epochs")
    args = parser.parse_args(argv)
    width, hidden, epochs = (16, 32, 6) if args.quick else (32, 64, 30)
    torch.manual_seed(0)
    data = load_dataset("digits")
    input_shape = tuple(data.train[0].shape[1:])

    plain = DigitsCNN(width, hidden)
    plans = [vars(p) for p in nest_plan(plain, groups=8)]
    print(format_table(plans, list(plans[0])))
    net = nest(plain, groups=8)  # a copy: `plain` is unchanged
    plain.eval(), net.eval()
    x_test = data.test[0]
    with torch.no_grad():
        diff = (net(x_test) - plain(x_test)).abs().max().item()
    print(f"axes {list(axes(net))}; before training |nested - plain| = {diff:.1e}")

    adam = functools.partial(torch.optim.Adam, lr=3e-3)
    fit_fn3(net, data.train, epochs=epochs, val=data.val, optimizer=adam, seed=0)
    front = search.greedy(
        net, functools.partial(accuracy, net, data.val), input_shape=input_shape, progress=False
    )
    full_macs = subnet.cost(net, subnet.full(net), "macs", input_shape)
    rows = []
    for share in (0.1, 0.25, 0.5, 1.0):
        point = front.best(share * full_macs)
        small = subnet.export(net, point.config, input_shape=input_shape)
        with torch.no_grad(), subnet.use(net, point.config):
            gap = (small(x_test) - net(x_test)).abs().max().item()
        rows.append(
            {
                "budget": f"{100 * share:g}%",
                "config": " ".join(f"{k}:{v}" for k, v in point.config.items()),
                "macs": int(point.cost),
                "val acc": point.score,
                "test acc": accuracy(net, data.test, point.config),
                "export class": type(small).__name__,
                "max |export - nested|": f"{gap:.1e}",
            }
        )
    print(format_table(rows, list(rows[0])))

    bnnn = BNNN(copy.deepcopy(net))
    pyro.set_rng_seed(0)
    bnnn.fit(data.train, epochs=1 if args.quick else 5)
    probs = bnnn.predict(x_test, num_samples=8).mean(0)
    bnnn_accuracy = (probs.argmax(-1) == data.test[1]).float().mean().item()
    print(f"BNNN refined from the FN3 weights: test accuracy {bnnn_accuracy:.3f} (full network)")
    return {"initial_diff": diff, "rows": rows, "bnnn_accuracy": bnnn_accuracy}


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
