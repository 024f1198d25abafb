"""Segmentation models in `bayes_nest.pipeline`: a nested U-Net trained with FN3 or as a BNNN on
a `SegmentationBundle`, saved and loaded with its task, and learning the annotator
distribution (slow tier: better than the best constant prediction)."""

from __future__ import annotations

import pytest
import torch

from bayes_nest import metrics
from bayes_nest.data import load_dataset, load_segmentation
from bayes_nest.pipeline import ModelSpec, fit, load_model
from bayes_nest.pipeline_segmentation import evaluate_segmentation
from bayes_nest.workflow import seeded

SPEC = ModelSpec("unet", {"widths": [4, 8], "groups": 2, "bottleneck_blocks": 1})


@pytest.mark.parametrize("method", ["fn3", "bnnn"])
def test_a_saved_segmentation_model_predicts_as_before(method, tmp_path):
    data = load_segmentation(num_images=20, size=8, seed=1)
    extra = {"predict_samples": 3} if method == "bnnn" else {}
    model = fit(SPEC, data, method, epochs=1, batch_size=8, progress=False, **extra)
    assert model.task == "segmentation" and model.num_classes == 1
    x = data.test.x
    with seeded(5):
        before = model.predict(x)
    samples = 1 if method == "fn3" else 3
    assert before.shape == (samples, len(x), 8, 8)
    assert bool(((before >= 0) & (before <= 1)).all())
    model.save(tmp_path / "m.ckpt")
    same = load_model(tmp_path / "m.ckpt")
    assert same.task == "segmentation" and same.fingerprint() == model.fingerprint()
    with seeded(5):
        after = same.predict(x)
    assert torch.equal(before, after)  # the same ops on the same weights and random numbers


def test_the_task_of_the_model_must_match_the_data():
    digits = load_dataset("digits", flat=False)
    with pytest.raises(ValueError, match="needs segmentation data"):
        fit(SPEC, digits, "fn3", epochs=1, progress=False)
    lesions = load_segmentation(num_images=12, size=8, seed=0)
    with pytest.raises(TypeError, match="segmentation data need a segmentation model"):
        fit(ModelSpec("convnet", {"channels": [4], "groups": 2}), lesions, "fn3", epochs=1)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fn3", "bnnn"])
def test_training_beats_the_best_constant_prediction(method):
    """The trained full network's pixel NLL on test images is below that of the best constant
    foreground probability (the training masks' foreground rate), and its GED below that of
    always predicting an empty mask."""
    data = load_segmentation(num_images=300, size=16, seed=0)
    spec = ModelSpec("unet", {"widths": [8, 16], "groups": 2, "bottleneck_blocks": 1})
    model = fit(spec, data, method, epochs=12, batch_size=16, lr=1e-2, progress=False)
    scores = evaluate_segmentation(model, data.test, calibration=data.train)
    x, masks = data.test
    rate = float(data.train.masks.mean())
    constant = torch.full((len(x), 16, 16), rate)
    assert scores["pixel_nll"] < 0.8 * metrics.pixel_nll(constant, masks)
    empty = torch.zeros(1, len(x), 16, 16, dtype=torch.bool)
    assert scores["ged"] < metrics.generalized_energy_distance(empty, masks)
