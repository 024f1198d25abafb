"""Calibrated uncertainty from small sub-networks: BNNN against FN3 on classes never seen.

Story: a small on-device classifier should also say when it does not know. We hold out two of
the ten digit classes, train the same nested MLP on the other eight with FN3 (point weights,
fixed ordering prior) and as a BNNN (learned Downhill posterior over the block order, weight
posteriors, SVI), and compare, at several widths, accuracy and calibration on the known classes
and how well the predictive entropy flags the unknown ones (OOD AUROC). The BNNN also reports
its posterior over how many blocks each layer needs.

Run::

    python examples/bnnn_uncertainty.py           # ~20 s
    python examples/bnnn_uncertainty.py --quick
"""

from __future__ import annotations

import argparse

import torch

from bayes_nest import metrics
from bayes_nest.app import ModelSpec, fit
from bayes_nest.app.contexts import seeded
from bayes_nest.app.report import keep_count_interval
from bayes_nest.app.tables import format_table
from bayes_nest.data import held_out_classes, load_dataset


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller network, fewer epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    hidden, groups = ([64, 64], 8) if args.quick else ([128, 128], 16)
    fn3_epochs, bnnn_epochs = (10, 20) if args.quick else (40, 100)
    split = held_out_classes(load_dataset("digits", seed=args.seed), classes=[8, 9])
    known, unknown = split.in_distribution, split.ood.test
    spec = ModelSpec("mlp", {"hidden": hidden, "groups": groups})
    models = {
        "FN3": fit(spec, known, "fn3", epochs=fn3_epochs, seed=args.seed),
        "BNNN": fit(spec, known, "bnnn", epochs=bnnn_epochs, seed=args.seed),
    }

    rows = []
    for keep in sorted({1, 2, groups // 2, groups}):
        config = {"hidden.0": keep, "hidden.1": keep}
        for name, model in models.items():
            with seeded(args.seed):
                p_in = model.predict(known.test.x, config)  # (S, N, K), S = 1 for FN3
                p_out = model.predict(unknown.x, config)
            rows.append(
                {
                    "config": f"{keep}/{groups}",
                    "model": name,
                    "accuracy": metrics.accuracy(p_in, known.test.y),
                    "nll": metrics.nll(p_in, known.test.y),
                    "ece": metrics.expected_calibration_error(p_in, known.test.y),
                    "ood_auroc": metrics.ood_auroc(
                        metrics.predictive_entropy(p_in), metrics.predictive_entropy(p_out)
                    ),
                }
            )
    print("known classes: 0-7; OOD: the held-out classes 8 and 9 (score: predictive entropy)")
    print(format_table(rows, ["config", "model", "accuracy", "nll", "ece", "ood_auroc"]))

    bnnn = models["BNNN"].bnnn
    print("\nBNNN posterior over the number of kept blocks per layer:")
    for axis, q in bnnn.keep_count_probs().items():
        always_on = bnnn.vous[axis].axis.always_on
        lo, hi = keep_count_interval(q, 0.9)
        mean = bnnn.expected_keep_counts()[axis]
        print(
            f"  {axis}: mean {mean:.1f} of {groups}, 90% interval "
            f"[{lo + always_on}, {hi + always_on}]"
        )
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)  # small networks: one thread is fastest
    main()
