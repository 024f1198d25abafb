"""Calibration, OOD detection and training cost of BNNN versus FN3 at every width.

Claim: a Bayesian nested network (learned Downhill ordering, mean-field weights, SVI) gives
better calibrated sub-networks than FN3 (fixed ordered dropout, point weights) at most widths,
detects out-of-distribution inputs at least as well, and costs a bounded factor more per epoch.

Setup, per dataset (scikit-learn digits, MNIST-1D) and seed: classes 8 and 9 are held out
(``bayes_nest.data.held_out_classes``); every model is trained on the other 8 classes with the
same ``MLP(in, [128, 128], 8, groups=8)`` architecture, Adam (lr 3e-3), batch 128 and the same
number of epochs:

* **FN3** -- ``fit_fn3`` with ordered dropout (geometric, keep rate 0.9);
* **BNNN** -- ``BNNN(net, prior_keep_prob=0.9, init_keep_prob=0.9, kl_scale=0.1)`` fitted with
  ``TraceMeanField_ELBO``; 8 posterior samples per prediction (truncated sub-network with each
  kept block scaled by its posterior keep marginal, ``scale_by_keep_marginals=True``, BNNN's
  weight-scaling inference; weights by local reparameterization). These settings (``kl_scale``,
  the tempering of the weight KL; the learning rate; the posterior's initial scale; the prior
  keep probability; the number of prediction samples; the marginal scaling) were chosen on the
  *validation* split by ``bnnn_vs_fn3_tuning.py`` (its docstring gives the grid and the rule;
  ``results/bnnn_vs_fn3_tuning.json`` the table), never on the test split;
* **MC dropout** -- a plain MLP of the full width with dropout 0.1 after each hidden layer, 8
  dropout samples at test time (full width only: it is not nested);
* **deep ensemble** -- 5 plain MLPs of the full width, probabilities averaged (full width only).

Widths: the uniform sub-networks keeping ``n = 1..8`` blocks in both hidden layers (the front of
the width axis). Metrics on the in-distribution test split (``bayes_nest.metrics``): accuracy,
NLL, ECE (15 bins), Brier; OOD AUROC/AUPR with predictive entropy as the score against (a) the
held-out classes' test examples and (b) Gaussian-noise inputs with the test split's per-feature
mean and variance (``corrupt(..., "gaussian_noise", 1.0)``). Training time: epoch seconds from
the training histories, and a separate interleaved timing of one training epoch of each method
(median of repeats, CPU time of one thread).

Summary: ``ece_ratio`` (BNNN mean ECE over datasets, seeds and widths / FN3's), ``widths_better
_ece_frac`` (fraction of dataset x width cells where BNNN's seed-mean ECE is lower),
``min_auroc_gain_pp`` (smallest BNNN - FN3 seed-mean AUROC over datasets, OOD sets and widths,
in percentage points), ``epoch_time_ratio`` (BNNN / FN3 epoch time, interleaved timing).
Spread over seeds: ``ece_ratio_seed_min`` / ``_max`` (the ECE ratio of each seed alone) and
``auroc_gain_se_pp`` (the mean over cells of the standard error of a cell's seed-mean AUROC
gain, the noise level against which ``min_auroc_gain_pp`` is a minimum over 32 cells).

Run ``python benchmarks/bnnn_vs_fn3.py`` (full: 5 seeds) or ``--quick`` (1 seed, fewer epochs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from torch import nn

from bayes_nest import metrics
from bayes_nest._bench import interleaved_timings, print_table, write_result
from bayes_nest.data import as_loader, corrupt, held_out_classes, load_dataset
from bayes_nest.infer.bnnn import BNNN
from bayes_nest.infer.evaluate import predict_probs
from bayes_nest.infer.fn3 import FN3Trainer
from bayes_nest.models import MLP

RESULTS = Path(__file__).resolve().parent / "results"
GROUPS, HIDDEN, LR, BATCH, SAMPLES, ENSEMBLE = 8, [128, 128], 3e-3, 128, 8, 5
BNNN_KW = {"prior_keep_prob": 0.9, "init_keep_prob": 0.9, "kl_scale": 0.1}
SCALE = True  # scale_by_keep_marginals at prediction (chosen on the validation split)
EPOCHS = {"digits": 40, "mnist1d": 30}
QUICK_EPOCHS = {"digits": 10, "mnist1d": 5}
HELD_OUT = [8, 9]


def plain_mlp(features: int, classes: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    previous = features
    for width in HIDDEN:
        layers += [nn.Linear(previous, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        previous = width
    layers.append(nn.Linear(previous, classes))
    return nn.Sequential(*layers)


def train_plain(model: nn.Module, train, epochs: int, seed: int) -> list[float]:
    """Adam on cross-entropy; returns the seconds of every epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loader = as_loader(train, BATCH, shuffle=True, seed=seed)
    seconds = []
    model.train()
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        seconds.append(time.perf_counter() - start)
    return seconds


@torch.no_grad()
def mc_dropout_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.train()  # dropout on
    return torch.stack([torch.softmax(model(x), -1) for _ in range(SAMPLES)])


def width_configs(net: nn.Module) -> list[tuple[int, dict[str, int]]]:
    return [(n, {f"hidden.{i}": n for i in range(len(HIDDEN))}) for n in range(1, GROUPS + 1)]


def scores(probs_in, labels, probs_heldout, probs_noise) -> dict[str, float]:
    """In-distribution metrics and OOD detection by predictive entropy."""
    ent_in = metrics.predictive_entropy(probs_in)
    row = {
        "accuracy": metrics.accuracy(probs_in, labels),
        "nll": metrics.nll(probs_in, labels),
        "ece": metrics.expected_calibration_error(probs_in, labels),
        "brier": metrics.brier_score(probs_in, labels),
    }
    for name, probs_out in (("heldout", probs_heldout), ("noise", probs_noise)):
        ent_out = metrics.predictive_entropy(probs_out)
        row[f"auroc_{name}"] = metrics.ood_auroc(ent_in, ent_out)
        row[f"aupr_{name}"] = metrics.ood_aupr(ent_in, ent_out)
    return row


def evaluation_sets(dataset: str, seed: int, split: str = "test"):
    """The in-distribution data and the three evaluation inputs of one split.

    Returns ``(data, labels, (x_in, x_heldout, x_noise))``: ``split`` (``"test"`` or ``"val"``)
    of the 8 kept classes, the held-out classes' examples of the same split, and Gaussian-noise
    inputs with that split's per-feature mean and variance.
    """
    bundle = load_dataset(dataset, seed=seed)
    held = held_out_classes(bundle, HELD_OUT)
    data = held.in_distribution
    x_in, labels = getattr(data, split)
    x_held = getattr(held.ood, split).x
    x_noise = corrupt(x_in, "gaussian_noise", 1.0, seed=seed)
    return data, labels, (x_in, x_held, x_noise)


def train_fn3(data, seed: int, epochs: int) -> tuple[nn.Module, float, float]:
    """FN3 with geometric ordered dropout; returns the network, total and median epoch seconds."""
    torch.manual_seed(seed)
    net = MLP(data.num_features, HIDDEN, data.num_classes, groups=GROUPS)
    trainer = FN3Trainer(
        net,
        optimizer=lambda p: torch.optim.Adam(p, lr=LR),
        keep_prob=0.9,
        batch_size=BATCH,
        seed=seed,
        progress=False,
    )
    start = time.perf_counter()
    history = trainer.fit(data.train, epochs=epochs)
    return net, time.perf_counter() - start, statistics.median(history.seconds)


def train_bnnn(data, seed: int, epochs: int, progress: bool = False, **overrides):
    """BNNN with ``BNNN_KW`` (updated by ``overrides``; ``lr`` sets Adam's learning rate)."""
    kw = {**BNNN_KW, **overrides}
    lr = kw.pop("lr", LR)
    torch.manual_seed(seed)
    bnnn = BNNN(MLP(data.num_features, HIDDEN, data.num_classes, groups=GROUPS), **kw)
    start = time.perf_counter()
    history = bnnn.fit(
        data.train,
        epochs=epochs,
        optimizer=pyro.optim.Adam({"lr": lr}),
        batch_size=BATCH,
        seed=seed,
        progress=progress,
    )
    return bnnn, time.perf_counter() - start, statistics.median(history.seconds)


def bnnn_probs(bnnn, x: torch.Tensor, config, samples: int = SAMPLES, scale: bool = SCALE):
    """Posterior predictive of one sub-network (``samples`` draws)."""
    return bnnn.predict(x, config=config, num_samples=samples, scale_by_keep_marginals=scale)


def run_one(dataset: str, seed: int, epochs: int, progress: bool) -> list[dict]:
    data, y_test, sets = evaluation_sets(dataset, seed, "test")
    k, f = data.num_classes, data.num_features
    rows = []

    def add(method, width, probs, train_seconds, epoch_seconds):
        row = {"kind": "seed", "dataset": dataset, "seed": seed, "method": method, "width": width}
        row.update(scores(probs[0], y_test, probs[1], probs[2]))
        row.update(train_seconds=train_seconds, epoch_seconds=epoch_seconds)
        rows.append(row)

    net, fn3_time, fn3_epoch = train_fn3(data, seed, epochs)
    for n, config in width_configs(net):
        add("fn3", n, [predict_probs(net, x, config) for x in sets], fn3_time, fn3_epoch)

    bnnn, bnnn_time, bnnn_epoch = train_bnnn(data, seed, epochs, progress)
    for n, config in width_configs(bnnn.net):
        add("bnnn", n, [bnnn_probs(bnnn, x, config) for x in sets], bnnn_time, bnnn_epoch)

    torch.manual_seed(seed)
    dropout = plain_mlp(f, k, dropout=0.1)
    seconds = train_plain(dropout, data.train, epochs, seed)
    add(
        "mc_dropout",
        GROUPS,
        [mc_dropout_probs(dropout, x) for x in sets],
        sum(seconds),
        statistics.median(seconds),
    )

    members, member_seconds = [], []
    for m in range(ENSEMBLE):
        torch.manual_seed(1000 * seed + m)
        member = plain_mlp(f, k)
        member_seconds.append(train_plain(member, data.train, epochs, 1000 * seed + m))
        members.append(member.eval())
    with torch.no_grad():
        probs = [torch.stack([torch.softmax(m(x), -1) for m in members]) for x in sets]
    epoch = statistics.median(sum(s) for s in zip(*member_seconds, strict=True))
    add("ensemble", GROUPS, probs, sum(map(sum, member_seconds)), epoch)
    return rows


def epoch_timing(repeats: int) -> dict[str, float]:
    """Interleaved CPU time of one training epoch on digits (8 classes), FN3 vs BNNN."""
    data = held_out_classes(load_dataset("digits"), HELD_OUT).in_distribution
    torch.manual_seed(0)
    fn3 = FN3Trainer(
        MLP(data.num_features, HIDDEN, data.num_classes, groups=GROUPS),
        optimizer=lambda p: torch.optim.Adam(p, lr=LR),
        keep_prob=0.9,
        batch_size=BATCH,
        seed=0,
        progress=False,
    )
    bnnn = BNNN(MLP(data.num_features, HIDDEN, data.num_classes, groups=GROUPS), **BNNN_KW)
    state = {"fn3": 0, "bnnn": 0}

    def fn3_epoch():
        state["fn3"] += 1
        fn3.fit(data.train, epochs=state["fn3"])

    def bnnn_epoch():
        state["bnnn"] += 1
        bnnn.fit(data.train, epochs=state["bnnn"], batch_size=BATCH, progress=False, seed=0)

    t = interleaved_timings(
        {"fn3": fn3_epoch, "bnnn": bnnn_epoch}, repeats=repeats, min_seconds=0.0, warmup=1
    )
    ratios = [b / f for b, f in zip(t["bnnn"], t["fn3"], strict=True)]
    return {
        "fn3_epoch_s": statistics.median(t["fn3"]),
        "bnnn_epoch_s": statistics.median(t["bnnn"]),
        "epoch_time_ratio": statistics.median(ratios),
    }


def aggregate(rows: list[dict]) -> list[dict]:
    """Seed means (and the ECE spread) per dataset, method and width."""
    keys = sorted({(r["dataset"], r["method"], r["width"]) for r in rows})
    out = []
    for dataset, method, width in keys:
        sel = [
            r for r in rows if (r["dataset"], r["method"], r["width"]) == (dataset, method, width)
        ]
        row = {"kind": "mean", "dataset": dataset, "method": method, "width": width}
        row["seeds"] = len(sel)
        for metric in (
            "accuracy",
            "nll",
            "ece",
            "brier",
            "auroc_heldout",
            "auroc_noise",
            "aupr_heldout",
            "aupr_noise",
            "epoch_seconds",
        ):
            row[metric] = float(np.mean([r[metric] for r in sel]))
        row["ece_std"] = float(np.std([r["ece"] for r in sel]))
        out.append(row)
    return out


def summarize(table: list[dict], timing: dict[str, float], rows: list[dict]) -> dict:
    def cell(dataset, method, width):
        return next(
            r for r in table if (r["dataset"], r["method"], r["width"]) == (dataset, method, width)
        )

    datasets = sorted({r["dataset"] for r in table})
    widths = range(1, GROUPS + 1)
    pairs = [(cell(d, "bnnn", w), cell(d, "fn3", w)) for d in datasets for w in widths]
    summary = {
        "ece_ratio": float(
            np.mean([b["ece"] for b, _ in pairs]) / np.mean([f["ece"] for _, f in pairs])
        ),
        "widths_better_ece_frac": float(np.mean([b["ece"] < f["ece"] for b, f in pairs])),
        "min_auroc_gain_pp": float(
            min(
                100 * (b[f"auroc_{s}"] - f[f"auroc_{s}"])
                for b, f in pairs
                for s in ("heldout", "noise")
            )
        ),
        "mean_auroc_gain_pp": float(
            np.mean(
                [
                    100 * (b[f"auroc_{s}"] - f[f"auroc_{s}"])
                    for b, f in pairs
                    for s in ("heldout", "noise")
                ]
            )
        ),
        "mean_accuracy_gain_pp": float(
            np.mean([100 * (b["accuracy"] - f["accuracy"]) for b, f in pairs])
        ),
        "mean_nll_ratio": float(
            np.mean([b["nll"] for b, _ in pairs]) / np.mean([f["nll"] for _, f in pairs])
        ),
        **timing,
    }
    for d in datasets:
        sub = [(b, f) for b, f in pairs if b["dataset"] == d]
        summary[f"ece_ratio_{d}"] = float(
            np.mean([b["ece"] for b, _ in sub]) / np.mean([f["ece"] for _, f in sub])
        )
    seeds = sorted({r["seed"] for r in rows})
    per_seed = []
    for seed in seeds:
        b = [r["ece"] for r in rows if r["seed"] == seed and r["method"] == "bnnn"]
        f = [r["ece"] for r in rows if r["seed"] == seed and r["method"] == "fn3"]
        per_seed.append(float(np.mean(b) / np.mean(f)))
    summary["ece_ratio_seed_min"], summary["ece_ratio_seed_max"] = min(per_seed), max(per_seed)
    auroc = {
        (r["dataset"], r["seed"], r["width"], r["method"], s): r[f"auroc_{s}"]
        for r in rows
        for s in ("heldout", "noise")
    }
    errors = []
    for d, w, s in ((d, w, s) for d in datasets for w in widths for s in ("heldout", "noise")):
        gains = [
            100 * (auroc[(d, seed, w, "bnnn", s)] - auroc[(d, seed, w, "fn3", s)]) for seed in seeds
        ]
        if len(gains) > 1:
            errors.append(float(np.std(gains, ddof=1) / np.sqrt(len(gains))))
    summary["auroc_gain_se_pp"] = float(np.mean(errors)) if errors else float("nan")
    summary["targets"] = {
        "ece_ratio": "<= 0.7",
        "widths_better_ece_frac": ">= 0.75",
        "min_auroc_gain_pp": ">= 0",
        "epoch_time_ratio": "<= 2.5",
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, few epochs (< 1 minute)")
    parser.add_argument("--progress", action="store_true", help="show BNNN training progress")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2, 3, 4]
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    rows = []
    for dataset, n_epochs in epochs.items():
        for seed in seeds:
            start = time.perf_counter()
            rows += run_one(dataset, seed, n_epochs, args.progress)
            print(f"{dataset} seed {seed}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    timing = epoch_timing(repeats=3 if args.quick else 7)
    table = aggregate(rows)
    summary = summarize(table, timing, rows)
    print_table(
        table,
        [
            "dataset",
            "method",
            "width",
            "accuracy",
            "nll",
            "ece",
            "ece_std",
            "brier",
            "auroc_heldout",
            "auroc_noise",
            "epoch_seconds",
        ],
    )
    print()
    for key, value in summary.items():
        print(f"{key}: {value}")
    config = {
        "quick": args.quick,
        "seeds": seeds,
        "epochs": epochs,
        "architecture": f"MLP(in, {HIDDEN}, 8, groups={GROUPS}, always_on=1)",
        "optimizer": f"Adam lr={LR}",
        "batch_size": BATCH,
        "held_out_classes": HELD_OUT,
        "bnnn": {
            **BNNN_KW,
            "loss": "mean_field",
            "predict_samples": SAMPLES,
            "scale_by_keep_marginals": SCALE,
        },
        "fn3": {"keep_prob": 0.9, "distribution": "geometric"},
        "mc_dropout": {"p": 0.1, "samples": SAMPLES},
        "ensemble_size": ENSEMBLE,
        "ood_score": "predictive entropy",
        "torch_threads": 1,
    }
    name = "bnnn_vs_fn3_quick" if args.quick else "bnnn_vs_fn3"
    path = write_result(RESULTS / f"{name}.json", name, config, rows + table, summary)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
