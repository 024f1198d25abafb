"""Uncertainty cascade: exact cost accounting, lazy execution and threshold fitting."""

from __future__ import annotations

import pytest
import torch

from bayes_nest import metrics
from bayes_nest.search import Cascade, cascade_curve, uncertainty
from bayes_nest.testing import assert_close


def _confident(labels, k, confidence):
    """Probabilities with ``confidence`` on ``labels`` and the rest spread evenly."""
    probs = torch.full((len(labels), k), (1 - confidence) / (k - 1))
    probs[torch.arange(len(labels)), labels] = confidence
    return probs


def test_average_cost_counts_every_stage_run():
    labels = torch.zeros(10, dtype=torch.long)
    # stage 0 is confident on the first 5 inputs, stage 1 on the next 3
    conf0 = torch.tensor([0.99] * 5 + [0.4] * 5)
    conf1 = torch.tensor([0.5] * 5 + [0.99] * 3 + [0.4] * 2)
    stages = [
        torch.stack([_confident(labels[:1], 3, float(c))[0] for c in conf])
        for conf in (conf0, conf1)
    ] + [_confident(labels, 3, 0.6)]
    threshold = float(uncertainty(_confident(labels[:1], 3, 0.9)))
    cascade = Cascade([1.0, 4.0, 10.0], [threshold, threshold])
    result = cascade.run(stages)
    assert result.stage.tolist() == [0] * 5 + [1] * 3 + [2] * 2
    assert result.average_cost == (5 * 1 + 3 * (1 + 4) + 2 * (1 + 4 + 10)) / 10
    assert result.exit_fractions(3) == [0.5, 0.3, 0.2]
    assert_close(result.probs[:5], stages[0][:5])
    assert_close(result.probs[8:], stages[2][8:])


def test_lazy_predict_matches_run_and_skips_confident_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=g)
    weights = [torch.randn(4, 3, generator=g) * s for s in (0.5, 1.0, 3.0)]
    configs = [{"a": 1}, {"a": 2}, {"a": 3}]
    seen = []

    def predict(config, xb):
        seen.append((config["a"], len(xb)))
        return torch.softmax(xb @ weights[config["a"] - 1], -1)

    cascade = Cascade([1.0, 2.0, 3.0], [0.8, 0.6], configs=configs)
    lazy = cascade.predict(predict, x)
    full = cascade.run([torch.softmax(x @ w, -1) for w in weights])
    assert_close(lazy.probs, full.probs)
    assert torch.equal(lazy.stage, full.stage)
    assert_close(lazy.average_cost, full.average_cost)
    sizes = dict(seen)
    assert sizes[1] == 50 and sizes[2] == int((full.stage >= 1).sum())
    assert sizes.get(3, 0) == int((full.stage == 2).sum())


def test_mutual_information_for_sample_predictions():
    g = torch.Generator().manual_seed(0)
    samples = torch.softmax(torch.randn(8, 30, 4, generator=g), -1)
    assert_close(uncertainty(samples, "mutual_information"), metrics.mutual_information(samples))
    with pytest.raises(ValueError, match="per-sample"):
        uncertainty(samples[0], "mutual_information")
    with pytest.raises(ValueError, match="uncertainty"):
        uncertainty(samples, "variance")


def _two_stage_problem(n=400, seed=0):
    """Stage 0 is right exactly when it is confident; stage 1 is always right."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    easy = torch.rand(n, generator=g) < 0.6
    wrong = (labels + 1) % 3
    small = torch.where(easy[:, None], _confident(labels, 3, 0.95), _confident(wrong, 3, 0.4))
    return [small, _confident(labels, 3, 0.9)], labels, easy


def test_fit_escalates_exactly_the_uncertain_inputs_when_affordable():
    stages, labels, easy = _two_stage_problem()
    cascade = Cascade.fit(stages, labels, [1.0, 3.0], target_cost=1.0 + 3.0 * 0.45)
    result = cascade.run(stages)
    assert torch.equal(result.stage == 0, easy)
    assert cascade.evaluate(stages, labels)["accuracy"] == 1.0
    assert result.average_cost <= 1.0 + 3.0 * 0.45


def test_fit_respects_the_target_and_edge_targets():
    stages, labels, _ = _two_stage_problem()
    only_first = Cascade.fit(stages, labels, [1.0, 3.0], target_cost=1.0)
    assert only_first.run(stages).average_cost == 1.0
    for target in (1.5, 2.0, 2.5):
        fitted = Cascade.fit(stages, labels, [1.0, 3.0], target_cost=target)
        assert fitted.run(stages).average_cost <= target
    with pytest.raises(ValueError, match="below the cost of the first stage"):
        Cascade.fit(stages, labels, [1.0, 3.0], target_cost=0.5)


def test_fit_many_stages_by_coordinate_ascent():
    stages, labels, _ = _two_stage_problem()
    four = stages[:1] * 3 + stages[1:]
    fitted = Cascade.fit(four, labels, [1.0, 0.0, 0.0, 3.0], target_cost=3.0)
    assert fitted.evaluate(four, labels)["accuracy"] == 1.0
    assert fitted.run(four).average_cost <= 3.0


def test_curve_rows():
    stages, labels, _ = _two_stage_problem(seed=1)
    test_stages, test_labels, _ = _two_stage_problem(seed=2)
    rows = cascade_curve(stages, labels, test_stages, test_labels, [1.0, 3.0], [1.0, 2.0, 4.0])
    assert [r["target_cost"] for r in rows] == [1.0, 2.0, 4.0]
    assert rows[0]["average_cost"] == 1.0
    assert rows[-1]["accuracy"] == 1.0
    assert all(0 <= r["accuracy"] <= 1 for r in rows)


def test_constructor_validation():
    with pytest.raises(ValueError, match="thresholds"):
        Cascade([1.0, 2.0], [])
    with pytest.raises(ValueError, match="costs"):
        Cascade([1.0, float("nan")], [0.1])
    with pytest.raises(ValueError, match="uncertainty"):
        Cascade([1.0, 2.0], [0.1], uncertainty="margin")
    with pytest.raises(ValueError, match="configs"):
        Cascade([1.0, 2.0], [0.1]).predict(lambda c, x: x, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="one entry per stage"):
        Cascade([1.0, 2.0], [0.1]).run([torch.ones(2, 2) / 2])
