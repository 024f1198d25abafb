"""Greedy front search versus exhaustive, random and evolutionary search on a trained FN3 MLP.

Claim: on a trained fully nested network, the greedy search (DESIGN §3 point 6) finds, for every
budget, a sub-network within 0.5 pp of the best one (found by scoring all configs) while scoring
at least 20× fewer configs, and beats random and evolutionary search given the same number of
score evaluations.

Setup: scikit-learn's digits (offline), split 50/30/20 train/val/test; an MLP 64 → 64 → 64 → 64
→ 10 whose three hidden layers are width axes of 16 groups each (4096 configs), trained with
FN3 ordered dropout (:func:`bayes_nest.infer.fit_fn3`, geometric keep rate 0.9, sandwich rule).
The score of a config is its validation accuracy (:class:`bayes_nest.search.Evaluator`); the cost
is MACs. Searches: ``greedy`` (default: downward and upward walks meeting halfway, all axes per step),
``greedy down`` (one downward walk, the classic greedy slimming), ``exhaustive`` (all 4096), ``random`` and ``evolutionary`` (Once-for-All style, five
budgets: the smallest network, 25 %, 50 %, 75 % of the budget range and the full network),
the last two with as many evaluations as ``greedy``. For 20 budgets evenly spaced from
the smallest to the full network's MACs we take each search's best config within the budget and
report its validation score (what the searches optimise) and its test accuracy. Gaps are averaged
over seeds (each seed: new split, new training) before taking the maximum over budgets.

With ``--bits B`` the model is an MLP 64 → 64 → 64 → 10 (two width axes of 16 groups) whose
weights are also nested in ``B`` quantization bits (one shared bits axis; ``16·16·B`` configs).
MACs do not change with the bits, so this checks that the searches still choose the bits by the
score; the rows also record the bits of each search's choice.

Run ``python benchmarks/search_quality.py`` (full: 3 seeds) or ``--quick`` (1 seed, shorter
training; under a minute).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import torch
from _bench import write_result

from bayes_nest.data import load_dataset
from bayes_nest.infer import fit_fn3
from bayes_nest.models import MLP
from bayes_nest.search import Evaluator, evolutionary, exhaustive, greedy, random_search
from bayes_nest.subnet import CostModel

RESULTS = Path(__file__).resolve().parent / "results"
SEARCHES = ("greedy", "greedy_down", "exhaustive", "random", "evolutionary")


def build(bits: int | None) -> MLP:
    if bits is None:
        return MLP(64, [64, 64, 64], 10, groups=16)
    return MLP(64, [64, 64], 10, groups=16, bits=bits)


def run_seed(
    seed: int, epochs: int, n_budgets: int, bits: int | None = None
) -> tuple[list[dict], dict]:
    data = load_dataset("digits", seed=seed, val_fraction=0.3, test_fraction=0.2)
    torch.manual_seed(seed)
    net = build(bits)
    adam = functools.partial(torch.optim.Adam, lr=1e-3)  # the recorded runs' rate
    fit_fn3(
        net, data.train, epochs=epochs, seed=seed, sandwich="both", optimizer=adam, progress=False
    )
    score = Evaluator(net, data.val)
    test = Evaluator(net, data.test)
    macs = CostModel(net, "macs", (64,))
    fronts, seconds = {}, {}

    def timed(name, fn):
        start = time.perf_counter()
        fronts[name] = fn()
        seconds[name] = time.perf_counter() - start

    timed("greedy", lambda: greedy(net, score, cost=macs, progress=False))
    timed("greedy_down", lambda: greedy(net, score, cost=macs, direction="down", progress=False))
    timed("exhaustive", lambda: exhaustive(net, score, cost=macs, progress=False))
    n_eval = fronts["greedy"].evaluations
    timed(
        "random",
        lambda: random_search(net, score, cost=macs, evaluations=n_eval, seed=seed, progress=False),
    )
    lo, hi = fronts["exhaustive"].points[0].cost, fronts["exhaustive"].points[-1].cost
    budgets = [lo + (hi - lo) * i / (n_budgets - 1) for i in range(n_budgets)]
    evo_budgets = [budgets[i] for i in (0, n_budgets // 4, n_budgets // 2, 3 * n_budgets // 4)]
    timed(
        "evolutionary",
        lambda: evolutionary(
            net,
            score,
            cost=macs,
            evaluations=n_eval,
            budgets=evo_budgets + [hi],
            seed=seed,
            population=8,
            progress=False,
        ),
    )
    rows = []
    for budget in budgets:
        row = {"seed": seed, "budget_macs": budget}
        for name, front in fronts.items():
            best = front.best(budget)
            row[f"{name}_val"] = best.score
            row[f"{name}_test"] = test(best.config)
            if bits is not None:
                row[f"{name}_bits"] = best.config["bits"]
        rows.append(row)
    stats = {
        "seed": seed,
        "full_val_accuracy": score({}),
        "evaluations": {name: f.evaluations for name, f in fronts.items()},
        "search_seconds": seconds,
    }
    return rows, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, short training")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--bits", type=int, default=None, help="nest the weights in this many bits too"
    )
    args = parser.parse_args()
    if args.bits is not None and args.bits < 1:
        parser.error(f"--bits must be a positive int, got {args.bits}")
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2]
    epochs = 120 if args.quick else 300
    n_budgets = 20
    config = {
        "dataset": "digits (50/30/20 split)",
        "model": (
            "MLP(64, [64, 64, 64], 10, groups=16): 3 width axes, 4096 configs"
            if args.bits is None
            else f"MLP(64, [64, 64], 10, groups=16, bits={args.bits}): 2 width axes and a "
            f"bits axis, {256 * args.bits} configs"
        ),
        "training": f"fit_fn3, {epochs} epochs, keep_prob 0.9, sandwich both, Adam 1e-3",
        "score": "validation accuracy",
        "cost": "MACs",
        "budgets": f"{n_budgets} evenly spaced from the smallest to the full network",
        "seeds": seeds,
        "quick": args.quick,
    }
    rows, stats = [], []
    for seed in seeds:
        seed_rows, seed_stats = run_seed(seed, epochs, n_budgets, args.bits)
        rows += seed_rows
        stats.append(seed_stats)
        print(
            f"seed {seed}: full val acc {seed_stats['full_val_accuracy']:.4f}, "
            f"evaluations {seed_stats['evaluations']}"
        )

    def mean_gap(split: str, name: str) -> list[float]:
        """Per budget index: mean over seeds of (exhaustive - search) in pp."""
        out = []
        for i in range(n_budgets):
            at = rows[i::n_budgets]
            out.append(
                100 * statistics.mean(r[f"exhaustive_{split}"] - r[f"{name}_{split}"] for r in at)
            )
        return out

    def mean_score(name: str, split: str = "val") -> float:
        return 100 * statistics.mean(r[f"{name}_{split}"] for r in rows)

    gap = mean_gap("val", "greedy")
    gap_down = mean_gap("val", "greedy_down")
    test_gap = mean_gap("test", "greedy")
    evals = {n: statistics.mean(s["evaluations"][n] for s in stats) for n in SEARCHES}
    summary = {
        "max_gap_to_exhaustive_pp": max(gap),
        "mean_gap_to_exhaustive_pp": statistics.mean(gap),
        "max_single_seed_gap_pp": max(100 * (r["exhaustive_val"] - r["greedy_val"]) for r in rows),
        "max_test_gap_to_exhaustive_pp": max(test_gap),
        "mean_test_gap_to_exhaustive_pp": statistics.mean(test_gap),
        "greedy_down_max_gap_pp": max(gap_down),
        "greedy_down_mean_gap_pp": statistics.mean(gap_down),
        "evaluation_ratio": evals["exhaustive"] / evals["greedy"],
        "greedy_down_evaluation_ratio": evals["exhaustive"] / evals["greedy_down"],
        "mean_val_score_pp": {n: mean_score(n) for n in SEARCHES},
        "mean_test_accuracy_pp": {n: mean_score(n, "test") for n in SEARCHES},
        "beats_random": mean_score("greedy") > mean_score("random"),
        "beats_evolutionary": mean_score("greedy") > mean_score("evolutionary"),
        "advantage_over_random_pp": mean_score("greedy") - mean_score("random"),
        "advantage_over_evolutionary_pp": mean_score("greedy") - mean_score("evolutionary"),
        "mean_evaluations": evals,
        "per_seed": stats,
        **(
            {}
            if args.bits is None
            else {
                f"{name}_bits_chosen": sorted({r[f"{name}_bits"] for r in rows})
                for name in SEARCHES
            }
        ),
        "definitions": {
            "gap": "validation accuracy of exhaustive's best config within a budget minus "
            "greedy's, in pp, averaged over seeds; max/mean over the budgets",
            "test_gap": "the same on test accuracy of the selected configs",
            "evaluation_ratio": "score evaluations of exhaustive / of greedy",
            "beats_*": "greedy's validation score averaged over budgets and seeds is higher",
        },
        "targets": {"max_gap_to_exhaustive_pp": "<= 0.5", "evaluation_ratio": ">= 20"},
    }
    print(
        f"{'budget MACs':>12s} " + " ".join(f"{n:>13s}" for n in SEARCHES) + "  (val acc %, seed 0)"
    )
    for r in rows[:n_budgets]:
        print(
            f"{r['budget_macs']:12.0f} "
            + " ".join(f"{100 * r[f'{n}_val']:13.2f}" for n in SEARCHES)
        )
    printable = {k: v for k, v in summary.items() if k not in ("per_seed", "definitions")}
    print(json.dumps(printable, indent=1))
    stem = "search_quality" if args.bits is None else f"search_quality_bits{args.bits}"
    out = args.out or RESULTS / (f"{stem}_quick.json" if args.quick else f"{stem}.json")
    write_result(out, "search_quality", config, rows, summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
