"""Find the best sub-network for a budget and ship it as a plain PyTorch model.

Story: one trained nested network, several devices with different compute budgets. The greedy
search walks from the full network down, one block at a time, and returns a Pareto front of
validation score against MACs in about (number of axes) x (number of blocks) evaluations; for
every budget we take the best point, export it as a standalone ``nn.Module`` (weights sliced,
batch-norm statistics recalibrated for that sub-network), save it with ``torch.export`` and check
that the exported model computes exactly what the nested one computes -- and is faster.

The search can also be uncertainty-aware: with ``score="ece_penalized"`` it ranks sub-networks
by accuracy minus the expected calibration error.

Run::

    python examples/search_and_export.py --out exported
    python examples/search_and_export.py --quick --out exported
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bayes_nest import metrics
from bayes_nest.app import ModelSpec, evaluate_config, export_subnet, fit, search_front
from bayes_nest.app.tables import config_summary, format_table
from bayes_nest.data import load_dataset
from bayes_nest.search import SCORES


def median_latency(fn, x: torch.Tensor, repeats: int = 30) -> float:
    times = []
    with torch.no_grad():
        fn(x)
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller network, fewer epochs")
    parser.add_argument("--out", help="folder for the exported files (default: a temporary one)")
    parser.add_argument("--score", default=SCORES[0], choices=SCORES)
    args = parser.parse_args(argv)

    hidden, groups, epochs = ([64, 64], 8, 10) if args.quick else ([256, 256], 16, 40)
    data = load_dataset("digits")
    # batch norm in the hidden layers: exported sub-networks get their own statistics
    spec = ModelSpec("mlp", {"hidden": hidden, "groups": groups, "norm": "batch"})
    model = fit(spec, data, "fn3", epochs=epochs)
    # batch norm: every sub-network is scored with its own recalibrated statistics
    front = search_front(model, data.val, score=args.score, calibration=data.train)
    print(
        f"{len(front.points)} sub-networks scored with {front.evaluations} evaluations; "
        f"{len(front.pareto().points)} on the Pareto front"
    )

    out = Path(args.out or tempfile.mkdtemp(prefix="bayes-nest-export-"))
    full_macs = model.cost_model("macs")({})
    x, y = data.test
    model.module.eval()
    full_latency = median_latency(model.module, x)
    rows = []
    for share in (0.1, 0.25, 0.5):
        point = front.best(share * full_macs)
        paths = export_subnet(
            model,
            point.config,
            out / f"subnet_{int(100 * share)}.pt",
            calibration=data.train,
            force=True,
        )
        program = torch.export.load(paths["program"]).module()  # needs no bayes_nest
        with torch.no_grad():
            probs = torch.softmax(program(x), -1)
        # the nested network, recalibrated for this config, computes the same function
        scores, nested = evaluate_config(
            model, data.test, point.config, return_probs=True, calibration=data.train
        )
        plain = torch.load(paths["module"], weights_only=False)
        rows.append(
            {
                "budget": f"{100 * share:g}%",
                "config": config_summary(model.module, point.config),
                "macs": point.cost,
                "accuracy": metrics.accuracy(probs, y),
                "ece": metrics.expected_calibration_error(probs, y),
                "max |diff|": f"{(probs - nested[0]).abs().max().item():.1e}",
                "speedup": full_latency / median_latency(plain, x),
            }
        )
        assert abs(rows[-1]["accuracy"] - scores["accuracy"]) < 1e-9
    print(format_table(rows, list(rows[0])))
    print(f"exported files in {out}")
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
