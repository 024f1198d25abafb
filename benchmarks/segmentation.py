"""Nested Bayesian segmentation with ambiguous annotations: GED against the related approaches.

Protocol (pre-registered, version 2): ``benchmarks/protocols/segmentation.md``.

Claim (second paper): a Bayesian nested network "out-performs the related approach on
uncertainty-critical tasks in computer vision", shown there on lesion segmentation with several
disagreeing experts, scored by the generalized energy distance (GED) between the model's samples
and the annotators' masks. Here: the procedural lesion set of ``bayes_nest.data`` (four annotators
disagreeing on boundaries and on faint lesions, the annotator distribution known).

Methods, same data, recipe and epochs (Adam lr 1e-2, batch 32, one random annotator per example
and epoch): ``deterministic`` U-Net (one sample), ``mc_dropout`` (p = 0.5), ``ensemble`` of 5,
``prob_unet`` (latent 6, beta 1), ``fn3`` (nested U-Net, ordered dropout, one deterministic
sample per sub-network) and ``bnnn`` (nested U-Net, Bernoulli likelihood, weight posterior and
Downhill ordering posterior). ``oracle`` draws fresh annotations from the true distribution (the
floor of the GED). Per method: test GED, Hungarian-matched IoU, per-pixel ECE and NLL; for the
nested models the same at every sub-network of a config family (every width axis at ``k`` of
its blocks, the bottleneck at ``d`` residual blocks), with its MACs, the front chosen on the
validation GED.

Summary: ``ged_ratio_vs_prob_unet`` (BNNN full / probabilistic U-Net GED, target <= 1.0),
``ged_ratio_vs_mc_dropout`` (target <= 0.9), ``half_macs_ged_ratio`` (BNNN at <= 50 % of the
full MACs, chosen on validation, / BNNN full; target <= 1.1): means over seeds of the per-seed
ratios, with 95 % t-intervals.

Run ``python benchmarks/segmentation.py`` (full: 3 seeds in 3 parallel processes, one thread
each; within 45 minutes on a 2-core CPU) or ``--quick`` (tiny images and networks, one epoch: a
smoke test, never evidence).
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import sys
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from _bench import benchmark_args, print_table, write_result
from segmentation_baselines import ProbabilisticUNet, masks_from_probs, sample_masks, train_plain
from segmentation_summary import front_of, summarize
from tqdm.auto import tqdm

from bayes_nest import metrics
from bayes_nest.data import RandomAnnotatorDataset, as_loader, load_segmentation
from bayes_nest.infer import fit_fn3
from bayes_nest.models import UNet
from bayes_nest.nn import axes
from bayes_nest.subnet import cost, full, recalibrate_batchnorm, use

RESULTS = Path(__file__).resolve().parent / "results"
PROTOCOL_VERSION = 2
FULL = {
    "seeds": [0, 1, 2],
    "num_images": 1000,
    "size": 32,
    "widths": (8, 16, 32),
    "groups": 4,
    "bottleneck_blocks": 2,
    "epochs": 30,
    "batch_size": 32,
    "samples": 16,
    "ensemble": 5,
}
QUICK = {
    "seeds": [0, 1, 2],
    "num_images": 80,
    "size": 16,
    "widths": (4, 8),
    "groups": 2,
    "bottleneck_blocks": 1,
    "epochs": 1,
    "batch_size": 16,
    "samples": 4,
    "ensemble": 5,
}
LR = 1e-2
DROPOUT = 0.5


def unet(s: dict, *, dropout: float = 0.0) -> UNet:
    return UNet(
        1,
        1,
        s["widths"],
        bottleneck_blocks=s["bottleneck_blocks"],
        groups=s["groups"],
        dropout=dropout,
    )


def scores(samples: torch.Tensor, probs: torch.Tensor, masks: torch.Tensor) -> dict:
    """GED, Hungarian IoU, pixel ECE and NLL of binary samples and probabilities ``(S, N, H, W)``.

    For the matching, ``S`` samples that are not a multiple or divisor of the ``A`` annotations
    (5 ensemble members against 4 annotators) are each repeated ``A`` times.
    """
    samples, probs, masks = samples.cpu(), probs.cpu(), masks.cpu()
    a, num = masks.shape[1], len(samples)
    matched = samples.repeat(a, 1, 1, 1) if max(a, num) % min(a, num) else samples
    return {
        "ged": metrics.generalized_energy_distance(samples, masks),
        "hungarian_iou": metrics.hungarian_iou(matched, masks),
        "pixel_ece": metrics.pixel_ece(probs.clamp(0, 1), masks),
        "pixel_nll": metrics.pixel_nll(probs.clamp(0, 1), masks),
    }


def width_depth_configs(net: torch.nn.Module) -> list[tuple[str, dict]]:
    """Every width axis at ``k`` blocks and the bottleneck at ``d`` blocks, for all ``k, d``;
    the largest is named ``"full"``."""
    found = axes(net)
    width = max(a.size for a in found.values() if a.kind == "width")
    depth = found["bottleneck"].size if "bottleneck" in found else 1
    out = []
    for k, d in itertools.product(range(1, width + 1), range(1, depth + 1)):
        config = {n: (min(k, a.size) if a.kind == "width" else d) for n, a in found.items()}
        out.append((f"w{k}/{width}-d{d}/{depth}", config))
    out[-1] = ("full", out[-1][1])
    return out


def make_bnnn(net: torch.nn.Module, dataset_size: int):
    """A BNNN with a per-pixel Bernoulli likelihood, or ``None`` when BNNN lacks likelihoods."""
    from bayes_nest.infer import BNNN

    try:
        from bayes_nest.infer import likelihoods

        return BNNN(net, likelihood=likelihoods.Bernoulli(dataset_size))
    except (ImportError, TypeError, ValueError) as err:
        print(f"BNNN with a Bernoulli likelihood is not available: {err}", file=sys.stderr)
        return None


def nested_rows(method, model, predict, data, seed, reference) -> list[dict]:
    """Scores of every config of the family on validation and test data, with MACs (counted on
    ``reference``, a CPU copy of the architecture: MACs depend on the config only)."""
    net = model if method == "fn3" else model.net
    rows = []
    device = next(net.parameters()).device
    for name, config in width_depth_configs(net):
        recalibrate_batchnorm(net, data.train.x, config)
        net.eval()
        row = {"seed": seed, "method": method, "config": name}
        row["macs"] = cost(reference, config, "macs", input_shape=data.input_shape)
        for split in ("val", "test"):
            x, masks = data.splits[split]
            probs = predict(config, x.to(device)).cpu()
            for key, value in scores(masks_from_probs(probs), probs, masks).items():
                row[f"{split}_{key}"] = value
        rows.append(row)
    return rows


def run_seed(seed: int, s: dict, device: str = "cpu") -> list[dict]:
    data = load_segmentation(num_images=s["num_images"], size=s["size"], seed=seed)
    train = RandomAnnotatorDataset(data.train, seed=seed)
    loader = as_loader(train, s["batch_size"], shuffle=True, seed=seed)
    shape = data.input_shape
    x, masks = data.test
    x = x.to(device)
    rows = []

    def record(method, samples, probs, seconds, macs):
        row = {"seed": seed, "method": method, "config": "full", "macs": macs}
        row.update({f"test_{k}": v for k, v in scores(samples, probs, masks).items()})
        row["train_seconds"] = seconds
        rows.append(row)

    reference = unet(s)
    full_macs = cost(reference, full(reference), "macs", input_shape=shape)
    truth = torch.as_tensor(data.truth["test"].sample(s["samples"], seed=seed)).bool()
    record("oracle", truth, truth.float(), 0.0, 0.0)
    members, seconds = [], []
    for m in range(s["ensemble"]):
        torch.manual_seed(1000 * seed + m)
        start = time.perf_counter()
        members.append(unet(s))
        train_plain(members[-1], loader, epochs=s["epochs"], lr=LR, device=device)
        seconds.append(time.perf_counter() - start)
    record("deterministic", *sample_masks("deterministic", members, x, 1), seconds[0], full_macs)
    record(
        "ensemble", *sample_masks("ensemble", members, x, 1), sum(seconds), full_macs * len(members)
    )
    torch.manual_seed(1000 * seed + 100)
    start = time.perf_counter()
    dropout = unet(s, dropout=DROPOUT)
    train_plain(dropout, loader, epochs=s["epochs"], lr=LR, device=device)
    record(
        "mc_dropout",
        *sample_masks("mc_dropout", [dropout], x, s["samples"]),
        time.perf_counter() - start,
        full_macs,
    )
    torch.manual_seed(1000 * seed + 200)
    start = time.perf_counter()
    prob = ProbabilisticUNet(
        1, s["widths"], bottleneck_blocks=s["bottleneck_blocks"], groups=s["groups"]
    )
    train_plain(
        prob,
        loader,
        epochs=s["epochs"],
        lr=LR,
        loss=lambda m, xb, yb: m.loss(xb, yb),
        device=device,
    )
    record(
        "prob_unet",
        *sample_masks("prob_unet", [prob], x, s["samples"]),
        time.perf_counter() - start,
        float("nan"),
    )
    # nested models
    torch.manual_seed(1000 * seed + 300)
    start = time.perf_counter()
    fn3 = unet(s)
    fit_fn3(
        fn3,
        train,
        epochs=s["epochs"],
        loss_fn=F.binary_cross_entropy_with_logits,
        batch_size=s["batch_size"],
        sandwich="both",
        seed=seed,
        progress=False,
        device=device,
        optimizer=lambda params: torch.optim.Adam(params, lr=LR),
    )
    fn3_seconds = time.perf_counter() - start

    def fn3_predict(config, images):
        with torch.no_grad(), use(fn3, config):
            return torch.sigmoid(fn3(images))[:, 0][None]

    front = nested_rows("fn3", fn3, fn3_predict, data, seed, reference)
    front[-1]["train_seconds"] = fn3_seconds  # the full network's row
    rows += front
    torch.manual_seed(1000 * seed + 400)
    start = time.perf_counter()
    bnnn = make_bnnn(unet(s), len(train))
    if bnnn is not None:
        bnnn.to(device)
        bnnn.fit(
            train,
            epochs=s["epochs"],
            batch_size=s["batch_size"],
            optimizer=pyro.optim.Adam({"lr": LR}),
            progress=False,
            seed=seed,
        )
        bnnn_seconds = time.perf_counter() - start

        def bnnn_predict(config, images):
            with torch.no_grad():
                probs = bnnn.predict(images, config=config, num_samples=s["samples"])
            return probs.reshape(s["samples"], len(images), *images.shape[-2:])

        front = nested_rows("bnnn", bnnn, bnnn_predict, data, seed, reference)
        front[-1]["train_seconds"] = bnnn_seconds
        rows += front
    return rows


def _run_seed_one_thread(seed: int, s: dict, device: str) -> list[dict]:
    torch.set_num_threads(1)
    return run_seed(seed, s, device)


def main(argv: list[str] | None = None) -> None:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--device", default="cpu", help="torch device to train and predict on")
    extra.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="seeds run in parallel processes (default: one per seed in full mode, 1 in quick mode)",
    )
    known, rest = extra.parse_known_args(argv)
    args = benchmark_args(
        __doc__,
        RESULTS / "segmentation.json",
        "tiny images and networks, one epoch, 3 seeds (< 1 minute; a smoke test); "
        "--device DEVICE trains and predicts there (default cpu)",
        rest,
    )
    torch.set_num_threads(1)
    s = QUICK if args.quick else FULL
    jobs = known.jobs if known.jobs is not None else (1 if args.quick else len(s["seeds"]))
    if jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {jobs}")
    out = args.out
    if args.quick and out == RESULTS / "segmentation.json":
        out = RESULTS / "segmentation_quick.json"
    start = time.perf_counter()
    rows = []
    if jobs > 1:
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        with context.Pool(min(jobs, len(s["seeds"]))) as pool:
            tasks = [(seed, s, known.device) for seed in s["seeds"]]
            for seed_rows in pool.starmap(_run_seed_one_thread, tasks):
                rows += seed_rows
    else:
        for seed in tqdm(s["seeds"], desc="seeds"):
            rows += run_seed(seed, s, known.device)
    summary = summarize(rows, s["seeds"])
    summary["run_seconds"] = time.perf_counter() - start
    summary["bnnn_available"] = any(r["method"] == "bnnn" for r in rows)
    fronts = []
    for method in ("fn3", "bnnn"):
        for seed in s["seeds"]:
            family = [r for r in rows if r["method"] == method and r["seed"] == seed]
            for r in front_of(family):
                fronts.append({**r, "front": True})
    print_table(
        [r for r in rows if r["config"] == "full"],
        ["seed", "method", "config", "macs", "test_ged", "test_hungarian_iou", "test_pixel_ece"],
    )
    print_table(fronts, ["seed", "method", "config", "macs", "val_ged", "test_ged"])
    for key, value in summary.items():
        print(f"{key}: {value}")
    config = {
        "protocol_version": PROTOCOL_VERSION,
        "protocol": "benchmarks/protocols/segmentation.md",
        "quick": args.quick,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
        "optimizer": f"Adam lr={LR}",
        "mc_dropout_rate": DROPOUT,
        "prob_unet": {"latent_dim": 6, "beta": 1.0},
        "fn3": {"keep_prob": 0.9, "distribution": "geometric", "sandwich": "both"},
        "bnnn": {"likelihood": "Bernoulli", "defaults": "BNNN defaults"},
        "torch_threads": 1,
        "device": known.device,
        "jobs": jobs,
    }
    name = "segmentation_quick" if args.quick else "segmentation"
    on_front = {(f["method"], f["seed"], f["config"]) for f in fronts}
    for r in rows:
        r["front"] = (r["method"], r["seed"], r["config"]) in on_front
    path = write_result(out, name, config, rows, summary)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
