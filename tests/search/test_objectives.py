"""Objectives and the cached evaluator."""

from __future__ import annotations

import pytest
import torch

from bayes_nest import metrics
from bayes_nest.models import MLP
from bayes_nest.search import Evaluator, make_objective
from bayes_nest.subnet import use
from bayes_nest.testing import argmax_margin, assert_close


def _probs_labels(seed=0, n=200, k=4):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(n, k, generator=g), -1)
    labels = torch.randint(0, k, (n,), generator=g)
    return probs, labels


def test_named_objectives():
    probs, labels = _probs_labels()
    acc = metrics.accuracy(probs, labels)
    ece = metrics.expected_calibration_error(probs, labels)
    # Exact where an objective calls the very metric on the same tensors.
    assert make_objective("accuracy")(probs, labels) == acc
    assert make_objective("neg_nll")(probs, labels) == -metrics.nll(probs, labels)
    assert_close(make_objective("ece_penalized", ece_weight=2.0)(probs, labels), acc - 2 * ece)
    assert make_objective("ece_capped", max_ece=1.0)(probs, labels) == acc
    assert make_objective("ece_capped", max_ece=ece / 2)(probs, labels) == -ece


def test_capped_objective_ranks_every_infeasible_below_every_feasible():
    objective = make_objective("ece_capped", max_ece=0.05)
    scores = [objective(*_probs_labels(seed)) for seed in range(6)]
    labels = torch.zeros(100, dtype=torch.long)
    confident_right = torch.nn.functional.one_hot(labels, 3).float()  # acc 1, ECE 0
    assert objective(confident_right, labels) == 1.0
    assert all(s < 0 for s in scores)  # these random predictions are badly calibrated


def test_objective_validation():
    with pytest.raises(ValueError, match="objective"):
        make_objective("f1")
    with pytest.raises(ValueError, match="ece_weight"):
        make_objective("ece_penalized", ece_weight=-1)
    with pytest.raises(ValueError, match="max_ece"):
        make_objective("ece_capped", max_ece=2)
    custom = lambda p, y: 0.5  # noqa: E731
    assert make_objective(custom) is custom


def _data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_evaluator_scores_the_sub_network():
    torch.manual_seed(0)
    net = MLP(6, [16], 3, groups=4)
    x, y = _data()
    evaluator = Evaluator(net, (x, y), batch_size=50)
    config = {"hidden.0": 2}
    with torch.no_grad(), use(net, config):
        probs = torch.softmax(net(x), -1)
    with torch.no_grad():
        whole = torch.softmax(net(x), -1)
    expected = metrics.accuracy(probs, y)
    # Batches of 50 or 7 change the probabilities by rounding only; the accuracies below are
    # exact because no prediction is within rounding of a tie.
    assert float(argmax_margin(probs).min()) > 1e-5 and float(argmax_margin(whole).min()) > 1e-5
    assert evaluator(config) == expected
    assert evaluator(config) == expected and evaluator.evaluations == 1
    assert evaluator({"hidden.0": 4}) == evaluator({}) and evaluator.evaluations == 2
    loader = [(xb, yb) for xb, yb in zip(x.split(7), y.split(7), strict=True)]
    assert Evaluator(net, loader)(config) == expected


def test_evaluator_with_sample_predictions():
    x, y = _data()
    g = torch.Generator().manual_seed(1)
    samples = torch.softmax(torch.randn(5, len(x), 3, generator=g), -1)
    lookup = {id_: i for i, id_ in enumerate(x[:, 0].tolist())}

    def predict(config, xb):
        return samples[:, [lookup[v] for v in xb[:, 0].tolist()]]

    evaluator = Evaluator(
        MLP(6, [8], 3, groups=2), (x, y), "neg_nll", predict=predict, batch_size=32
    )
    assert evaluator.predictions({}).shape == (5, len(x), 3)
    assert_close(evaluator({}), -metrics.nll(samples, y), dtype=torch.float32)  # batches of 32


def test_evaluator_recalibrates_per_config_and_restores_statistics():
    torch.manual_seed(0)
    net = MLP(6, [16], 3, groups=4, norm="batch")
    x, y = _data()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    evaluator = Evaluator(net, (x, y), recalibration_data=x + 3.0, recalibration_batches=2)
    score = evaluator({"hidden.0": 2})
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    from bayes_nest.subnet import recalibrate_batchnorm

    recalibrate_batchnorm(net, x + 3.0, {"hidden.0": 2}, num_batches=2)
    with torch.no_grad(), use(net, {"hidden.0": 2}):
        net.eval()
        probs = torch.softmax(net(x), -1)
    assert float(argmax_margin(probs).min()) > 1e-5  # no tie that rounding could flip
    assert score == metrics.accuracy(probs, y)


def test_evaluator_validation():
    net = MLP(6, [8], 3, groups=2)
    x, y = _data()
    with pytest.raises(ValueError, match="labels"):
        Evaluator(net, (x, y[:5]))
    with pytest.raises(ValueError, match="no batches"):
        Evaluator(net, [])
    with pytest.raises(TypeError):
        Evaluator(net, 5)
    with pytest.raises(TypeError, match="predict"):
        Evaluator(net, (x, y), predict=3)
    with pytest.raises(ValueError, match="unknown axis"):
        Evaluator(net, (x, y))({"nope": 1})
