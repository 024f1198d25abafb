"""The shared estimators of the claim benchmarks against independent oracles."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from bayes_nest.testing import assert_close

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "claims_stats", ROOT / "benchmarks" / "claims_stats.py"
)
cs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cs)


def test_interval_matches_scipy_one_sample_t_test():
    values = [1.3, 0.2, 2.9, 1.1, 0.7]
    ci = cs.t_interval(values)
    oracle = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert_close(ci["low"], oracle.low)
    assert_close(ci["high"], oracle.high)
    assert_close(ci["se"], stats.sem(values))
    assert ci["n"] == 5


def test_paired_interval_is_the_interval_of_differences_and_scales():
    a, b = [0.91, 0.88, 0.93, 0.90], [0.89, 0.88, 0.90, 0.87]
    ci = cs.paired_interval(a, b, scale=100.0)
    oracle = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert_close(ci["mean"], 100 * np.mean(np.subtract(a, b)))
    assert_close(ci["low"], 100 * oracle.low)
    assert_close(ci["high"], 100 * oracle.high)


def test_interval_bad_input_and_single_seed():
    one = cs.t_interval([0.5])
    assert one["mean"] == 0.5 and one["low"] is None and one["high"] is None
    with pytest.raises(ValueError, match="finite"):
        cs.t_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="equal lengths"):
        cs.paired_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        cs.t_interval([1.0, 2.0], level=1.5)


def test_temper_is_logit_temperature_scaling():
    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    probs = torch.softmax(logits, -1)
    assert_close(cs.temper(probs, 2.5), torch.softmax(logits / 2.5, -1))
    assert_close(cs.temper(probs, 1.0), probs)
    with pytest.raises(ValueError, match="temperature"):
        cs.temper(probs, 0.0)


def test_fit_temperature_recovers_the_generating_temperature_and_beats_a_grid():
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(20000, 5, generator=g, dtype=torch.float64)
    # Labels drawn from softmax(logits / 2): the model softmax(logits) is overconfident by T = 2.
    labels = torch.multinomial(torch.softmax(logits / 2, -1), 1, generator=g).squeeze(1)
    probs = torch.softmax(logits, -1)
    t = cs.fit_temperature(probs, labels)
    assert abs(t - 2.0) < 0.1

    def nll(temp):
        return float(torch.nn.functional.cross_entropy(logits / temp, labels))

    grid_best = min(nll(x) for x in np.linspace(0.5, 4.0, 351))
    assert nll(t) <= grid_best + 1e-9


def test_run_grid_counts_trials_and_breaks_ties_by_grid_order():
    calls = []

    def trial(setting):
        calls.append(setting)
        return {(1, "a"): 0.5, (1, "b"): 0.2, (2, "a"): 0.2, (2, "b"): 0.9}[
            (setting["lr"], setting["k"])
        ]

    best, rows = cs.run_grid({"lr": [1, 2], "k": ["a", "b"]}, trial, minimize=True)
    assert len(calls) == 4 and [r["score"] for r in rows] == [0.5, 0.2, 0.2, 0.9]
    assert best == {"lr": 1, "k": "b"}
    best, _ = cs.run_grid({"lr": [1, 2], "k": ["a", "b"]}, trial, minimize=False)
    assert best == {"lr": 2, "k": "b"}
    with pytest.raises(FloatingPointError, match="lr"):
        cs.run_grid({"lr": [1]}, lambda s: float("nan"), minimize=True)


def test_early_stopping_restores_the_best_epoch_and_honours_patience():
    module = torch.nn.Linear(1, 1, bias=False)
    scores = [0.1, 0.5, 0.4, 0.45, 0.3, 0.9]
    state = {"epoch": 0}

    def train_epoch():
        state["epoch"] += 1
        with torch.no_grad():
            module.weight.fill_(state["epoch"])

    out = cs.early_stopping(
        module, train_epoch, lambda: scores[state["epoch"] - 1], max_epochs=6, patience=3
    )
    # Best at epoch 2; epochs 3, 4, 5 bring no improvement, so the run stops after epoch 5.
    assert out == {"best_epoch": 2, "epochs_run": 5, "best_score": 0.5}
    assert module.weight.item() == 2.0
