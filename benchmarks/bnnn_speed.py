"""Epoch time of BNNN training by SVI against FN3, Pyro's generic ELBO and a plain Pyro BNN.

Claims (DESIGN §6, issue "one probabilistic program"):

* ``epoch_time_ratio`` -- a BNNN epoch through ``bnnn.fit`` (SVI with the trace-free
  ``NestedMeanFieldELBO``) over an FN3 epoch (``FN3Trainer``) of the same nested MLP: target
  <= 2.5;
* ``trace_elbo_over_fast_ratio`` -- the same BNNN epoch with Pyro's generic ``Trace_ELBO`` over
  the fast ELBO: what the generic path costs (no target);
* ``epoch_time_ratio_vs_pyro_bnn`` -- the BNNN epoch over the same MLP written as a plain
  (non-nested) Bayesian network the way Pyro documents it: ``PyroModule`` layers with
  ``PyroSample`` Normal(0, 1) weights, ``AutoNormal``, ``SVI`` with ``Trace_ELBO``, the
  observations in a subsampled plate: target <= 0.5.

Setup: MLP 64 -> 128 -> 128 -> 10 (16 blocks per hidden layer), batch 128, 1,400 examples
(random inputs and labels: timing only), Adam, one thread. The contestants run one epoch each in
turn within every repeat (interleaved, so a change of machine load hits all of them), timed by
the thread's CPU time; every ratio is the median over repeats of the per-repeat ratio.

Run ``python benchmarks/bnnn_speed.py`` (full) or ``--quick`` (under a minute, written to
``results/bnnn_speed_quick.json``).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from _bench import benchmark_args, median_ratio, print_table, write_result
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from torch import nn

from bayes_nest.data import as_loader
from bayes_nest.infer import BNNN, FN3Trainer
from bayes_nest.models import MLP

RESULTS = Path(__file__).resolve().parent / "results" / "bnnn_speed.json"
SIZES = (64, 128, 128, 10)
BATCH, EXAMPLES, GROUPS = 128, 1400, 16


class PyroBNN(PyroModule):
    """A plain Bayesian MLP as Pyro documents it: PyroSample weights, Categorical likelihood."""

    def __init__(self, sizes: tuple[int, ...], dataset_size: int) -> None:
        super().__init__()
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layer = PyroModule[nn.Linear](a, b)
            layer.weight = PyroSample(dist.Normal(0.0, 1.0).expand([b, a]).to_event(2))
            layer.bias = PyroSample(dist.Normal(0.0, 1.0).expand([b]).to_event(1))
            layers.append(layer)
        self.layers = PyroModule[nn.ModuleList](layers)
        self.dataset_size = dataset_size

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        logits = self.layers[-1](x)
        with pyro.plate("data", size=self.dataset_size, subsample=torch.arange(len(x))):
            pyro.sample("obs", dist.Categorical(logits=logits), obs=y)
        return logits


def _timed(fn) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def main() -> None:
    args = benchmark_args(__doc__, RESULTS, "5 repeats (under a minute)")
    torch.set_num_threads(1)
    repeats = 5 if args.quick else 15
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(EXAMPLES, SIZES[0], generator=gen)
    y = torch.randint(0, SIZES[-1], (EXAMPLES,), generator=gen)
    hidden = list(SIZES[1:-1])

    torch.manual_seed(0)
    fn3 = FN3Trainer(MLP(SIZES[0], hidden, SIZES[-1], groups=GROUPS), seed=0, progress=False,
                     batch_size=BATCH)  # fmt: skip
    fast = BNNN(MLP(SIZES[0], hidden, SIZES[-1], groups=GROUPS), name="fast")
    generic = BNNN(MLP(SIZES[0], hidden, SIZES[-1], groups=GROUPS), name="generic")
    trace_elbo = Trace_ELBO()
    adam = {"lr": 1e-3}
    fast_optim, generic_optim = pyro.optim.Adam(adam), pyro.optim.Adam(adam)

    peer = PyroBNN(SIZES, EXAMPLES)
    peer_guide = AutoNormal(peer)
    peer_svi = SVI(peer, peer_guide, pyro.optim.Adam(adam), Trace_ELBO())
    peer_loader = as_loader((x, y), BATCH, shuffle=True, seed=0)

    def peer_epoch() -> None:
        for xb, yb in peer_loader:
            peer_svi.step(xb, yb)

    contestants = {
        "FN3 (FN3Trainer)": lambda: fn3.fit((x, y), epochs=fn3.epoch + 1),
        "BNNN fit, NestedMeanFieldELBO": lambda: fast.fit(
            (x, y), epochs=fast.epoch + 1, batch_size=BATCH, optimizer=fast_optim,
            progress=False, seed=0,
        ),
        "BNNN fit, Pyro Trace_ELBO": lambda: generic.fit(
            (x, y), epochs=generic.epoch + 1, batch_size=BATCH, optimizer=generic_optim,
            loss=trace_elbo, progress=False, seed=0,
        ),
        "plain Pyro BNN (PyroSample, AutoNormal, Trace_ELBO)": peer_epoch,
    }  # fmt: skip
    for fn in contestants.values():  # warm-up epoch (optimizer state, first traces)
        fn()
    times: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(repeats):
        for name, fn in contestants.items():
            times[name].append(_timed(fn))

    names = list(contestants)
    fn3_t, fast_t, generic_t, peer_t = (times[n] for n in names)
    rows = [
        {
            "contestant": name,
            "median_epoch_s": statistics.median(values),
            "min_epoch_s": min(values),
            "max_epoch_s": max(values),
            "ratio_vs_fn3": median_ratio(values, fn3_t),
        }
        for name, values in times.items()
    ]
    print_table(rows)
    summary = {
        "epoch_time_ratio": median_ratio(fast_t, fn3_t),
        "epoch_time_ratio_target": "<= 2.5",
        "trace_elbo_over_fast_ratio": median_ratio(generic_t, fast_t),
        "epoch_time_ratio_vs_pyro_bnn": median_ratio(fast_t, peer_t),
        "epoch_time_ratio_vs_pyro_bnn_target": "<= 0.5",
        "definitions": "median over repeats of per-repeat ratios of epoch CPU times (one "
        "thread): BNNN fit with the fast ELBO / FN3; BNNN with Trace_ELBO / with the fast ELBO; "
        "BNNN with the fast ELBO / plain Pyro BNN",
    }
    summary["epoch_time_ratio_met"] = summary["epoch_time_ratio"] <= 2.5
    summary["epoch_time_ratio_vs_pyro_bnn_met"] = summary["epoch_time_ratio_vs_pyro_bnn"] <= 0.5
    for key, value in summary.items():
        print(f"{key}: {value}")
    config = {
        "architecture": " -> ".join(map(str, SIZES)),
        "groups": GROUPS,
        "batch_size": BATCH,
        "examples_per_epoch": EXAMPLES,
        "repeats": repeats,
        "optimizer": "Adam lr=1e-3",
        "threads": 1,
        "clock": "thread CPU time",
        "quick": args.quick,
    }
    out = (
        RESULTS.with_name("bnnn_speed_quick.json")
        if args.quick and args.out == RESULTS
        else args.out
    )
    name = "bnnn_speed_quick" if args.quick else "bnnn_speed"
    path = write_result(out, name, config, rows, summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
