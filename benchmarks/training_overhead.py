"""Epoch time of nested (FN3) training versus plain training of the same full network.

Claim: training a fully nested MLP with ordered dropout costs no more per epoch than training
the plain network of the same full width, because a drawn sub-network is *sliced* (only the kept
blocks are computed), which pays for the bookkeeping of the nested layers and the mask draws.

Baseline: an ``nn.Sequential`` of ``nn.Linear``/``ReLU`` layers (64 → 256 → 256 → 10 by default,
DESIGN §8), trained by a loop with the same bookkeeping as the FN3 trainer (loss and accuracy
read back every step). Ours: :class:`bayes_nest.infer.FN3Trainer` on ``MLP(64, [256, 256], 10,
groups=16)``; its ``History.seconds`` is the time of the epoch's training steps. Both use Adam,
batch 128, one thread, the same synthetic data (random inputs and labels: timing only), and are
run interleaved; we report the median epoch time of each and their ratio.

Run ``python benchmarks/training_overhead.py`` (full) or ``--quick`` (under a minute).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _bench import benchmark_args, write_result
from torch import nn

from bayes_nest.data import as_loader
from bayes_nest.infer import FN3Trainer
from bayes_nest.models import MLP

RESULTS = Path(__file__).resolve().parent / "results" / "training_overhead.json"


def plain_mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


def plain_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader) -> float:
    """One epoch of plain training with the FN3 trainer's per-step bookkeeping."""
    model.train()
    loss_sum, correct = 0.0, 0
    start = time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        value = float(loss.detach())
        if value != value:  # same finiteness check cost as the trainer
            raise FloatingPointError
        loss.backward()
        correct += int((out.detach().argmax(-1) == y).sum())
        optimizer.step()
        loss_sum += value
    return time.perf_counter() - start


def main() -> None:
    args = benchmark_args(__doc__, RESULTS, "few repeats (under a minute)")
    torch.set_num_threads(1)

    hidden, groups, batch = 256, 16, 128
    examples = 4096 if args.quick else 8192
    repeats = 5 if args.quick else 15
    config = {
        "architecture": f"64 -> {hidden} -> {hidden} -> 10",
        "groups": groups,
        "always_on": 1,
        "batch_size": batch,
        "examples_per_epoch": examples,
        "repeats": repeats,
        "optimizer": "Adam lr=1e-3",
        "threads": 1,
        "quick": args.quick,
    }
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(examples, 64, generator=gen)
    y = torch.randint(0, 10, (examples,), generator=gen)

    torch.manual_seed(0)
    baseline = plain_mlp([64, hidden, hidden, 10])
    base_opt = torch.optim.Adam(baseline.parameters(), lr=1e-3)
    base_loader = as_loader((x, y), batch, shuffle=True, seed=0)

    variants = {
        "fn3 geometric pi=0.9": {"keep_prob": 0.9},
        "fn3 geometric pi=0.97": {"keep_prob": 0.97},
        "fn3 uniform": {"distribution": "uniform"},
        "fn3 geometric pi=0.9 + sandwich both": {"keep_prob": 0.9, "sandwich": "both"},
    }
    trainers = {}
    for name, kwargs in variants.items():
        torch.manual_seed(0)
        net = MLP(64, [hidden, hidden], 10, groups=groups)
        trainers[name] = FN3Trainer(net, seed=0, progress=False, batch_size=batch, **kwargs)

    torch.manual_seed(0)
    nested_full = MLP(64, [hidden, hidden], 10, groups=groups)  # no masks set: full width
    nested_opt = torch.optim.Adam(nested_full.parameters(), lr=1e-3)

    times: dict[str, list[float]] = {"plain nn.Linear MLP": []} | {n: [] for n in variants}
    times["nested MLP, full width, no dropout"] = []
    # Warm-up, then interleave the variants so drift in machine load hits all of them alike.
    plain_epoch(baseline, base_opt, base_loader)
    plain_epoch(nested_full, nested_opt, base_loader)
    for trainer in trainers.values():
        trainer.fit((x, y), epochs=trainer.epoch + 1)
    for _ in range(repeats):
        times["plain nn.Linear MLP"].append(plain_epoch(baseline, base_opt, base_loader))
        for name, trainer in trainers.items():
            history = trainer.fit((x, y), epochs=trainer.epoch + 1)
            times[name].append(history.seconds[-1])
        times["nested MLP, full width, no dropout"].append(
            plain_epoch(nested_full, nested_opt, base_loader)
        )

    base = statistics.median(times["plain nn.Linear MLP"])
    rows = []
    for name, values in times.items():
        med = statistics.median(values)
        rows.append(
            {
                "variant": name,
                "median_epoch_s": med,
                "min_epoch_s": min(values),
                "max_epoch_s": max(values),
                "ratio_vs_plain": med / base,
            }
        )
    print(f"{'variant':40s} {'median epoch (s)':>17s} {'ratio':>7s}")
    for row in rows:
        print(f"{row['variant']:40s} {row['median_epoch_s']:17.4f} {row['ratio_vs_plain']:7.3f}")
    summary = {
        "epoch_time_ratio": rows[1]["ratio_vs_plain"],
        "epoch_time_ratio_definition": "median epoch time of FN3 training (geometric, pi=0.9) "
        "/ median epoch time of the plain nn.Linear MLP of the same full width",
        "target": "<= 1.0",
        "met": rows[1]["ratio_vs_plain"] <= 1.0,
    }
    print(json.dumps(summary, indent=2))
    path = write_result(args.out, "training_overhead", config, rows, summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
