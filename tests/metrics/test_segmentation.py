"""Segmentation metrics against hand-computed cases, brute force and torchmetrics."""

import itertools

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from bayes_nest import metrics
from bayes_nest.metrics import (
    generalized_energy_distance,
    hungarian_iou,
    iou_distances,
    pixel_ece,
    pixel_nll,
)
from bayes_nest.testing import assert_close


def _iou_distance(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 0.0 if union == 0 else 1 - np.logical_and(a, b).sum() / union


def _random_masks(rng, shape, fill=0.3):
    masks = rng.random(shape) < fill
    masks[..., :2, :, :] &= rng.random(shape[:-3] + (2, 1, 1)) < 0.7  # some empty masks
    return masks


def test_iou_distance_hand_cases():
    a = np.zeros((1, 3, 2, 2), dtype=bool)
    a[0, 0, 0] = True  # pixels (0,0), (0,1)
    b = np.zeros((1, 2, 2, 2), dtype=bool)
    b[0, 0, :, 1] = True  # pixels (0,1), (1,1): IoU 1/3 with a[0]
    d = iou_distances(a, b)
    assert d.shape == (1, 3, 2) and d.dtype == torch.float64
    assert_close(d[0, 0, 0].item(), 2 / 3)
    assert d[0, 0, 1].item() == 1.0  # non-empty vs empty
    assert d[0, 1, 1].item() == 0.0  # both empty: perfect agreement
    assert_close(d, iou_distances(a.astype(np.float32), torch.as_tensor(b, dtype=torch.int64)))


def test_iou_distances_match_brute_force():
    rng = np.random.default_rng(0)
    a, b = _random_masks(rng, (3, 4, 5, 6)), _random_masks(rng, (3, 2, 5, 6))
    brute = [
        [[_iou_distance(a[n, i], b[n, j]) for j in range(2)] for i in range(4)] for n in range(3)
    ]
    assert_close(iou_distances(a, b), torch.tensor(brute, dtype=torch.float64))


def test_ged_hand_cases():
    y = np.zeros((1, 2, 1, 2), dtype=bool)
    y[0, 0, 0, 0] = True  # annotators: {pixel 0} and {} (one sees a lesion, one does not)
    s = y[0, :1][:, None]  # one sample, equal to annotator 0
    # 2 E d(s, y) = 2 * (0 + 1)/2 = 1; E d(s, s') = 0; E d(y, y') = (0 + 1 + 1 + 0)/4 = 1/2
    assert_close(generalized_energy_distance(s, y), 0.5)
    # the sample set equal to the annotation set scores exactly 0
    assert generalized_energy_distance(y.transpose(1, 0, 2, 3), y) == 0.0
    # all empty on both sides: every distance 0
    assert generalized_energy_distance(np.zeros((3, 2, 4, 4)), np.zeros((2, 5, 4, 4))) == 0.0


def test_ged_matches_brute_force_per_image():
    rng = np.random.default_rng(1)
    s, y = _random_masks(rng, (5, 3, 4, 4)), _random_masks(rng, (3, 4, 4, 4))
    expected = []
    for n in range(3):
        sy = np.mean([_iou_distance(a, b) for a in s[:, n] for b in y[n]])
        ss = np.mean([_iou_distance(a, b) for a in s[:, n] for b in s[:, n]])
        yy = np.mean([_iou_distance(a, b) for a in y[n] for b in y[n]])
        expected.append(2 * sy - ss - yy)
    per_image = generalized_energy_distance(s, y, reduction="none")
    assert_close(per_image, torch.tensor(expected, dtype=torch.float64))
    assert_close(generalized_energy_distance(s, y), float(np.mean(expected)))


@pytest.mark.parametrize(("num_samples", "num_annotations"), [(4, 4), (8, 4), (3, 6)])
def test_hungarian_iou_matches_all_permutations(num_samples, num_annotations):
    rng = np.random.default_rng(num_samples + num_annotations)
    s = _random_masks(rng, (num_samples, 2, 4, 5), 0.4)
    y = _random_masks(rng, (2, num_annotations, 4, 5), 0.4)
    k = max(num_samples, num_annotations)
    expected = []
    for n in range(2):
        left = [s[i % num_samples, n] for i in range(k)]
        right = [y[n, j % num_annotations] for j in range(k)]
        cost = np.array([[_iou_distance(a, b) for b in right] for a in left])
        perms = np.array(list(itertools.permutations(range(k))))
        expected.append(1 - cost[np.arange(k), perms].mean(1).min())
    assert_close(hungarian_iou(s, y, reduction="none"), torch.tensor(expected, dtype=torch.float64))
    # matching beats the identity pairing
    assert (
        hungarian_iou(s, y)
        >= 1
        - np.mean(
            [
                _iou_distance(s[i % num_samples, n], y[n, i % num_annotations])
                for n in range(2)
                for i in range(k)
            ]
        )
        - 1e-12
    )


def test_pixel_nll_and_ece_against_closed_form_and_torchmetrics():
    rng = np.random.default_rng(2)
    p = rng.random((3, 5, 6))
    y = rng.random((3, 4, 5, 6)) < p[:, None]
    bce = -(y * np.log(p[:, None]) + (~y) * np.log(1 - p[:, None])).mean()
    assert_close(pixel_nll(p, y), float(bce))
    fg = torch.as_tensor(p)[:, None].expand(y.shape).reshape(-1)
    expected = multiclass_calibration_error(
        torch.stack([1 - fg, fg], -1), torch.as_tensor(y).reshape(-1).long(), 2, n_bins=10
    )
    assert_close(pixel_ece(p, y, n_bins=10), float(expected), dtype=torch.float32)
    # hand case: p = 0.8 everywhere, annotators mark every pixel -> ECE = 0.2, NLL = -log 0.8
    full = np.ones((2, 3, 4, 4))
    assert_close(pixel_ece(np.full((2, 4, 4), 0.8), full), 0.2)
    assert_close(pixel_nll(np.full((2, 4, 4), 0.8), full), -np.log(0.8))
    # per-sample probabilities are averaged first
    samples = np.stack([np.full((2, 4, 4), 0.6), np.ones((2, 4, 4))])
    assert_close(pixel_nll(samples, full), -np.log(0.8))


def test_metrics_reject_bad_input_by_name():
    y = np.zeros((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"samples must have shape \(S, N, H, W\)"):
        generalized_energy_distance(np.zeros((2, 4, 4)), y)
    with pytest.raises(ValueError, match="must agree on N, H and W"):
        generalized_energy_distance(np.zeros((1, 3, 4, 4)), y)
    with pytest.raises(ValueError, match="binary.*0.5"):
        hungarian_iou(np.full((3, 2, 4, 4), 0.5), y)
    with pytest.raises(ValueError, match="equal or one a multiple"):
        hungarian_iou(np.zeros((2, 2, 4, 4)), y)
    with pytest.raises(ValueError, match=r"\[0, 1\].*sigmoid"):
        pixel_ece(np.full((2, 4, 4), 3.0), y)
    with pytest.raises(ValueError, match="NaN"):
        pixel_nll(np.full((2, 4, 4), np.nan), y)
    with pytest.raises(ValueError, match="reduction"):
        generalized_energy_distance(np.zeros((1, 2, 4, 4)), y, reduction="sum")


def test_pinned_names_still_importable_from_the_package():
    for name in (
        "accuracy",
        "nll",
        "brier_score",
        "expected_calibration_error",
        "ood_auroc",
        "max_calibration_error",
        "predictive_entropy",
        "mutual_information",
        "ood_aupr",
        "fpr_at_95_tpr",
        "probs_from_logits",
        "calibration_bins",
    ):
        assert callable(getattr(metrics, name)) and name in metrics.__all__
    assert_close(metrics.accuracy(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0])), 0.5)
