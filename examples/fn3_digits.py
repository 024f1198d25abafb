"""Train one nested network with FN3 and use any prefix of it, no retraining.

Story: you need one digit classifier for several devices. FN3 (ordered dropout) trains a single
MLP whose hidden layers are split into ordered blocks; afterwards every prefix -- keep the first
``k`` blocks of each layer -- is a working classifier. This script trains it on scikit-learn's
digits (offline), then measures accuracy, NLL and ECE against MACs for a range of widths, and
compares the learned order with a random one: dropping the *last* blocks costs little, dropping
random blocks costs much more.

Run::

    python examples/fn3_digits.py           # 128-128 MLP, 16 blocks per layer, ~10 s
    python examples/fn3_digits.py --quick   # smaller and shorter
"""

from __future__ import annotations

import argparse
import functools

import torch

from bayes_nest import metrics
from bayes_nest.app import format_table
from bayes_nest.data import load_dataset
from bayes_nest.infer import evaluate, fit_fn3
from bayes_nest.models import MLP
from bayes_nest.nn import masked
from bayes_nest.subnet import cost


def random_blocks_accuracy(net, data, keep: int, groups: int, seed: int) -> float:
    """Accuracy when each hidden layer keeps ``keep`` randomly chosen blocks (not a prefix)."""
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for name in ("hidden.0", "hidden.1"):
        mask = torch.zeros(groups)
        mask[torch.randperm(groups, generator=g)[:keep]] = 1.0
        masks[name] = mask
    net.eval()
    with torch.no_grad(), masked(net, masks):
        probs = torch.softmax(net(data.test.x), -1)
    return metrics.accuracy(probs, data.test.y)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller network, fewer epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    hidden, groups, epochs = ([64, 64], 8, 10) if args.quick else ([128, 128], 16, 40)
    data = load_dataset("digits", seed=args.seed)
    torch.manual_seed(args.seed)
    net = MLP(64, hidden, 10, groups=groups)
    fit_fn3(
        net,
        data.train,
        epochs=epochs,
        val=data.val,
        keep_prob=0.9,  # truncated-geometric prior on the number of kept blocks
        sandwich="full",  # also train the full network at every step
        optimizer=functools.partial(torch.optim.Adam, lr=3e-3),
        seed=args.seed,
    )

    rows = []
    for keep in sorted({1, 2, groups // 4, groups // 2, groups}):
        config = {"hidden.0": keep, "hidden.1": keep}
        scores = evaluate(net, data.test, config)
        rows.append(
            {
                "config": f"{keep}/{groups} blocks per layer",
                "macs": cost(net, config, "macs", input_shape=(64,)),
                "accuracy": scores["accuracy"],
                "nll": scores["nll"],
                "ece": scores["ece"],
                "random blocks": random_blocks_accuracy(net, data, keep, groups, args.seed),
            }
        )
    print(format_table(rows, ["config", "macs", "accuracy", "nll", "ece", "random blocks"]))
    return rows


if __name__ == "__main__":
    main()
