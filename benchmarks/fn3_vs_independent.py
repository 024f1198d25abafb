"""One FN3 training run versus tuned, early-stopped networks trained independently at each size.

Protocol (pre-registered, version 1): ``benchmarks/protocols/fn3_vs_independent.md``.

Claim (FN3 abstract): one training gives a nested set of models, each about as good as a model of
its size trained on its own, for a fraction of the cost. Tested as: every FN3 sub-network within
1 pp of the independent network of its size (two FN3 runs: one nesting width, one nesting bits),
the *single* joint run (width and bits nested together) within 2 pp, and the one joint run costing
at most half of the 7 independent runs it replaces.

Setup, per dataset (digits, MNIST-1D): widths ``[h, h]`` with h = 16, 32, 64, 128 (FN3 keeps
2, 4, 8, 16 of 16 groups) and bit-widths 2, 4, 8 at full width. Every run -- each independent
network, the FN3 width run, the FN3 bits run and the joint run -- gets early stopping on the
validation split (patience 20 epochs, best epoch restored; nested runs score the mean validation
accuracy of the sub-networks they are compared at) and the same 4 tuning trials on a tuning split
(seed 100), chosen by validation accuracy. Then 5 evaluation seeds; test accuracy per size, paired
gaps (independent - FN3) with 95 % t-intervals. Training times are CPU seconds of the training
thread (torch on one thread), validation scoring excluded.

Run ``python benchmarks/fn3_vs_independent.py`` (full) or ``--quick`` (1 seed, 1 trial, a few
epochs: a smoke test, written to ``results/fn3_vs_independent_quick.json``).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from _bench import benchmark_args, print_table, write_result
from claims_stats import early_stopping, mean_se, paired_interval, run_grid
from tqdm.auto import tqdm

from bayes_nest.data import as_loader, load_dataset
from bayes_nest.infer import FN3Trainer, evaluate
from bayes_nest.models import MLP

PROTOCOL_VERSION = 1
RESULTS = Path(__file__).resolve().parent / "results"
HIDDEN, GROUPS, BLOCK, BATCH = 128, 16, 8, 128
WIDTHS = (2, 4, 8, 16)  # groups kept per hidden layer
BITS = (2, 4, 8)
TUNING_SEED, SEEDS, PATIENCE = 100, [0, 1, 2, 3, 4], 20
MAX_EPOCHS = {"digits": 300, "mnist1d": 200}
QUICK_EPOCHS, QUICK_PATIENCE = {"digits": 10, "mnist1d": 4}, 3
RECIPES = {
    "default": {"keep_prob": 0.9},
    "tuned": {
        "keep_prob": {"width": 0.9, "bits": 0.5},
        "coupling": "kind",
        "sandwich": "full",
        "distill": True,
    },
}
INDEPENDENT_GRID = {"lr": [1e-3, 3e-3], "weight_decay": [0.0, 1e-4]}
FN3_GRID = {"lr": [1e-3, 3e-3], "recipe": list(RECIPES)}


def width_config(n: int) -> dict[str, int]:
    return {"hidden.0": n, "hidden.1": n}


# Each run: (family, name) -> how to build it and the sub-networks it is scored at.
def runs() -> dict[str, dict]:
    spec = {}
    for n in WIDTHS:
        spec[f"independent/width/{n}"] = {
            "net": {"hidden": BLOCK * n},
            "cells": {("width", n): None},
        }
    for b in BITS:
        spec[f"independent/bits/{b}"] = {"net": {"bits": b}, "cells": {("bits", b): None}}
    spec["fn3/width"] = {
        "net": {"groups": GROUPS},
        "cells": {("width", n): width_config(n) for n in WIDTHS},
    }
    spec["fn3/bits"] = {"net": {"bits": 8}, "cells": {("bits", b): {"bits": b} for b in BITS}}
    joint = {("width", n): width_config(n) for n in WIDTHS}
    joint.update({("bits", b): {"bits": b} for b in BITS})
    spec["joint"] = {"net": {"groups": GROUPS, "bits": 8}, "cells": joint}
    return spec


def build(bundle, seed: int, hidden: int = HIDDEN, groups: int = 1, bits: int | None = None):
    torch.manual_seed(seed)
    kwargs = {"groups": groups} if groups > 1 else {"groups": 1, "always_on": 1}
    if bits is not None:
        kwargs["bits"] = bits
    return MLP(bundle.num_features, [hidden, hidden], bundle.num_classes, **kwargs)


def epoch_trainer(name: str, net, bundle, seed: int, setting: dict):
    """A callable running one more training epoch of ``net`` with ``setting``."""
    if name.startswith("independent"):
        optimizer = torch.optim.Adam(
            net.parameters(), lr=setting["lr"], weight_decay=setting["weight_decay"]
        )
        loader = as_loader(bundle.train, BATCH, shuffle=True, seed=seed)

        def step() -> None:
            net.train()
            for x, y in loader:
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
                optimizer.step()

        return step
    trainer = FN3Trainer(
        net,
        optimizer=lambda p: torch.optim.Adam(p, lr=setting["lr"]),
        batch_size=BATCH,
        seed=seed,
        progress=False,
        **RECIPES[setting["recipe"]],
    )
    return lambda: trainer.fit(bundle.train, epochs=trainer.epoch + 1)


def accuracy(net, split, cells: dict) -> dict:
    return {cell: evaluate(net, split, config)["accuracy"] for cell, config in cells.items()}


def train_run(name: str, bundle, seed: int, setting: dict, max_epochs: int, patience: int):
    """Train one run with early stopping; return the network, training seconds and epochs."""
    spec = runs()[name]
    net = build(bundle, seed, **spec["net"])
    step = epoch_trainer(name, net, bundle, seed, setting)
    seconds = [0.0]

    def timed_step() -> None:
        start = time.thread_time()  # CPU time of this thread: robust to other load
        step()
        seconds[0] += time.thread_time() - start

    def val_score() -> float:
        return statistics.mean(accuracy(net, bundle.val, spec["cells"]).values())

    info = early_stopping(net, timed_step, val_score, max_epochs=max_epochs, patience=patience)
    return net, seconds[0], info


def tune(dataset: str, name: str, max_epochs: int, patience: int, quick: bool):
    bundle = load_dataset(dataset, seed=TUNING_SEED)
    grid = INDEPENDENT_GRID if name.startswith("independent") else FN3_GRID
    if quick:
        grid = {key: values[:1] for key, values in grid.items()}
    seconds = [0.0]

    def trial(setting: dict) -> float:
        _, spent, info = train_run(name, bundle, TUNING_SEED, setting, max_epochs, patience)
        seconds[0] += spent
        return info["best_score"]

    best, table = run_grid(grid, trial, minimize=False, label=f"{dataset} {name}")
    return best, table, seconds[0]


def run_dataset(dataset: str, seeds: list[int], max_epochs: int, patience: int, quick: bool):
    records, times, tuning, chosen = [], defaultdict(float), [], {}
    for name in runs():
        chosen[name], table, spent = tune(dataset, name, max_epochs, patience, quick)
        times[f"tuning/{name.split('/')[0]}"] += spent
        tuning += [{"kind": "tuning", "dataset": dataset, "run": name, **r} for r in table]
    for seed in tqdm(seeds, desc=dataset, leave=False):
        bundle = load_dataset(dataset, seed=seed)
        for name, spec in runs().items():
            net, spent, info = train_run(name, bundle, seed, chosen[name], max_epochs, patience)
            times[name.split("/")[0] if name.startswith("independent") else name] += spent
            for (family, level), test in accuracy(net, bundle.test, spec["cells"]).items():
                method = "independent" if name.startswith("independent") else name.split("/")[0]
                records.append(
                    {
                        "kind": "seed",
                        "dataset": dataset,
                        "seed": seed,
                        "family": family,
                        "level": level,
                        "method": method,
                        "test_accuracy": test,
                        "best_epoch": info["best_epoch"],
                        "epochs_run": info["epochs_run"],
                        "train_seconds": spent,
                    }
                )
    return records, dict(times), tuning, chosen


def _seed_accuracies(records: list[dict], key: tuple) -> list[float]:
    """Test accuracies of one (dataset, family, level, method), in seed order."""
    sel = [r for r in records if (r["dataset"], r["family"], r["level"], r["method"]) == key]
    return [r["test_accuracy"] for r in sorted(sel, key=lambda r: r["seed"])]


def cells(records: list[dict]) -> list[dict]:
    """Per dataset, size and nested method: accuracies ± s.e. and the paired gap's interval."""
    out = []
    keys = sorted({(r["dataset"], r["family"], r["level"], r["method"]) for r in records})
    for dataset, family, level, method in keys:
        if method == "independent":
            continue

        ind = _seed_accuracies(records, (dataset, family, level, "independent"))
        fn3 = _seed_accuracies(records, (dataset, family, level, method))
        gap = paired_interval(ind, fn3, scale=100.0)
        out.append(
            {
                "kind": "cell",
                "dataset": dataset,
                "family": family,
                "level": level,
                "units" if family == "width" else "bits": BLOCK * level
                if family == "width"
                else level,
                "method": method,
                "fn3_accuracy": mean_se(fn3)[0],
                "fn3_accuracy_se": mean_se(fn3)[1],
                "independent_accuracy": mean_se(ind)[0],
                "independent_accuracy_se": mean_se(ind)[1],
                "gap_pp": gap["mean"],
                "gap_pp_interval": [gap["low"], gap["high"]],
            }
        )
    return out


def summarize(table: list[dict], times: dict[str, dict]) -> dict:
    def worst(method: str) -> dict:
        return max((c for c in table if c["method"] == method), key=lambda c: c["gap_pp"])

    def total(key: str) -> float:
        return sum(t.get(key, 0.0) for t in times.values())

    fn3_worst, joint_worst = worst("fn3"), worst("joint")
    independent = total("independent")
    summary = {
        "max_accuracy_gap_pp": fn3_worst["gap_pp"],
        "max_accuracy_gap_pp_interval": fn3_worst["gap_pp_interval"],
        "max_accuracy_gap_cell": f"{fn3_worst['dataset']} {fn3_worst['family']} {fn3_worst['level']}",
        "joint_max_accuracy_gap_pp": joint_worst["gap_pp"],
        "joint_max_accuracy_gap_pp_interval": joint_worst["gap_pp_interval"],
        "joint_max_accuracy_gap_cell": (
            f"{joint_worst['dataset']} {joint_worst['family']} {joint_worst['level']}"
        ),
        "train_time_ratio": total("joint") / independent,
        "train_time_ratio_definition": "seconds of the one joint run / the 7 independent runs it "
        "replaces, summed over datasets and seeds (thread CPU seconds, early-stopped, validation "
        "excluded)",
        "two_run_train_time_ratio": (total("fn3/width") + total("fn3/bits")) / independent,
        "train_time_ratio_with_tuning": (total("joint") + total("tuning/joint"))
        / (independent + total("tuning/independent")),
        "targets": {
            "max_accuracy_gap_pp": "<= 1.0",
            "joint_max_accuracy_gap_pp": "<= 2.0",
            "train_time_ratio": "<= 0.5",
        },
    }
    summary["verdict"] = {
        "accuracy": summary["max_accuracy_gap_pp"] <= 1.0
        and summary["joint_max_accuracy_gap_pp"] <= 2.0,
        "cost": summary["train_time_ratio"] <= 0.5,
        "cells_missing_target": [
            f"{c['dataset']} {c['method']} {c['family']} {c['level']}"
            for c in table
            if c["gap_pp_interval"][0] is not None
            and c["gap_pp_interval"][0] > (1.0 if c["method"] == "fn3" else 2.0)
        ],
    }
    return summary


def main(argv: list[str] | None = None) -> None:
    default_out = RESULTS / "fn3_vs_independent.json"
    args = benchmark_args(__doc__, default_out, "1 seed, 1 trial, few epochs (< 1 minute)", argv)
    torch.set_num_threads(1)
    seeds = SEEDS[:1] if args.quick else SEEDS
    epochs = QUICK_EPOCHS if args.quick else MAX_EPOCHS
    patience = QUICK_PATIENCE if args.quick else PATIENCE
    out = args.out
    if args.quick and out == default_out:
        out = RESULTS / "fn3_vs_independent_quick.json"
    start = time.perf_counter()
    records, tuning, times, chosen = [], [], {}, {}
    for dataset, max_epochs in epochs.items():
        recs, times[dataset], tune_rows, chosen[dataset] = run_dataset(
            dataset, seeds, max_epochs, patience, args.quick
        )
        records += recs
        tuning += tune_rows
    table = cells(records)
    summary = summarize(table, times)
    summary["train_seconds"] = times
    summary["chosen_settings"] = chosen
    summary["run_seconds"] = time.perf_counter() - start
    print_table(
        table,
        ["dataset", "family", "level", "method", "fn3_accuracy", "independent_accuracy", "gap_pp"],
    )
    for key, value in summary.items():
        print(f"{key}: {value}")
    config = {
        "protocol_version": PROTOCOL_VERSION,
        "protocol": "benchmarks/protocols/fn3_vs_independent.md",
        "quick": args.quick,
        "seeds": seeds,
        "tuning_seed": TUNING_SEED,
        "max_epochs": epochs,
        "patience": patience,
        "hidden": [HIDDEN, HIDDEN],
        "groups": GROUPS,
        "widths_in_units": [BLOCK * n for n in WIDTHS],
        "bits": list(BITS),
        "grids": {"independent": INDEPENDENT_GRID, "fn3": FN3_GRID},
        "recipes": RECIPES,
        "tuning_rule": "highest validation accuracy at the early-stopping epoch",
        "threads": 1,
    }
    name = "fn3_vs_independent_quick" if args.quick else "fn3_vs_independent"
    path = write_result(out, name, config, records + table + tuning, summary)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
