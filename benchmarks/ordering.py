"""Does ordered dropout rank the blocks? First-k blocks versus random k-subsets.

Protocol (pre-registered, version 1): ``benchmarks/protocols/ordering.md``.

Claim: a network trained with ordered dropout (FN3) or a learned Downhill ordering (BNNN) keeps
its most useful blocks first, so keeping the first ``k`` blocks of every hidden layer is much more
accurate than keeping a random ``k``-subset; the same architecture trained plainly has no such
order (the control).

Setup, per dataset (digits, MNIST-1D) and seed: ``MLP(d, [128, 128], 10, groups=8)`` trained three
ways with the same recipe (Adam lr 1e-3, batch 128, the same epochs): ``fn3`` (``FN3Trainer``,
geometric ordered dropout, keep rate 0.9), ``bnnn`` (``BNNN``, prior and initial keep 0.9,
``kl_scale`` 1, 8 posterior samples per prediction, no keep-marginal scaling) and ``plain``
(every block kept). For every ``k = 1..8``: test accuracy of the prefix sub-network (blocks
``1..k`` in both layers) and the mean accuracy over random ``k``-subsets, drawn independently per
layer and applied as a per-block 0/1 tensor mask on each width axis.

Summary: ``fn3_prefix_minus_random_pp`` (target >= 10), ``plain_prefix_minus_random_pp``
(control, about 0), ``bnnn_prefix_minus_random_pp``: mean over datasets, ``k = 1..7`` (at
``k = 8`` both are the full network) and seeds, in percentage points, each with a 95 % t-interval
over seeds; ``fn3_minus_plain_gap_pp``: the paired difference of the FN3 and plain gaps.

Run ``python benchmarks/ordering.py`` (full: 5 seeds) or ``--quick`` (1 seed, a few epochs,
4 random draws; a smoke test).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _bench import benchmark_args, print_table, write_result
from claims_stats import mean_se, paired_interval, t_interval
from tqdm.auto import tqdm

from bayes_nest import metrics
from bayes_nest.data import as_loader, load_dataset
from bayes_nest.infer import BNNN, FN3Trainer, predict_probs
from bayes_nest.models import MLP
from bayes_nest.nn import axes, masked

PROTOCOL_VERSION = 1
RESULTS = Path(__file__).resolve().parent / "results"
HIDDEN, GROUPS, LR, BATCH, SAMPLES = [128, 128], 8, 1e-3, 128, 8
EPOCHS = {"digits": 40, "mnist1d": 30}
QUICK_EPOCHS = {"digits": 8, "mnist1d": 4}
METHODS = ("fn3", "bnnn", "plain")


def new_net(bundle, seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(bundle.num_features, HIDDEN, bundle.num_classes, groups=GROUPS)


def train_fn3(bundle, seed: int, epochs: int) -> MLP:
    net = new_net(bundle, seed)
    FN3Trainer(
        net,
        optimizer=lambda p: torch.optim.Adam(p, lr=LR),
        keep_prob=0.9,
        batch_size=BATCH,
        seed=seed,
        progress=False,
    ).fit(bundle.train, epochs=epochs)
    return net


def train_plain(bundle, seed: int, epochs: int) -> MLP:
    """The same network with every block kept: Adam on cross-entropy, no masks."""
    net = new_net(bundle, seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    net.train()
    for _ in range(epochs):
        for x, y in as_loader(bundle.train, BATCH, shuffle=True, seed=seed):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
    return net.eval()


def train_bnnn(bundle, seed: int, epochs: int) -> BNNN:
    bnnn = BNNN(new_net(bundle, seed), prior_keep_prob=0.9, init_keep_prob=0.9, kl_scale=1.0)
    bnnn.fit(bundle.train, epochs=epochs, batch_size=BATCH, seed=seed, progress=False)
    return bnnn


def prefix_mask(k: int) -> torch.Tensor:
    """Per-block 0/1 multipliers keeping blocks ``1..k``."""
    return (torch.arange(GROUPS) < k).float()


def random_mask(k: int, generator: torch.Generator) -> torch.Tensor:
    """Per-block 0/1 multipliers keeping a uniformly random ``k``-subset of the blocks."""
    mask = torch.zeros(GROUPS)
    mask[torch.randperm(GROUPS, generator=generator)[:k]] = 1.0
    return mask


def masked_accuracy(method: str, model, masks: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy with tensor ``masks`` on the width axes (BNNN: ``SAMPLES`` posterior draws)."""
    net = model.net if method == "bnnn" else model
    with masked(net, masks), torch.no_grad():
        if method == "bnnn":
            net.eval()
            probs = torch.stack([torch.softmax(net(x), -1) for _ in range(SAMPLES)])
        else:
            probs = predict_probs(net, x)
    return metrics.accuracy(probs, y)


def run_seed(dataset: str, seed: int, epochs: int, draws: int) -> list[dict]:
    bundle = load_dataset(dataset, seed=seed)
    x, y = bundle.test
    models = {
        "fn3": train_fn3(bundle, seed, epochs),
        "bnnn": train_bnnn(bundle, seed, epochs),
        "plain": train_plain(bundle, seed, epochs),
    }
    names = list(axes(models["fn3"]))
    rows = []
    for method, model in models.items():
        for k in range(1, GROUPS + 1):
            torch.manual_seed(10_000 * seed + k)  # BNNN's weight draws
            prefix = masked_accuracy(method, model, dict.fromkeys(names, prefix_mask(k)), x, y)
            generator = torch.Generator().manual_seed(1000 * seed + k)
            random = statistics.mean(
                masked_accuracy(method, model, {n: random_mask(k, generator) for n in names}, x, y)
                for _ in range(draws)
            )
            rows.append(
                {
                    "kind": "seed",
                    "dataset": dataset,
                    "seed": seed,
                    "method": method,
                    "k": k,
                    "prefix_accuracy": prefix,
                    "random_accuracy": random,
                    "prefix_minus_random_pp": 100 * (prefix - random),
                }
            )
    return rows


def cells(rows: list[dict]) -> list[dict]:
    """Per dataset, method and k: mean ± s.e. over seeds, and the paired prefix - random gap."""
    out = []
    for dataset, method, k in sorted({(r["dataset"], r["method"], r["k"]) for r in rows}):
        sel = sorted(
            (r for r in rows if (r["dataset"], r["method"], r["k"]) == (dataset, method, k)),
            key=lambda r: r["seed"],
        )
        prefix = [r["prefix_accuracy"] for r in sel]
        random = [r["random_accuracy"] for r in sel]
        gap = paired_interval(prefix, random, scale=100.0)
        out.append(
            {
                "kind": "cell",
                "dataset": dataset,
                "method": method,
                "k": k,
                "seeds": len(sel),
                "prefix_accuracy": mean_se(prefix)[0],
                "prefix_accuracy_se": mean_se(prefix)[1],
                "random_accuracy": mean_se(random)[0],
                "random_accuracy_se": mean_se(random)[1],
                "prefix_minus_random_pp": gap["mean"],
                "prefix_minus_random_pp_low": gap["low"],
                "prefix_minus_random_pp_high": gap["high"],
            }
        )
    return out


def seed_gaps(rows: list[dict], method: str) -> list[float]:
    """Per seed: mean over datasets and k = 1..7 of prefix - random (pp)."""
    seeds = sorted({r["seed"] for r in rows})
    return [
        statistics.mean(
            r["prefix_minus_random_pp"]
            for r in rows
            if r["method"] == method and r["seed"] == s and r["k"] < GROUPS
        )
        for s in seeds
    ]


def summarize(rows: list[dict]) -> dict:
    summary: dict = {}
    gaps = {m: seed_gaps(rows, m) for m in METHODS}
    for method in METHODS:
        ci = t_interval(gaps[method])
        summary[f"{method}_prefix_minus_random_pp"] = ci["mean"]
        summary[f"{method}_prefix_minus_random_pp_interval"] = [ci["low"], ci["high"]]
        summary[f"{method}_prefix_minus_random_pp_se"] = ci["se"]
    diff = paired_interval(gaps["fn3"], gaps["plain"])
    summary["fn3_minus_plain_gap_pp"] = diff["mean"]
    summary["fn3_minus_plain_gap_pp_interval"] = [diff["low"], diff["high"]]
    low, high = summary["plain_prefix_minus_random_pp_interval"]
    if diff["low"] is None:  # one seed: no interval, no verdict
        summary["verdict"] = None
    else:
        summary["verdict"] = {
            "supported": summary["fn3_prefix_minus_random_pp"] >= 10.0 and diff["low"] > 0.0,
            "control_near_zero": low <= 2.0 and high >= -2.0,
        }
    summary["targets"] = {
        "fn3_prefix_minus_random_pp": ">= 10",
        "plain_prefix_minus_random_pp": "about 0 (control)",
    }
    return summary


def main(argv: list[str] | None = None) -> None:
    args = benchmark_args(
        __doc__, RESULTS / "ordering.json", "1 seed, few epochs, 4 random draws (< 1 minute)", argv
    )
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2, 3, 4]
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    draws = 4 if args.quick else 20
    out = args.out
    if args.quick and out == RESULTS / "ordering.json":
        out = RESULTS / "ordering_quick.json"
    rows = []
    start = time.perf_counter()
    for dataset, n_epochs in epochs.items():
        for seed in tqdm(seeds, desc=dataset, leave=False):
            rows += run_seed(dataset, seed, n_epochs, draws)
    table = cells(rows)
    summary = summarize(rows)
    summary["run_seconds"] = time.perf_counter() - start
    print_table(
        [r for r in table if r["k"] < GROUPS],
        ["dataset", "method", "k", "prefix_accuracy", "random_accuracy", "prefix_minus_random_pp"],
    )
    for key, value in summary.items():
        print(f"{key}: {value}")
    config = {
        "protocol_version": PROTOCOL_VERSION,
        "protocol": "benchmarks/protocols/ordering.md",
        "quick": args.quick,
        "seeds": seeds,
        "epochs": epochs,
        "random_draws_per_k": draws,
        "architecture": f"MLP(d, {HIDDEN}, 10, groups={GROUPS})",
        "optimizer": f"Adam lr={LR}, batch {BATCH}",
        "fn3": {"keep_prob": 0.9, "distribution": "geometric"},
        "bnnn": {
            "prior_keep_prob": 0.9,
            "init_keep_prob": 0.9,
            "kl_scale": 1.0,
            "predict_samples": SAMPLES,
            "scale_by_keep_marginals": False,
        },
        "torch_threads": 1,
    }
    name = "ordering_quick" if args.quick else "ordering"
    path = write_result(out, name, config, rows + table, summary)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
