"""One FN3 training run versus networks trained independently at each width and bit-width.

Claim: a single ordered-dropout (FN3) run gives sub-networks about as accurate as networks of the
same size trained on their own, for a fraction of the total training time.

Setup, per dataset (digits, MNIST-1D) and seed:

* width family -- FN3 trains ``MLP(d, [128, 128], 10, groups=16)`` once; its uniform-width
  sub-networks with ``n`` of 16 groups per hidden layer (``n`` = 2, 4, 8, 16, i.e. 16 to 128
  units) are compared with plain ``MLP(d, [8n, 8n], 10)`` networks trained independently;
* bits family -- FN3 trains ``MLP(d, [128, 128], 10, bits=8)`` (weights quantized by nested bit
  truncation, width not nested) once; its 2-, 4- and 8-bit sub-networks are compared with
  ``MLP(..., bits=b)`` networks trained at a fixed ``b`` bits;
* joint (reported, not selected) -- one FN3 run (``tuned`` recipe) nesting width *and* bits,
  ``MLP(d, [128, 128], 10, groups=16, bits=8)``, scored at the same widths (8 bits) and bit-widths
  (full width) against the same independent networks.

Every network is trained with Adam (lr 1e-3), batch 128 and the same number of epochs; accuracy
is on the test split, averaged over seeds (spread = standard deviation over seeds). FN3 recipes:
``default`` (truncated geometric, π = 0.9, independent draws per axis, as in the paper) and
``tuned`` (π = 0.9 for width and 0.5 for bits, comonotone draws across the layers of a kind, and
the full network in every step as the teacher of the sampled one: sandwich rule with in-place
distillation). The recipe of the
summary is picked per dataset by mean *validation* accuracy over the compared sub-networks (the
test split plays no part in the choice). Times are wall-clock training times on one thread.

Run ``python benchmarks/fn3_vs_independent.py`` (full) or ``--quick`` (under a minute).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from bayes_nest._bench import benchmark_args, write_result
from bayes_nest.data import as_loader, load_dataset
from bayes_nest.infer import FN3Trainer, evaluate
from bayes_nest.models import MLP

RESULTS = Path(__file__).resolve().parent / "results" / "fn3_vs_independent.json"
HIDDEN, GROUPS, BLOCK = 128, 16, 8
WIDTHS = (2, 4, 8, 16)  # groups kept per hidden layer
BITS = (2, 4, 8)
RECIPES = {
    "default": {"keep_prob": 0.9},
    "tuned": {
        "keep_prob": {"width": 0.9, "bits": 0.5},
        "coupling": "kind",
        "sandwich": "full",
        "distill": True,
    },
}


def train_independent(model, data, epochs: int, seed: int) -> float:
    """Plain training (same optimizer, batches and per-step bookkeeping as the FN3 trainer)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = as_loader(data, 128, shuffle=True, seed=seed)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            out = model(x)
            loss = F.cross_entropy(out, y)
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError("non-finite loss")
            loss.backward()
            int((out.detach().argmax(-1) == y).sum())
            optimizer.step()
    return time.perf_counter() - start


def train_fn3(model, data, epochs: int, seed: int, recipe: dict) -> float:
    trainer = FN3Trainer(model, seed=seed, progress=False, **recipe)
    start = time.perf_counter()
    trainer.fit(data, epochs=epochs)
    return time.perf_counter() - start


def scores(model, bundle, config=None) -> tuple[float, float]:
    return (
        evaluate(model, bundle.test, config)["accuracy"],
        evaluate(model, bundle.val, config)["accuracy"],
    )


def run_seed(bundle, epochs: int, seed: int, recipes: dict) -> tuple[list, dict]:
    """Train every network of one seed; return result records and training times."""
    d = bundle.num_features
    records, times = [], defaultdict(float)

    def new(hidden, **kwargs):
        torch.manual_seed(seed)
        return MLP(d, [hidden, hidden], 10, **kwargs)

    for n in WIDTHS:
        net = new(BLOCK * n, groups=1, always_on=1)
        times["independent/width"] += train_independent(net, bundle.train, epochs, seed)
        test, val = scores(net, bundle)
        records.append(("width", n, "independent", test, val))
    for b in BITS:
        net = new(HIDDEN, groups=1, always_on=1, bits=b)
        times["independent/bits"] += train_independent(net, bundle.train, epochs, seed)
        test, val = scores(net, bundle)
        records.append(("bits", b, "independent", test, val))
    for name, recipe in recipes.items():
        net = new(HIDDEN, groups=GROUPS)
        times[f"{name}/width"] += train_fn3(net, bundle.train, epochs, seed, recipe)
        for n in WIDTHS:
            test, val = scores(net, bundle, {"hidden.0": n, "hidden.1": n})
            records.append(("width", n, name, test, val))
        net = new(HIDDEN, groups=1, always_on=1, bits=8)
        times[f"{name}/bits"] += train_fn3(net, bundle.train, epochs, seed, recipe)
        for b in BITS:
            test, val = scores(net, bundle, {"bits": b})
            records.append(("bits", b, name, test, val))
    joint = new(HIDDEN, groups=GROUPS, bits=8)
    times["joint/all"] += train_fn3(joint, bundle.train, epochs, seed, RECIPES["tuned"])
    for n in WIDTHS:
        test, val = scores(joint, bundle, {"hidden.0": n, "hidden.1": n})
        records.append(("width", n, "joint", test, val))
    for b in BITS:
        test, val = scores(joint, bundle, {"bits": b})
        records.append(("bits", b, "joint", test, val))
    return records, dict(times)


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    args = benchmark_args(__doc__, RESULTS, "1 seed, few epochs (< 1 minute)")
    torch.set_num_threads(1)

    seeds = [0] if args.quick else [0, 1, 2]
    epochs = {"digits": 30, "mnist1d": 15} if args.quick else {"digits": 300, "mnist1d": 200}
    recipes = {"default": RECIPES["default"]} if args.quick else RECIPES
    config = {
        "datasets": list(epochs),
        "epochs": epochs,
        "seeds": seeds,
        "hidden": [HIDDEN, HIDDEN],
        "groups": GROUPS,
        "widths_in_groups": list(WIDTHS),
        "widths_in_units": [BLOCK * n for n in WIDTHS],
        "bits": list(BITS),
        "optimizer": "Adam lr=1e-3, batch 128",
        "recipes": recipes,
        "joint_recipe": RECIPES["tuned"],
        "threads": 1,
        "quick": args.quick,
    }
    # Warm-up (first-call costs of torch's optimizer and autograd are not training time).
    warm = load_dataset("digits", seed=0)
    train_independent(MLP(64, [16], 10, groups=1, always_on=1), warm.train, 1, 0)
    train_fn3(MLP(64, [16], 10, groups=2, bits=4), warm.train, 1, 0, RECIPES["tuned"])

    rows, summary_parts = [], {}
    for dataset, n_epochs in epochs.items():
        bundle = load_dataset(dataset, seed=0)
        acc = defaultdict(list)  # (family, level, method) -> [(test, val)] over seeds
        times = defaultdict(list)
        for seed in seeds:
            print(f"{dataset}: seed {seed}, {n_epochs} epochs ...", flush=True)
            records, seed_times = run_seed(bundle, n_epochs, seed, recipes)
            for family, level, method, test, val in records:
                acc[family, level, method].append((test, val))
            for key, value in seed_times.items():
                times[key].append(value)
        methods = list(recipes) + ["joint"]
        # Recipe choice by mean validation accuracy over all compared sub-networks.
        val_mean = {
            m: statistics.mean(v for (f, lv, mm), vals in acc.items() if mm == m for _, v in vals)
            for m in recipes
        }
        chosen = max(recipes, key=lambda m: val_mean[m])
        gaps = defaultdict(list)
        for (family, level, method), values in sorted(acc.items()):
            if method == "independent":
                continue
            ind = [t for t, _ in acc[family, level, "independent"]]
            fn3 = [t for t, _ in values]
            per_seed_gap = [100 * (i - f) for i, f in zip(ind, fn3, strict=True)]
            gap = 100 * (statistics.mean(ind) - statistics.mean(fn3))
            gaps[method].append(gap)
            rows.append(
                {
                    "dataset": dataset,
                    "family": family,
                    "level": level,
                    "units" if family == "width" else "bits": BLOCK * level
                    if family == "width"
                    else level,
                    "method": method,
                    "fn3_accuracy": statistics.mean(fn3),
                    "fn3_accuracy_std": spread(fn3),
                    "independent_accuracy": statistics.mean(ind),
                    "independent_accuracy_std": spread(ind),
                    "gap_pp": gap,
                    "gap_pp_std": spread(per_seed_gap),
                    "fn3_val_accuracy": statistics.mean(v for _, v in values),
                }
            )
        ind_time = sum(times["independent/width"]) + sum(times["independent/bits"])
        ratios = {
            m: (sum(times[f"{m}/width"]) + sum(times[f"{m}/bits"])) / ind_time for m in recipes
        }
        ratios["joint"] = sum(times["joint/all"]) / ind_time
        summary_parts[dataset] = {
            "chosen_recipe": chosen,
            "validation_accuracy_by_recipe": val_mean,
            "max_gap_pp_by_method": {m: max(gaps[m]) for m in methods},
            "train_time_ratio_by_method": ratios,
            "train_seconds": {k: sum(v) for k, v in times.items()},
        }

    print(
        f"\n{'dataset':8s} {'family':6s} {'lvl':>3s} {'method':16s} "
        f"{'FN3 acc':>14s} {'indep. acc':>14s} {'gap pp':>12s}"
    )
    for r in rows:
        print(
            f"{r['dataset']:8s} {r['family']:6s} {r['level']:3d} {r['method']:16s} "
            f"{100 * r['fn3_accuracy']:7.2f} ± {100 * r['fn3_accuracy_std']:4.2f} "
            f"{100 * r['independent_accuracy']:7.2f} ± {100 * r['independent_accuracy_std']:4.2f} "
            f"{r['gap_pp']:+6.2f} ± {r['gap_pp_std']:4.2f}"
        )
    chosen = {ds: part["chosen_recipe"] for ds, part in summary_parts.items()}
    fn3_s = sum(
        part["train_seconds"][f"{chosen[ds]}/width"] + part["train_seconds"][f"{chosen[ds]}/bits"]
        for ds, part in summary_parts.items()
    )
    ind_s = sum(
        part["train_seconds"]["independent/width"] + part["train_seconds"]["independent/bits"]
        for part in summary_parts.values()
    )
    max_gap = max(part["max_gap_pp_by_method"][chosen[ds]] for ds, part in summary_parts.items())
    summary = {
        "max_accuracy_gap_pp": max_gap,
        "max_accuracy_gap_pp_definition": "largest (independent - FN3) mean test accuracy in pp "
        "over widths, bit-widths and datasets, for the recipe chosen per dataset on validation",
        "train_time_ratio": fn3_s / ind_s,
        "train_time_ratio_definition": "training time of the FN3 runs (width run + bits run) / "
        "sum of the independent runs they replace, all datasets and seeds",
        "targets": {"max_accuracy_gap_pp": "<= 1.0", "train_time_ratio": "<= 0.5"},
        "met": {"max_accuracy_gap_pp": max_gap <= 1.0, "train_time_ratio": fn3_s / ind_s <= 0.5},
        "per_dataset": summary_parts,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "per_dataset"}, indent=2))
    path = write_result(args.out, "fn3_vs_independent", config, rows, summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
