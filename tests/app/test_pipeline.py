"""Trained-model pipeline: model specs, training in both regimes, saved models, prediction."""

from __future__ import annotations

import pytest
import torch

from bayes_nest.infer import predict_probs
from bayes_nest.infer.checkpoint import CheckpointError, save_checkpoint
from bayes_nest.pipeline import MODELS, ModelSpec, build_model, fit, load_model
from bayes_nest.subnet import use
from bayes_nest.testing import assert_close

SPEC = ModelSpec("mlp", {"hidden": [16, 16], "groups": 4})


@pytest.mark.parametrize(
    ("name", "options", "shape"),
    [
        ("mlp", {"hidden": [8], "groups": 2}, (64,)),
        ("convnet", {"channels": [8, 8], "groups": 2}, (1, 8, 8)),
        ("resnet", {"widths": [8, 16], "depths": [1, 1], "groups": 2}, (1, 8, 8)),
        ("resnext", {"widths": [8, 16], "depths": [1, 1], "groups": 2}, (1, 8, 8)),
    ],
)
def test_build_model_for_shape_and_classes(name, options, shape):
    module = build_model(ModelSpec(name, options), shape, 7)
    assert module(torch.zeros(3, *shape)).shape == (3, 7)


def test_build_model_rejects_bad_specs():
    assert set(MODELS) == {"mlp", "convnet", "resnet", "resnext", "vgg", "unet"}
    with pytest.raises(ValueError, match="unknown model 'lstm'"):
        ModelSpec("lstm")
    with pytest.raises(ValueError, match=r"needs image inputs of shape \(C, H, W\)"):
        build_model(ModelSpec("convnet"), (64,), 10)
    with pytest.raises(ValueError, match="bad options for model 'mlp'.*hiden"):
        build_model(ModelSpec("mlp", {"hiden": [8]}), (64,), 10)
    with pytest.raises(ValueError, match="divisible"):
        build_model(ModelSpec("mlp", {"hidden": [10], "groups": 4}), (64,), 10)


def test_fn3_predict_is_the_module_under_the_config(trained_fn3, digits):
    config = {"hidden.0": 2, "hidden.1": 3}
    probs = trained_fn3.predict(digits.test.x, config)
    assert probs.shape == (1, len(digits.test.y), 10)
    with use(trained_fn3.module, config):
        expected = torch.softmax(trained_fn3.module(digits.test.x), -1)
    assert_close(probs[0], expected)  # batches of 512 vs one pass
    assert_close(
        trained_fn3.predict(digits.test.x)[0], predict_probs(trained_fn3.module, digits.test.x)
    )


def test_bnnn_predict_gives_posterior_samples(trained_bnnn, digits):
    probs = trained_bnnn.predict(digits.test.x[:50], {"hidden.0": 2})
    assert probs.shape == (3, 50, 10)
    assert_close(probs.sum(-1), torch.ones(3, 50))
    assert not torch.allclose(probs[0], probs[1])  # weights are drawn per sample
    assert trained_bnnn.predict(digits.test.x[:5], num_samples=7).shape == (7, 5, 10)


def test_predict_rejects_other_shapes_and_nans(trained_fn3):
    with pytest.raises(ValueError, match=r"shape \(32,\).*\(64,\)"):
        trained_fn3.predict(torch.zeros(4, 32))
    x = torch.zeros(4, 64)
    x[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        trained_fn3.predict(x)
    with pytest.raises(ValueError, match="unknown axis"):
        trained_fn3.predict(torch.zeros(4, 64), {"hidden.5": 1})


@pytest.mark.parametrize("which", ["fn3", "bnnn"])
def test_save_and_load_round_trip(which, trained_fn3, trained_bnnn, digits, tmp_path):
    model = trained_fn3 if which == "fn3" else trained_bnnn
    model.save(tmp_path / "m.ckpt")
    loaded = load_model(tmp_path / "m.ckpt")
    assert (loaded.method, loaded.spec, loaded.input_shape) == (
        model.method,
        model.spec,
        model.input_shape,
    )
    # exact: a saved tensor loads bit for bit
    assert torch.equal(loaded.mean, model.mean) and loaded.options == model.options
    x = digits.test.x[:40]
    for config in ({}, {"hidden.0": 1, "hidden.1": 2}):
        torch.manual_seed(3)
        a = model.predict(x, config)
        torch.manual_seed(3)
        b = loaded.predict(x, config)
        assert_close(a, b)


def test_load_model_rejects_foreign_and_mismatched_files(trained_fn3, tmp_path):
    save_checkpoint(tmp_path / "other.ckpt", {"model": {}}, kind="fn3")
    with pytest.raises(CheckpointError, match="expected 'bayes_nest.model'"):
        load_model(tmp_path / "other.ckpt")
    payload = trained_fn3.payload()
    payload["spec"]["options"]["hidden"] = [32, 32]
    save_checkpoint(tmp_path / "bad.ckpt", payload, kind="bayes_nest.model")
    with pytest.raises(CheckpointError, match="does not hold a usable bayes_nest model"):
        load_model(tmp_path / "bad.ckpt")


def test_training_options_are_checked_per_method(digits):
    with pytest.raises(ValueError, match="unknown training option 'temperature'.*'fn3'"):
        fit(SPEC, digits, "fn3", temperature=0.5)
    with pytest.raises(ValueError, match="unknown method 'sgld'"):
        fit(SPEC, digits, "sgld")


def test_bnnn_warm_start_from_fn3(trained_fn3, digits):
    model = fit(trained_fn3.spec, digits, "bnnn", epochs=0, progress=False, init=trained_fn3)
    layer = trained_fn3.module.hidden[0].affine
    assert torch.equal(model.module.hidden[0].affine.weight_loc, layer.weight)
    other = ModelSpec("mlp", {"hidden": [8, 8], "groups": 4})
    with pytest.raises(ValueError, match="does not match"):
        fit(other, digits, "bnnn", epochs=0, progress=False, init=trained_fn3)
