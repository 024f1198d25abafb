"""Data for trained models, evaluation of sub-networks, scores, budgets and fronts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bayes_nest import metrics
from bayes_nest.data import corrupt, load_dataset
from bayes_nest.pipeline import ModelSpec, fit
from bayes_nest.search.front import Front, Point
from bayes_nest.testing import assert_close
from bayes_nest.workflow import (
    analyse,
    data_for,
    evaluate_config,
    load_data,
    make_score,
    read_front,
    resolve_budget,
)

SPEC = ModelSpec("mlp", {"hidden": [16, 16], "groups": 4})


@pytest.fixture(scope="module")
def digits_seed2():
    """Digits split with seed 2, not the default 0: `data_for` must read the seed it stored."""
    return load_dataset("digits", seed=2)


@pytest.fixture(scope="module")
def fn3_seed2(digits_seed2):
    info = {"source": "digits", "seed": 2, "val_fraction": 0.1, "test_fraction": 0.2}
    return fit(SPEC, digits_seed2, "fn3", epochs=3, progress=False, data_info=info)


def test_data_for_reproduces_the_training_splits(fn3_seed2, digits_seed2):
    again = data_for(fn3_seed2, "digits")
    for name in ("train", "val", "test"):
        assert torch.equal(again.splits[name].y, digits_seed2.splits[name].y)
        assert_close(again.splits[name].x, digits_seed2.splits[name].x, scale=10)  # re-standardized


def test_data_for_a_new_file_uses_the_model_standardization(fn3_seed2, digits_seed2, tmp_path):
    raw = digits_seed2.test.x * digits_seed2.std + digits_seed2.mean
    np.savez(tmp_path / "new.npz", x=raw.numpy(), y=digits_seed2.test.y.numpy())
    data = data_for(fn3_seed2, tmp_path / "new.npz", whole=True)
    assert len(data.test.y) == len(digits_seed2.test.y)
    # same examples (in another order), standardized with the training statistics
    probe = torch.randn(64, dtype=torch.float64)
    ours, theirs = data.test.x.double() @ probe, digits_seed2.test.x.double() @ probe
    assert torch.allclose(ours.sort().values, theirs.sort().values, atol=1e-3)
    assert torch.equal(data.test.y[ours.argsort()], digits_seed2.test.y[theirs.argsort()])


def test_load_data_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="digitz.*built-in datasets: digits, mnist1d"):
        load_data("digitz")
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_data(tmp_path / "x.txt")


def test_evaluate_config_against_independent_oracles(fn3_seed2, digits_seed2):
    config = {"hidden.0": 2, "hidden.1": 4}
    scores, probs = evaluate_config(fn3_seed2, digits_seed2.test, config, seed=5, return_probs=True)
    p = probs[0].numpy()
    y = digits_seed2.test.y.numpy()
    assert_close(scores["accuracy"], float((p.argmax(1) == y).mean()), dtype=torch.float32)
    assert_close(scores["nll"], float(-np.log(p[np.arange(len(y)), y]).mean()), dtype=torch.float32)
    noise = corrupt(digits_seed2.test.x, "gaussian_noise", 1.0, seed=5)
    p_out = fn3_seed2.predict(noise, config)[0].numpy()

    def entropy(q):
        return -(q * np.log(np.clip(q, 1e-12, 1))).sum(1)

    labels = np.r_[np.zeros(len(p)), np.ones(len(p_out))]
    oracle = roc_auc_score(labels, np.r_[entropy(p), entropy(p_out)])
    assert scores["ood_auroc"] == pytest.approx(oracle, abs=2e-5)  # float32 ties
    assert np.isnan(evaluate_config(fn3_seed2, digits_seed2.test, config, ood=None)["ood_auroc"])


def test_evaluate_config_rejects_unknown_labels(fn3_seed2, digits_seed2):
    bad = digits_seed2.test._replace(y=digits_seed2.test.y.clone())
    bad.y[0] = 11
    with pytest.raises(ValueError, match="class 11, unknown to a model of 10 classes"):
        evaluate_config(fn3_seed2, bad)


def test_scores(fn3_seed2, digits_seed2):
    val = digits_seed2.val
    config = {"hidden.0": 3}
    probs = fn3_seed2.predict(val.x, config)
    acc, nll = metrics.accuracy(probs, val.y), metrics.nll(probs, val.y)
    ece = metrics.expected_calibration_error(probs, val.y)
    assert_close(make_score(fn3_seed2, val)(config), acc, dtype=torch.float32)
    assert_close(make_score(fn3_seed2, val, "neg_nll")(config), -nll, dtype=torch.float32)
    pen = make_score(fn3_seed2, val, "ece_penalized", ece_weight=2.0)(config)
    assert_close(pen, acc - 2 * ece, dtype=torch.float32)
    with pytest.raises(ValueError, match="unknown score 'f1'"):
        make_score(fn3_seed2, val, "f1")


def test_budgets_and_fronts(fn3_seed2, tmp_path):
    full = fn3_seed2.cost_model("macs")({})
    front = Front([Point({"hidden.0": 1, "hidden.1": 1}, 0.5, 100.0)], metric="macs")
    assert_close(resolve_budget("25%", front, fn3_seed2), 0.25 * full)
    assert resolve_budget(300.0, front, fn3_seed2) == 300.0
    front.to_json(tmp_path / "f.json")
    assert read_front(tmp_path / "f.json", fn3_seed2).points[0].score == 0.5
    Front([Point({"layer.9": 1}, 0.5, 1.0)]).to_json(tmp_path / "g.json")
    with pytest.raises(ValueError, match="does not fit the model.*layer.9"):
        read_front(tmp_path / "g.json", fn3_seed2)


def test_analyse_picks_the_best_config_within_each_budget(fn3_seed2, digits_seed2):
    a = analyse(fn3_seed2, digits_seed2, label="FN3", budgets=["30%", "100%"], progress=False)
    full = fn3_seed2.cost_model("macs")({})
    for row, share in zip(a.rows, (0.3, 1.0), strict=True):
        fitting = [p for p in a.front.points if p.cost <= share * full]
        assert row["front_score"] == max(p.score for p in fitting)
        assert row["macs"] <= share * full
        assert set(row) >= {"accuracy", "nll", "ece", "ood_auroc", "params", "config"}
    assert len(a.probs) == 2 and a.probs[0][0].shape == (1, len(digits_seed2.test.y), 10)


def test_recalibrated_batchnorm_matches_export_and_is_restored(digits_seed2):
    from bayes_nest.subnet import export
    from bayes_nest.workflow import recalibrated

    spec = ModelSpec("mlp", {"hidden": [16], "groups": 4, "norm": "batch"})
    model = fit(spec, digits_seed2, "fn3", epochs=1, progress=False)
    config = {"hidden.0": 2}
    norm = model.module.hidden[0].norm
    before = norm.running_mean.clone()
    exported = export(
        model.module, config, input_shape=(64,), calibration_data=digits_seed2.train.x
    )
    with torch.no_grad():
        expected = torch.softmax(exported(digits_seed2.test.x), -1)
    _, probs = evaluate_config(
        model, digits_seed2.test, config, return_probs=True, calibration=digits_seed2.train
    )
    assert_close(probs[0], expected, scale=10)  # the exported network: sliced weights
    assert torch.equal(norm.running_mean, before)  # the nested statistics are back
    plain = evaluate_config(model, digits_seed2.test, config)  # without: the mixed statistics
    with recalibrated(model, config, digits_seed2.train):
        assert not torch.equal(norm.running_mean[:8], before[:8])
    assert plain["nll"] != pytest.approx(
        evaluate_config(model, digits_seed2.test, config, calibration=digits_seed2.train)["nll"]
    )
