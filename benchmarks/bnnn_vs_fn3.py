"""Calibration, accuracy and OOD detection of BNNN versus FN3 and strong baselines, at every width.

Protocol (pre-registered, version 1): ``benchmarks/protocols/bnnn_vs_fn3.md``; it fixes the data,
the tuning grids, the seeds, the metrics and the decision rule summarised here.

Claim (BNNN abstract): the Bayesian nested network beats the nested network in accuracy,
calibration and out-of-domain detection. Tested as: BNNN's mean ECE at most 0.8 of temperature-
scaled FN3's, accuracy not lower, OOD AUROC not lower in any cell.

Setup, per dataset (digits, MNIST-1D): classes 8 and 9 held out; ``MLP(in, [128, 128], 8,
groups=8)`` (plain baselines: the same layer sizes); Adam, batch 128, the same epochs for every
method. Rows: ``fn3``, ``fn3_ts`` (one temperature per width fitted on validation), ``mc_dropout``
and ``mc_dropout_ts``, ``ensemble`` (5 members), ``bnnn`` (tempered, kept blocks scaled by keep
marginals: the primary row), ``bnnn_unscaled``, ``bnnn_true`` (``kl_scale`` 1) and
``bnnn_true_unscaled``. Every trained method gets the same 4 validation trials (grids in
``bnnn_vs_fn3_methods.GRIDS``) on a tuning split (seed 100); the lowest mean validation NLL wins.
Then 5 evaluation seeds. Metrics (``bayes_nest.metrics``): accuracy, NLL, ECE, Brier; AUROC, AUPR
and FPR95 by predictive entropy against held-out classes, Gaussian noise and a pixel-shuffle
corruption. Summary: ``ece_ratio_vs_fn3_ts``, ``accuracy_gain_pp``, ``min_auroc_gain_pp`` with
95 % intervals (also for the other BNNN rows), and every cell's paired interval in ``rows``.

Run ``python benchmarks/bnnn_vs_fn3.py`` (full) or ``--quick`` (1 seed, 1 trial, few epochs: a
smoke test, written to ``results/bnnn_vs_fn3_quick.json``).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from _bench import benchmark_args, print_table, write_result
from bnnn_vs_fn3_methods import GRIDS, METHODS, TEMPERED, widths
from bnnn_vs_fn3_summary import METRICS, cells, comparisons, summarize
from claims_stats import fit_temperature, run_grid, temper
from tqdm.auto import tqdm

from bayes_nest import metrics
from bayes_nest.data import corrupt, held_out_classes, load_dataset

PROTOCOL_VERSION = 1
RESULTS = Path(__file__).resolve().parent / "results"
EPOCHS = {"digits": 40, "mnist1d": 30}
QUICK_EPOCHS = {"digits": 6, "mnist1d": 3}
HELD_OUT = [8, 9]
TUNING_SEED = 100
SEEDS = [0, 1, 2, 3, 4]


def evaluation_sets(dataset: str, seed: int):
    """The 8-class bundle and the inputs scored: validation, test and the three OOD sets."""
    held = held_out_classes(load_dataset(dataset, seed=seed), HELD_OUT)
    data = held.in_distribution
    x_test = data.test.x
    inputs = {
        "val": data.val.x,
        "test": x_test,
        "heldout": held.ood.test.x,
        "noise": corrupt(x_test, "gaussian_noise", 1.0, seed=seed),
        "corruption": corrupt(x_test, "shuffle_pixels", 0.5, seed=seed),
    }
    return data, inputs


def scores(probs: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
    """In-distribution metrics on the test split and OOD detection by predictive entropy."""
    test = probs["test"]
    row = {
        "accuracy": metrics.accuracy(test, labels),
        "nll": metrics.nll(test, labels),
        "ece": metrics.expected_calibration_error(test, labels),
        "brier": metrics.brier_score(test, labels),
    }
    entropy_in = metrics.predictive_entropy(test)
    for name in ("heldout", "noise", "corruption"):
        entropy_out = metrics.predictive_entropy(probs[name])
        row[f"auroc_{name}"] = metrics.ood_auroc(entropy_in, entropy_out)
        row[f"aupr_{name}"] = metrics.ood_aupr(entropy_in, entropy_out)
        row[f"fpr95_{name}"] = metrics.fpr_at_95_tpr(entropy_in, entropy_out)
    return row


def tune(dataset: str, method: str, epochs: int, quick: bool) -> tuple[dict, list[dict]]:
    """The protocol's tuning: the grid's trials on the tuning split, lowest validation NLL."""
    data, inputs = evaluation_sets(dataset, TUNING_SEED)
    grid = GRIDS[method]
    if quick:
        grid = {key: values[:1] for key, values in grid.items()}

    def trial(setting: dict) -> float:
        predict = METHODS[method](data, TUNING_SEED, epochs, setting)[method]
        return statistics.mean(
            metrics.nll(predict(inputs["val"], w), data.val.y) for w in widths(method)
        )

    return run_grid(grid, trial, minimize=True, label=f"{dataset} {method}")


def evaluate_seed(dataset: str, seed: int, epochs: int, chosen: dict[str, dict]) -> list[dict]:
    """Train every method with its chosen setting on one seed; one row per row name and width."""
    data, inputs = evaluation_sets(dataset, seed)
    rows = []
    for method, setting in chosen.items():
        for name, predict in METHODS[method](data, seed, epochs, setting).items():
            for width in widths(method):
                probs = {key: predict(x, width) for key, x in inputs.items()}
                variants = {name: probs}
                if name in TEMPERED:
                    t = fit_temperature(probs["val"], data.val.y)
                    variants[TEMPERED[name]] = {k: temper(p, t) for k, p in probs.items()}
                for row_name, p in variants.items():
                    row = {"kind": "seed", "dataset": dataset, "seed": seed, "method": row_name}
                    row["width"] = width
                    row.update(scores(p, data.test.y))
                    if row_name != name:
                        row["temperature"] = t
                    rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    default_out = RESULTS / "bnnn_vs_fn3.json"
    args = benchmark_args(__doc__, default_out, "1 seed, 1 trial, few epochs (< 1 minute)", argv)
    torch.set_num_threads(1)
    seeds = SEEDS[:1] if args.quick else SEEDS
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    out = RESULTS / "bnnn_vs_fn3_quick.json" if args.quick and args.out == default_out else args.out
    start = time.perf_counter()
    rows, tuning, chosen_all = [], [], {}
    for dataset, n_epochs in epochs.items():
        chosen = {}
        for method in METHODS:
            chosen[method], table = tune(dataset, method, n_epochs, args.quick)
            tuning += [{"kind": "tuning", "dataset": dataset, "method": method, **r} for r in table]
        chosen_all[dataset] = chosen
        for seed in tqdm(seeds, desc=dataset, leave=False):
            rows += evaluate_seed(dataset, seed, n_epochs, chosen)
    table, paired = cells(rows), comparisons(rows)
    summary = summarize(rows, paired)
    summary["chosen_settings"] = chosen_all
    summary["run_seconds"] = time.perf_counter() - start
    print_table(table, ["dataset", "method", "width", *METRICS[:4], "auroc_heldout"])
    for key, value in summary.items():
        print(f"{key}: {value}")
    config = {
        "protocol_version": PROTOCOL_VERSION,
        "protocol": "benchmarks/protocols/bnnn_vs_fn3.md",
        "quick": args.quick,
        "seeds": seeds,
        "tuning_seed": TUNING_SEED,
        "epochs": epochs,
        "grids": GRIDS
        if not args.quick
        else {m: {k: v[:1] for k, v in g.items()} for m, g in GRIDS.items()},
        "tuning_rule": "lowest validation NLL (mean over widths for nested methods)",
        "held_out_classes": HELD_OUT,
        "ood_score": "predictive entropy",
        "torch_threads": 1,
    }
    name = "bnnn_vs_fn3_quick" if args.quick else "bnnn_vs_fn3"
    path = write_result(out, name, config, rows + table + paired + tuning, summary)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
