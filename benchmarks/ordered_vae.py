"""Ordered VAE on digits: one nested VAE truncated to k latents against a VAE trained with k latents.

Protocol (pre-registered, version 2): ``benchmarks/protocols/ordered_vae.md``.

Claim: a VAE whose latent dimensions carry a nested prior (the recipe of
:mod:`bayes_nest.infer.latent`: a per-example keep count, an amortized ordering unit, the keep
count summed out exactly) can be decoded from its first k latents for every k, nearly as well as
a VAE trained with only k latents, while truncating an ordinary VAE loses far more.

Per seed: binarised digits (8x8, pixel > 8/16), split 60/20/20 by the seed. Three kinds of model,
the same MLP encoder and decoder, the same optimiser and number of steps:

* ``nested``: L = 8 latents, nested mask prior (keep probability 0.8), amortized ordering unit
  (keep probabilities capped at 0.6);
* ``ordinary``: L = 8 latents, a plain VAE;
* ``independent``: one plain VAE per k with k latents.

Test ELBO (nats per image, 16 posterior samples) of every model truncated to its first k latents
(the others set to 0 and their KL dropped). Every model is early-stopped: its validation ELBO
(the mean over k = 1..8 for the nested VAE) is scored every 250 steps and the best parameters
are kept. Summary: ``max_elbo_gap_frac`` (max over k of the
mean over seeds of (independent - nested) / |independent|; target <= 0.02) and
``truncation_gain`` (sum over k < L and seeds of the ordinary VAE's excess NLL over the
independent one, divided by the nested VAE's; target >= 3).

Run ``python benchmarks/ordered_vae.py`` (full; ``--jobs 3`` runs the seeds in parallel
processes) or ``--quick`` (1 seed, few steps, k in 1, 2, 4:
a smoke test, written to ``results/ordered_vae_quick.json``). The figure of reconstructions
against k goes next to the result (``ordered_vae_reconstructions.png``).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from _bench import benchmark_args, print_table, write_result
from claims_stats import mean_se
from torch import nn
from tqdm.auto import tqdm

from bayes_nest.infer.latent import AmortizedOrderingUnit, masked_normal, nested_mask
from bayes_nest.infer.latent_checks import fit_latent

PROTOCOL_VERSION = 2
RESULTS = Path(__file__).resolve().parent / "results"
LATENT, HIDDEN, BATCH, LR, KEEP_PROB, MAX_KEEP_PROB = 8, 128, 128, 3e-3, 0.8, 0.6
FULL = {"seeds": [0, 1, 2], "steps": 8000, "ks": list(range(1, LATENT + 1))}
QUICK = {"seeds": [0], "steps": 300, "ks": [1, 2, 4]}
EVAL_SAMPLES, VAL_SAMPLES, VAL_EVERY = 16, 4, 250


def binarised_digits(seed: int) -> dict[str, torch.Tensor]:
    """Train/validation/test splits (60/20/20, shuffled by ``seed``) of binarised digits."""
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().data > 8, dtype=torch.float32)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    a, b = int(0.6 * len(x)), int(0.8 * len(x))
    return {"train": x[order[:a]], "val": x[order[a:b]], "test": x[order[b:]]}


class VAE(nn.Module):
    """Bernoulli VAE: MLP encoder to ``(μ, s)`` and MLP decoder to pixel logits."""

    def __init__(self, latent: int, features: int = 64, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, features)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.encoder(x).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-4

    def truncated_elbo(self, x: torch.Tensor, k: int, samples: int = 1) -> torch.Tensor:
        r"""ELBO per example ``(N,)`` of the model using its first ``k`` latents:
        :math:`\mathbb E_q[\log p(x \mid z \odot m_k)] - \sum_{j \le k} \mathrm{KL}_j` with
        :math:`m_k = 1[j \le k]` (a Monte Carlo average over ``samples`` draws; the KL exact)."""
        loc, scale = self.encode(x)
        mask = (torch.arange(self.latent) < k).to(x.dtype)
        z = loc + scale * torch.randn((samples,) + loc.shape)
        logits = self.decoder(z * mask)
        nll = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        kl = 0.5 * (scale**2 + loc**2 - 1) - torch.log(scale)
        return -nll.sum(-1).mean(0) - (mask * kl).sum(-1)


class NestedVAE(VAE):
    """A VAE with a nested prior over its latents and an amortized ordering unit."""

    def __init__(self, latent: int, features: int = 64, hidden: int = HIDDEN) -> None:
        super().__init__(latent, features, hidden)
        keep_encoder = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, latent)
        )
        self.unit = AmortizedOrderingUnit(
            "order", keep_encoder, latent, max_keep_prob=MAX_KEEP_PROB
        )

    def model(self, x: torch.Tensor, dataset_size: int) -> None:
        with pyro.plate("data", size=dataset_size, subsample=torch.arange(len(x))):
            mask = nested_mask("order", self.latent, keep_prob=KEEP_PROB)
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([self.latent]).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z * mask)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, dataset_size: int) -> None:
        with pyro.plate("data", size=dataset_size, subsample=torch.arange(len(x))):
            mask = self.unit(x)
            loc, scale = self.encode(x)
            pyro.sample("z", masked_normal(loc, scale, mask).to_event(1))


class BestState:
    """Early stopping: every ``VAL_EVERY`` steps score the validation split and keep the
    parameters with the best score (restored by :meth:`restore`)."""

    def __init__(self, model: nn.Module, score: Callable[[], float]) -> None:
        self.model, self.score = model, score
        self.best, self.state = -math.inf, None

    def __call__(self, step: int, loss: float | None = None) -> None:
        if step % VAL_EVERY == 0:
            with torch.no_grad():
                value = self.score()
            if value > self.best:
                self.best, self.state = value, copy.deepcopy(self.model.state_dict())

    def restore(self) -> None:
        if self.state is not None:
            self.model.load_state_dict(self.state)


def val_elbo(model: VAE, x: torch.Tensor, ks: list[int]) -> float:
    """Mean validation ELBO over the truncations ``ks`` (fixed noise)."""
    torch.manual_seed(20_000)
    return sum(float(model.truncated_elbo(x, k, VAL_SAMPLES).mean()) for k in ks) / len(ks)


def train_plain(model: VAE, data: dict[str, torch.Tensor], steps: int, seed: int) -> None:
    """Adam on minus the ELBO of all ``model.latent`` latents (one posterior sample), early
    stopped on the validation ELBO."""
    x = data["train"]
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(seed)
    keeper = BestState(model, lambda: val_elbo(model, data["val"], [model.latent]))
    for step in range(1, steps + 1):
        batch = x[torch.randint(0, len(x), (BATCH,), generator=generator)]
        optimizer.zero_grad()
        (-model.truncated_elbo(batch, model.latent).mean()).backward()
        optimizer.step()
        keeper(step)
    keeper.restore()


@torch.no_grad()
def test_elbo(model: VAE, x: torch.Tensor, k: int, seed: int) -> float:
    """Mean test ELBO (nats per image) truncated to ``k`` latents, fixed noise per seed."""
    torch.manual_seed(10_000 + seed)
    return float(model.truncated_elbo(x, k, samples=EVAL_SAMPLES).mean())


def run_seed(seed: int, steps: int, ks: list[int]) -> tuple[list[dict], NestedVAE, VAE]:
    data = binarised_digits(seed)
    torch.manual_seed(seed)
    nested = NestedVAE(LATENT)
    keeper = BestState(nested, lambda: val_elbo(nested, data["val"], list(range(1, LATENT + 1))))
    fit_latent(
        nested.model, nested.guide, data["train"], [nested], steps=steps, lr=LR,
        batch_size=BATCH, seed=seed, progress=False, callback=keeper,
    )  # fmt: skip
    keeper.restore()
    torch.manual_seed(seed)
    ordinary = VAE(LATENT)
    train_plain(ordinary, data, steps, seed)
    rows = []
    for k in ks:
        torch.manual_seed(seed)
        independent = VAE(k)
        train_plain(independent, data, steps, seed)
        elbo = {
            "nested": test_elbo(nested, data["test"], k, seed),
            "ordinary": test_elbo(ordinary, data["test"], k, seed),
            "independent": test_elbo(independent, data["test"], k, seed),
        }
        rows.append({"seed": seed, "k": k, **{f"{m}_elbo": v for m, v in elbo.items()}})
    with torch.no_grad():
        keep = nested.unit.keep_marginals(data["test"]).mean(0)
    for row in rows:
        row["nested_keep_marginal"] = float(keep[row["k"] - 1])
    return rows, nested, ordinary


def summarize(rows: list[dict], ks: list[int]) -> tuple[list[dict], dict]:
    """Per-k means over seeds and the two summary figures of the protocol."""
    table, gaps = [], []
    excess = {"nested": 0.0, "ordinary": 0.0}
    for k in ks:
        cell = [r for r in rows if r["k"] == k]
        gap = [
            (r["independent_elbo"] - r["nested_elbo"]) / abs(r["independent_elbo"]) for r in cell
        ]
        gaps.append(mean_se(gap)[0])
        entry = {"k": k, "elbo_gap_frac": mean_se(gap)[0], "elbo_gap_frac_se": mean_se(gap)[1]}
        for method in ("nested", "ordinary", "independent"):
            entry[f"{method}_elbo"], entry[f"{method}_elbo_se"] = mean_se(
                [r[f"{method}_elbo"] for r in cell]
            )
        if k < LATENT:
            for method in excess:
                excess[method] += sum(r["independent_elbo"] - r[f"{method}_elbo"] for r in cell)
        table.append(entry)
    gain = excess["ordinary"] / excess["nested"] if excess["nested"] > 0 else math.inf
    summary = {
        "max_elbo_gap_frac": max(gaps),
        "max_elbo_gap_frac_target": 0.02,
        "truncation_gain": gain,
        "truncation_gain_target": 3.0,
        "nested_excess_nll_sum": excess["nested"],
        "ordinary_excess_nll_sum": excess["ordinary"],
    }
    return table, summary


@torch.no_grad()
def reconstruction_figure(nested: NestedVAE, ordinary: VAE, x: torch.Tensor, path: Path) -> Path:
    """Posterior-mean reconstructions of a few test digits decoded from the first k latents."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    digits = x[:4]
    fig, axes = plt.subplots(2 * len(digits), LATENT + 1, figsize=(LATENT + 1, 2 * len(digits)))
    for i, image in enumerate(digits):
        for j, model in enumerate((nested, ordinary)):
            row = axes[2 * i + j]
            row[0].imshow(image.view(8, 8).numpy(), cmap="gray_r")
            if i == 0 and j == 0:
                row[0].set_title("image", fontsize=8)
            loc, _ = model.encode(image[None])
            for k in range(1, LATENT + 1):
                mask = (torch.arange(LATENT) < k).float()
                probs = torch.sigmoid(model.decoder(loc * mask))
                row[k].imshow(probs.view(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1)
                if i == 0 and j == 0:
                    row[k].set_title(f"k={k}", fontsize=8)
            row[0].set_ylabel("nested" if j == 0 else "ordinary", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _run_seed_job(job: tuple[int, int, list[int]]) -> tuple[list[dict], NestedVAE, VAE]:
    torch.set_num_threads(1)
    return run_seed(*job)


def main(argv: list[str] | None = None) -> dict:
    jobs_parser = argparse.ArgumentParser(add_help=False)
    jobs_parser.add_argument("--jobs", type=int, default=1)
    jobs, rest = jobs_parser.parse_known_args(argv)
    args = benchmark_args(
        __doc__, RESULTS / "ordered_vae.json", "1 seed, 300 steps, k in 1, 2, 4", rest
    )
    plan = QUICK if args.quick else FULL
    out = args.out
    if args.quick and out == RESULTS / "ordered_vae.json":
        out = RESULTS / "ordered_vae_quick.json"
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows: list[dict] = []
    work = [(seed, plan["steps"], plan["ks"]) for seed in plan["seeds"]]
    if jobs.jobs > 1:  # seeds in parallel processes, one torch thread each
        with ProcessPoolExecutor(min(jobs.jobs, len(work))) as pool:
            results = list(pool.map(_run_seed_job, work))
    else:
        results = [_run_seed_job(job) for job in tqdm(work, desc="seeds", leave=False)]
    for seed_rows, _, _ in results:
        rows += seed_rows
    _, nested, ordinary = results[0]
    figure = out.with_name(out.stem + "_reconstructions.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    reconstruction_figure(nested, ordinary, binarised_digits(plan["seeds"][0])["test"], figure)
    table, summary = summarize(rows, plan["ks"])
    summary["run_seconds"] = time.perf_counter() - start
    print_table(table, ["k", "nested_elbo", "ordinary_elbo", "independent_elbo", "elbo_gap_frac"])
    for key, value in summary.items():
        print(f"{key}: {value}")
    config = {
        "protocol_version": PROTOCOL_VERSION,
        "protocol": "benchmarks/protocols/ordered_vae.md",
        "quick": args.quick,
        **plan,
        "latent": LATENT,
        "architecture": f"MLP 64-{HIDDEN}-2L encoder, L-{HIDDEN}-64 Bernoulli decoder",
        "optimizer": f"Adam lr={LR}, batch {BATCH}",
        "nested": {"keep_prob": KEEP_PROB, "max_keep_prob": MAX_KEEP_PROB, "site": "count"},
        "eval_samples": EVAL_SAMPLES,
        "early_stopping": {"every_steps": VAL_EVERY, "val_samples": VAL_SAMPLES},
        "torch_threads": 1,
    }
    path = write_result(out, out.stem, config, rows + table, summary)
    print(f"wrote {path}", file=sys.stderr)
    return {"rows": rows, "table": table, "summary": summary, "path": path}


if __name__ == "__main__":
    main()
