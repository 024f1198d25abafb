"""A BNNN posterior in ArviZ: keep probabilities, keep counts and predictions.

Story: you trained a Bayesian nested network and want to look at its posterior with the usual
Bayesian tooling. ``BNNN.posterior_samples`` draws keep probabilities, keep counts and masks per
axis, a layer's weights and, given inputs, the predictive probabilities of every draw;
``bayes_nest.analysis.to_arviz`` turns them into ArviZ data (``InferenceData`` on ArviZ 0.2x,
``DataTree`` on 1.x) and ``summary`` tabulates them. The script also writes the
keep-probability figure (posterior keep marginals per block) with ``--plot``.

Needs the ``arviz`` (and for ``--plot`` the ``plots``) extra.

Run::

    python examples/arviz_posterior.py --plot keep.png
    python examples/arviz_posterior.py --quick
"""

from __future__ import annotations

import argparse

import torch

from bayes_nest import analysis, metrics, plots
from bayes_nest.app import ModelSpec, fit
from bayes_nest.data import load_dataset


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller network, fewer epochs")
    parser.add_argument("--samples", type=int, default=200, help="posterior draws")
    parser.add_argument("--plot", help="write the keep-probability figure to this PNG file")
    args = parser.parse_args(argv)

    hidden, groups, epochs = ([32, 32], 8, 15) if args.quick else ([128, 128], 16, 100)
    data = load_dataset("digits")
    model = fit(ModelSpec("mlp", {"hidden": hidden, "groups": groups}), data, "bnnn", epochs=epochs)
    bnnn = model.bnnn  # the BNNN wrapper: model, guide, variational ordering units

    x, y = data.test.x[:100], data.test.y[:100]
    torch.manual_seed(0)
    draws = bnnn.posterior_samples(args.samples if not args.quick else 50, x)
    probs = torch.as_tensor(draws.pop("probs"))  # (S, N, K): a sub-network and weights per draw
    idata = analysis.to_arviz(
        draws,
        posterior_predictive={"probs": probs},
        observed_data={"labels": y},
        coords={"class": [str(c) for c in range(10)]},
    )
    print(idata)
    counts = [name for name in draws if name.startswith("keep_count/")]
    print(analysis.summary(idata, var_names=counts, round_to=2))
    print(
        f"posterior predictive over sub-networks: accuracy {metrics.accuracy(probs, y):.3f}, "
        f"mean mutual information {float(metrics.mutual_information(probs).mean()):.3f} nats"
    )
    if args.plot:
        fig = plots.keep_probabilities(bnnn.keep_probs())
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return idata


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
