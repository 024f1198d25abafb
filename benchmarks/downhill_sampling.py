"""Cost of drawing and scoring Downhill masks versus Pyro's relaxed categorical by hand.

Claim: :class:`bayes_nest.distributions.Downhill` costs about what a user pays for writing the
same thing by hand from Pyro parts (target: worst ratio <= 1.25), and the cached keep-count path
draws fixed-prior hard masks much faster than building a distribution per draw.

Timed operation (both sides, per call): build the distribution from keep logits, draw
``rsample((batch,))``, evaluate ``log_prob`` of the draw. Ours: ``Downhill(keep_logits=...,
temperature=0.5)``. Baseline: ``log q`` written by hand (log-sigmoid cumulative sums), Pyro's
``RelaxedOneHotCategorical(0.5, logits=log q)``, the mask ``1 - cumsum(y)[:-1]``, and
``log_prob(y)``. ``grad`` says whether the keep logits require gradients (a learned guide)
or not (a fixed prior); no backward pass is timed. The straight-through rows compare ``DownhillStraightThrough`` with
``RelaxedOneHotCategoricalStraightThrough`` the same way. Times are CPU time of the calling thread. Argument/sample validation is disabled
in both (``pyro.validation_enabled(False)``), torch runs on one thread, the callables are timed
interleaved and the ratio is the median of per-repeat ratios (ours / baseline).

Prior rows: one hard mask per training step from a fixed nested-dropout prior (keep prob 0.95):
a ``DownhillStraightThrough`` built per draw versus ``KeepCount.sample_hard_mask`` on one cached
instance (one uniform and a search over the cumulative ``q``).

Run ``python benchmarks/downhill_sampling.py`` (full) or ``--quick`` (under a minute).
"""

from __future__ import annotations

from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from _bench import (
    benchmark_args,
    interleaved_timings,
    median_ratio,
    print_table,
    write_result,
)

from bayes_nest.distributions import Downhill, DownhillStraightThrough, KeepCount

RESULTS = Path(__file__).resolve().parent / "results" / "downhill_sampling.json"
TEMPERATURE = 0.5


def log_q_by_hand(keep_logits: torch.Tensor) -> torch.Tensor:
    log_keep = F.logsigmoid(keep_logits).cumsum(-1)
    return F.pad(log_keep, (1, 0)) + F.pad(F.logsigmoid(-keep_logits), (0, 1))


def ours(cls, keep_logits: torch.Tensor, batch: int):
    def run():
        downhill = cls(keep_logits=keep_logits, temperature=TEMPERATURE)
        mask = downhill.rsample((batch,))
        return downhill.log_prob(mask)

    return run


def baseline(cls, keep_logits: torch.Tensor, batch: int):
    temperature = torch.tensor(TEMPERATURE)

    def run():
        relaxed = cls(temperature, logits=log_q_by_hand(keep_logits))
        y = relaxed.rsample((batch,))
        mask = 1 - y.cumsum(-1)[..., :-1]
        return mask, relaxed.log_prob(y)

    return run


def prior_rows(sizes, repeats: int, min_seconds: float) -> list[dict]:
    rows = []
    for size in sizes:
        keep_probs = torch.full((size,), 0.95)
        cached = KeepCount(keep_probs=keep_probs)

        def per_draw(keep_probs=keep_probs):
            return DownhillStraightThrough(keep_probs=keep_probs, temperature=TEMPERATURE).rsample()

        timings = interleaved_timings(
            {"per_draw": per_draw, "cached": cached.sample_hard_mask},
            repeats=repeats,
            min_seconds=min_seconds,
        )
        rows.append(
            {
                "table": "prior_mask",
                "D": size,
                "per_draw_us": 1e6 * min(timings["per_draw"]),
                "cached_us": 1e6 * min(timings["cached"]),
                "speedup": median_ratio(timings["per_draw"], timings["cached"]),
            }
        )
    return rows


def main() -> None:
    args = benchmark_args(__doc__, RESULTS, "fewer repeats (under a minute)")

    torch.set_num_threads(1)
    torch.manual_seed(0)
    repeats, min_seconds = (5, 0.005) if args.quick else (21, 0.05)
    sizes, batches = (8, 32, 128), (1, 256, 4096)
    variants = {
        "relaxed": (Downhill, dist.RelaxedOneHotCategorical),
        "straight_through": (DownhillStraightThrough, dist.RelaxedOneHotCategoricalStraightThrough),
    }
    rows = []
    with pyro.validation_enabled(False):
        for variant, (our_cls, base_cls) in variants.items():
            for requires_grad in (False, True):
                for size in sizes:
                    keep_logits = (torch.randn(size) + 2.0).requires_grad_(requires_grad)
                    for batch in batches:
                        timings = interleaved_timings(
                            {
                                "ours": ours(our_cls, keep_logits, batch),
                                "baseline": baseline(base_cls, keep_logits, batch),
                            },
                            repeats=repeats,
                            min_seconds=min_seconds,
                        )
                        rows.append(
                            {
                                "table": variant,
                                "grad": requires_grad,
                                "D": size,
                                "batch": batch,
                                "ours_us": 1e6 * sorted(timings["ours"])[repeats // 2],
                                "baseline_us": 1e6 * sorted(timings["baseline"])[repeats // 2],
                                "ratio": median_ratio(timings["ours"], timings["baseline"]),
                            }
                        )
        rows += prior_rows(sizes, repeats, min_seconds)

    print("rsample + log_prob, one thread, validation off (us per call; ratio = ours/baseline)")
    print_table([r for r in rows if r["table"] != "prior_mask"])
    print("\nfixed-prior hard mask per training step (us per draw)")
    print_table([r for r in rows if r["table"] == "prior_mask"])

    def worst(table: str) -> float:
        return max(r["ratio"] for r in rows if r["table"] == table)

    summary = {
        "time_ratio_vs_relaxed": worst("relaxed"),
        "time_ratio_vs_relaxed_straight_through": worst("straight_through"),
        "target_time_ratio": 1.25,
        "prior_mask_cached_speedup": min(r["speedup"] for r in rows if r["table"] == "prior_mask"),
    }
    config = {
        "quick": args.quick,
        "sizes": list(sizes),
        "batches": list(batches),
        "temperature": TEMPERATURE,
        "repeats": repeats,
        "min_seconds_per_measurement": min_seconds,
        "threads": 1,
        "clock": "thread CPU time (time.thread_time)",
        "validation": "disabled in both (pyro.validation_enabled(False))",
        "timed": "build distribution from keep logits + rsample((batch,)) + log_prob (no backward)",
        "grad": "keep logits with and without requires_grad",
        "baseline": "hand-written log q + pyro RelaxedOneHotCategorical(+StraightThrough) + cumsum",
    }
    path = write_result(args.out, "downhill_sampling", config, rows, summary)
    print("\nsummary:", summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
