"""Training throughput (images/s) of a nested ResNet against the plain ResNet, and of BNNN SVI.

Claim: training a fully nested ResNet with ordered dropout (FN3) processes at least 0.95 times
as many images per second as training the plain network of the same full size
(``nested_over_plain_throughput >= 0.95``), because sampled sub-networks are *sliced* (only the
kept channels and blocks are computed), which pays for the bookkeeping of the nested layers.

Setup: CIFAR-shaped synthetic input (3×32×32, 10 classes; timing only), one process, SGD with
momentum. Variants, measured interleaved in one run (medians of repeats, ratios per repeat):

* ``plain`` -- the baseline: the full network exported to ordinary ``nn.Conv2d`` /
  ``nn.BatchNorm2d`` / ``nn.Linear`` layers (:func:`bayes_nest.subnet.export`, identical
  architecture and parameter count), trained by a plain PyTorch loop;
* ``nested full`` -- the nested ResNet with every block kept (the nested layers' own overhead);
* ``nested FN3`` -- one step of :class:`~bayes_nest.infer.FN3Trainer` (the training loop's step)
  (one-process job): a keep count drawn per axis (truncated geometric, π = 0.9), the sliced
  sub-network trained; this is the ratio the claim is about;
* ``BNNN SVI`` -- one SVI step (``TraceMeanField_ELBO``) of a BNNN around the same ResNet
  (Bayesian convolutions with local reparameterization: two convolutions per layer; Adam, as the
  likelihood is scaled to 50 000 examples), reported against the plain network, without a target;
* on CUDA also ``plain + AMP`` and ``nested FN3 + AMP`` (float16 autocast with a gradient scaler).

On CPU the clock is the thread's CPU time with one torch thread (robust to a busy machine); on
CUDA it is wall time with a device synchronisation after every step.

Run ``python benchmarks/gpu_throughput.py`` (full; on a GPU machine it picks the GPU preset) or
``--quick`` (CPU, under a minute; writes ``results/gpu_throughput_quick.json``). ``--device``
forces a device.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from _bench import interleaved_timings, median_ratio, print_table, write_result
from pyro.infer import TraceMeanField_ELBO

from bayes_nest.infer.bnnn import BNNN
from bayes_nest.infer.distributed import DistContext
from bayes_nest.infer.fn3 import FN3Trainer
from bayes_nest.infer.training import grad_scaler
from bayes_nest.models import ResNet
from bayes_nest.subnet import export, full

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_throughput.json"
RESULTS_QUICK = RESULTS.with_name("gpu_throughput_quick.json")
PRESETS = {
    "quick": {"widths": (8, 16, 32), "depths": (2, 2, 2), "groups": 4, "batch": 32},
    "cpu": {"widths": (16, 32, 64), "depths": (2, 2, 2), "groups": 8, "batch": 64},
    "gpu": {"widths": (64, 128, 256), "depths": (2, 2, 2), "groups": 8, "batch": 256},
}
TARGET = 0.95


def _sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def plain_step(model, optimizer, scaler, amp, x, y):
    """One plain training step with the trainer's bookkeeping (loss read back)."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.float16) if amp else contextlib.nullcontext():
        out = model(x)
        loss = F.cross_entropy(out, y)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def _synchronized(fn, device):
    if device.type != "cuda":
        return fn

    def call():
        fn()
        torch.cuda.synchronize(device)

    return call


def build(preset: dict, device: torch.device, amp_rows: bool):
    """The callables to time (one training step each) and a description of each."""
    widths, depths, groups = preset["widths"], preset["depths"], preset["groups"]
    batch = preset["batch"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    ctx = DistContext(device=device)

    def nested():
        torch.manual_seed(0)
        return ResNet(10, 3, widths, depths, groups=groups).to(device)

    steps = {}
    reference = nested()
    plain = export(reference, full(reference), input_shape=(3, 32, 32)).to(device).train()
    steps["plain"] = functools.partial(plain_step, plain, _sgd(plain.parameters()), None, False)

    full_net = nested().train()
    steps["nested full"] = functools.partial(
        plain_step, full_net, _sgd(full_net.parameters()), None, False
    )

    trainer = FN3Trainer(
        nested(), ctx=ctx, optimizer=_sgd, keep_prob=0.9, seed=0, progress=False, batch_size=batch
    )
    trainer.module.train()
    steps["nested FN3"] = trainer.train_step

    torch.manual_seed(0)
    bnnn = BNNN(ResNet(10, 3, widths, depths, groups=groups), temperature=0.5).to(device)
    bnnn.model.dataset_size = 50_000
    bnnn.net.train()
    elbo = TraceMeanField_ELBO()
    # Adam at Pyro's default rate: the likelihood is scaled to 50 000 examples, too steep for SGD.
    svi_opt = torch.optim.Adam(bnnn.parameters(), lr=1e-3)

    def svi_step(x, y):
        with pyro.validation_enabled(False):
            svi_opt.zero_grad(set_to_none=True)
            loss = elbo.differentiable_loss(bnnn.model, bnnn.guide, x, y)
            loss.backward()
            svi_opt.step()
        value = float(loss.detach())
        if value != value:
            raise FloatingPointError("BNNN SVI loss became NaN; the timing would be meaningless")
        return value

    steps["BNNN SVI"] = svi_step

    if amp_rows:
        amp_plain = export(reference, full(reference), input_shape=(3, 32, 32)).to(device)
        scaler = grad_scaler()
        steps["plain + AMP"] = functools.partial(
            plain_step, amp_plain.train(), _sgd(amp_plain.parameters()), scaler, True
        )
        amp_trainer = FN3Trainer(
            nested(), ctx=ctx, optimizer=_sgd, seed=0, progress=False, batch_size=batch, amp=True
        )
        amp_trainer.module.train()
        steps["nested FN3 + AMP"] = amp_trainer.train_step
    return {name: _synchronized(functools.partial(fn, x, y), device) for name, fn in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small CPU run (under a minute)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--out", type=Path, help="result file (default: results/gpu_throughput[_quick].json)"
    )
    args = parser.parse_args()
    if args.device:
        device = torch.device(args.device)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        # No cuDNN autotuning: sliced sub-networks have many distinct shapes, each of which would
        # be tuned anew, so it would time the tuner rather than training.
        torch.backends.cudnn.benchmark = False
        clock = time.perf_counter
        preset_name = "quick" if args.quick else "gpu"
    else:
        torch.set_num_threads(1)
        clock = time.thread_time
        preset_name = "quick" if args.quick else "cpu"
    preset = PRESETS[preset_name]
    repeats = 5 if args.quick else 11
    min_seconds = 0.2 if args.quick else 1.0
    steps = build(preset, device, amp_rows=device.type == "cuda")
    timings = interleaved_timings(
        steps, repeats=repeats, min_seconds=min_seconds, warmup=3, clock=clock
    )

    batch = preset["batch"]
    base = timings["plain"]
    rows = []
    for name, seconds in timings.items():
        baseline = timings["plain + AMP"] if name == "nested FN3 + AMP" else base
        rows.append(
            {
                "variant": name,
                "images_per_s": batch / statistics.median(seconds),
                "median_step_ms": 1e3 * statistics.median(seconds),
                "throughput_vs_plain": median_ratio(baseline, seconds),
            }
        )
    print_table(rows)
    by = {row["variant"]: row for row in rows}
    summary = {
        "nested_over_plain_throughput": by["nested FN3"]["throughput_vs_plain"],
        "nested_over_plain_throughput_definition": (
            "median over repeats of (plain step time / FN3 step time): images/s of ordered-dropout "
            "training of the nested ResNet over images/s of training the exported plain ResNet "
            "of the same full size"
        ),
        "target": f">= {TARGET}",
        "met": by["nested FN3"]["throughput_vs_plain"] >= TARGET,
        "nested_full_over_plain_throughput": by["nested full"]["throughput_vs_plain"],
        "bnnn_over_plain_throughput": by["BNNN SVI"]["throughput_vs_plain"],
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
    }
    if "nested FN3 + AMP" in by:
        summary["nested_over_plain_throughput_amp"] = by["nested FN3 + AMP"]["throughput_vs_plain"]
    config = {
        "preset": preset_name,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in preset.items()},
        "input": [3, 32, 32],
        "classes": 10,
        "keep_prob": 0.9,
        "optimizer": "SGD lr=0.05 momentum=0.9",
        "repeats": repeats,
        "min_seconds_per_repeat": min_seconds,
        "clock": "thread_time, 1 thread" if device.type == "cpu" else "perf_counter + sync",
        "device": str(device),
        "quick": args.quick,
    }
    for key, value in summary.items():
        print(f"{key}: {value}")
    out = args.out or (RESULTS_QUICK if args.quick else RESULTS)
    print(f"wrote {write_result(out, 'gpu_throughput', config, rows, summary)}")


if __name__ == "__main__":
    main()
