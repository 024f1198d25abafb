"""The CUDA path end to end: FN3 training with and without mixed precision, and BNNN SVI, on a GPU.

Claim: the training loop runs on CUDA in float32, float16 autocast (with a gradient scaler) and
bfloat16 autocast, and gives networks as good as the float32 run; a BNNN trains by SVI on CUDA.
Checked on scikit-learn's digits (a nested MLP and a nested ConvNet on 8x8 images): every run's
losses are finite and its full-network test accuracy is within 3 points of the float32 run of
the same seed (``amp_max_accuracy_drop_pp`` <= 3), and the BNNN's test accuracy is at least 0.85.

Run ``python benchmarks/cuda_check.py`` on a machine with a CUDA device (``--quick``: fewer
epochs). Without CUDA it exits with a message and writes nothing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from _bench import benchmark_args, print_table, write_result

from bayes_nest.app import ModelSpec, evaluate_config, fit
from bayes_nest.data import load_dataset

DEVICE = "cuda"
RESULTS = Path(__file__).resolve().parent / "results" / "cuda_check.json"
ACCURACY_DROP_TARGET_PP = 3.0
BNNN_ACCURACY_TARGET = 0.85


RECIPE = {"fn3": {"sandwich": "full"}, "bnnn": {"temperature": 0.5}}
"""Training options beyond the library's defaults: those of the recorded run (the command line's
defaults then)."""


def _run(spec: ModelSpec, data, method: str, amp, epochs: int) -> dict:
    torch.manual_seed(0)
    start = time.perf_counter()
    model = fit(
        spec,
        data,
        method,
        progress=False,
        device=DEVICE,
        amp=amp,
        epochs=epochs,
        seed=0,
        **RECIPE[method],
    )
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    metrics = evaluate_config(model, data.test, None, ood=None)
    history = model.history if isinstance(model.history, dict) else model.history.as_dict()
    losses = [float(value) for value in history.get("loss", [])]
    return {
        "model": spec.name,
        "method": method,
        "amp": str(amp or "float32"),
        "epochs": epochs,
        "seconds": round(seconds, 2),
        "accuracy": float(metrics["accuracy"]),
        "nll": float(metrics["nll"]),
        "losses_finite": bool(losses) and bool(torch.isfinite(torch.tensor(losses)).all()),
    }


def main() -> None:
    args = benchmark_args(__doc__, RESULTS, "two epochs per run")
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return
    epochs = 2 if args.quick else 20
    flat = load_dataset("digits", seed=0)
    images = load_dataset("digits", seed=0, flat=False)
    cases = [
        (ModelSpec("mlp", {"hidden": [64, 64], "groups": 8}), flat),
        (ModelSpec("convnet", {}), images),
    ]
    rows = []
    for spec, data in cases:
        for amp in (False, "float16", "bfloat16"):
            rows.append(_run(spec, data, "fn3", amp, epochs))
    rows.append(_run(cases[0][0], flat, "bnnn", False, epochs))
    print_table(rows)
    drops = [
        100 * (reference["accuracy"] - row["accuracy"])
        for reference in rows
        if reference["method"] == "fn3" and reference["amp"] == "float32"
        for row in rows
        if row["model"] == reference["model"] and row["method"] == "fn3" and row["amp"] != "float32"
    ]
    bnnn_accuracy = next(row["accuracy"] for row in rows if row["method"] == "bnnn")
    summary = {
        "amp_max_accuracy_drop_pp": round(max(drops), 2),
        "amp_max_accuracy_drop_target_pp": ACCURACY_DROP_TARGET_PP,
        "bnnn_accuracy": round(bnnn_accuracy, 4),
        "bnnn_accuracy_target": BNNN_ACCURACY_TARGET,
        "all_losses_finite": all(row["losses_finite"] for row in rows),
        "device": torch.cuda.get_device_name(0),
    }
    print(summary)
    write_result(
        args.out,
        "cuda_check",
        {"epochs": epochs, "quick": args.quick},
        rows,
        summary,
    )


if __name__ == "__main__":
    main()
