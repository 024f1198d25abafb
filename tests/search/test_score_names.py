"""One score vocabulary: search objectives, workflow scores, the ``--score`` option of
``bayes-nest search`` and ``report``, and report labels take exactly the names of
`bayes_nest.search.objectives.SCORES` and give the same number for each; the spellings of
earlier releases still work, with a `FutureWarning`."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from bayes_nest import metrics, workflow
from bayes_nest.cli import UsageError, build_parser, main
from bayes_nest.defaults import (
    DEPRECATED_SCORES,
    SCORE_DEFAULTS,
    SCORE_LABELS,
    SCORES,
    SEGMENTATION_SCORES,
)
from bayes_nest.pipeline import ModelSpec, fit
from bayes_nest.report import score_label
from bayes_nest.search import Evaluator, make_objective, objectives, score_name
from bayes_nest.search.objectives import default_score
from bayes_nest.testing import assert_close

CONFIG = {"hidden.0": 2}
SETTINGS = {"ece_weight": 2.0, "max_ece": 0.05}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = workflow.load_data("digits", flat=True)
    spec = ModelSpec("mlp", {"hidden": [16], "groups": 4})
    model = fit(spec, data, epochs=1, progress=False)
    path = tmp_path_factory.mktemp("scores") / "fn3.ckpt"
    model.save(path)
    return model, data, path


def oracle(name, probs, labels, ece_weight, max_ece):
    """Each score from its definition, with the metrics of `bayes_nest.metrics`."""
    acc = metrics.accuracy(probs, labels)
    ece = metrics.expected_calibration_error(probs, labels, n_bins=SCORE_DEFAULTS["n_bins"])
    return {
        "accuracy": acc,
        "neg_nll": -metrics.nll(probs, labels),
        "ece_penalized": acc - ece_weight * ece,
        "ece_capped": acc if ece <= max_ece else -ece,
    }[name]


def score_choices(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    (action,) = [a for a in sub._actions if a.dest == "score"]
    return action


@pytest.mark.parametrize("command", ["search", "report"])
def test_the_cli_offers_exactly_the_library_names(command):
    action = score_choices(command)
    assert set(action.choices) - set(DEPRECATED_SCORES) == {*SCORES, *SEGMENTATION_SCORES}
    assert action.default is None  # the model's task decides
    assert default_score("classification") == SCORES[0] == "accuracy"
    assert default_score("segmentation") == SEGMENTATION_SCORES[0] == "neg_ged"


def test_every_layer_knows_the_same_names():
    assert workflow.SCORES is SCORES and objectives.SCORES is SCORES
    assert set(SCORE_LABELS) == {*SCORES, *SEGMENTATION_SCORES}
    assert all(score_label(name) == SCORE_LABELS[name] for name in SCORES)
    assert set(DEPRECATED_SCORES.values()) <= set(SCORES)
    assert not set(DEPRECATED_SCORES) & set(SCORES)


@pytest.mark.parametrize("name", SCORES)
def test_search_workflow_and_oracle_give_the_same_score(trained, name):
    model, data, _ = trained
    x, y = data.val
    probs = model.predict(x, CONFIG)
    expected = oracle(name, probs, y, **SETTINGS)
    from_workflow = workflow.make_score(model, data.val, name, **SETTINGS)(CONFIG)
    from_search = Evaluator(model.module, (x, y), name, **SETTINGS)(CONFIG)
    from_objective = make_objective(name, **SETTINGS)(probs, y)
    assert from_objective == expected  # the very same metric calls on the same tensors
    assert_close(from_workflow, expected, dtype=torch.float32)
    assert_close(from_search, expected, dtype=torch.float32)


@pytest.mark.parametrize("name", ["bogus", "f1", "NLL", "ece_penalised", ""])
def test_every_layer_rejects_other_names(trained, name):
    model, data, _ = trained
    with pytest.raises(ValueError, match=repr(name)):
        make_objective(name)
    with pytest.raises(ValueError, match=repr(name)):
        workflow.make_score(model, data.val, name)
    with pytest.raises(ValueError, match=repr(name)):
        score_name(name)
    with pytest.raises(UsageError, match=f"invalid choice: {name!r}"):
        build_parser().parse_args(["search", "m.ckpt", "--data", "d", "--score", name])


@pytest.mark.parametrize(("old", "new"), sorted(DEPRECATED_SCORES.items()))
def test_old_spellings_warn_and_mean_the_new_names(trained, old, new):
    model, data, _ = trained
    x, y = data.val
    probs = model.predict(x, CONFIG)
    with pytest.warns(FutureWarning, match=f"{old!r} is deprecated.*{new!r}"):
        assert score_name(old) == new
    with pytest.warns(FutureWarning):
        assert make_objective(old, **SETTINGS)(probs, y) == make_objective(new, **SETTINGS)(
            probs, y
        )
    with pytest.warns(FutureWarning):
        old_score = workflow.make_score(model, data.val, old, **SETTINGS)(CONFIG)
    assert old_score == workflow.make_score(model, data.val, new, **SETTINGS)(CONFIG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names never warn
        score_name(new)


def test_lam_is_the_deprecated_name_of_ece_weight(trained):
    model, data, _ = trained
    probs, y = model.predict(data.val.x, CONFIG), data.val.y
    with pytest.warns(FutureWarning, match="ece_weight"):
        old = make_objective("ece_penalized", lam=3.0)(probs, y)
    assert old == make_objective("ece_penalized", ece_weight=3.0)(probs, y)


@pytest.mark.parametrize("name", [*SCORES, *sorted(DEPRECATED_SCORES)])
def test_cli_search_scores_like_the_library(trained, name, tmp_path, capsys):
    model, data, path = trained
    out = tmp_path / "front.json"
    argv = ["search", path, "--data", "digits", "--score", name, "--out", out, "--no-progress"]
    argv += ["--ece-weight", SETTINGS["ece_weight"], "--max-ece", SETTINGS["max_ece"]]
    assert main([str(a) for a in argv]) == 0
    err = capsys.readouterr().err
    canonical = DEPRECATED_SCORES.get(name, name)
    assert ("deprecated" in err) == (name in DEPRECATED_SCORES)
    front = json.loads(out.read_text())
    assert front["info"]["score"] == canonical  # fronts record the new name
    score = workflow.make_score(model, data.val, canonical, calibration=data.train, **SETTINGS)
    points = front["points"][:3]
    assert points
    for point in points:
        assert_close(point["score"], score(point["config"]), dtype=torch.float32)
