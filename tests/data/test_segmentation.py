"""The procedural ambiguous-segmentation set, user segmentation data and annotator sampling."""

import numpy as np
import pytest
import torch

from bayes_nest.data import (
    LesionTruth,
    RandomAnnotatorDataset,
    as_loader,
    load_segmentation,
    load_segmentation_file,
    make_lesions,
    segmentation_from_arrays,
)
from bayes_nest.testing import assert_close


@pytest.fixture(scope="module")
def lesions():
    return make_lesions(60, size=24, seed=3)


def test_same_seed_same_set_and_shapes(lesions):
    images, masks, truth = lesions
    again = make_lesions(60, size=24, seed=3)
    assert np.array_equal(images, again[0]) and np.array_equal(masks, again[1])
    assert not np.array_equal(images, make_lesions(60, size=24, seed=4)[0])
    assert images.shape == (60, 1, 24, 24) and images.dtype == np.float32
    assert masks.shape == (60, 4, 24, 24) and set(np.unique(masks)) <= {0, 1}
    assert truth.lesion_maps.shape == (60, 2, 24, 24) and truth.visibility.shape == (60, 2)


def test_annotators_disagree_on_boundaries_and_faint_lesions(lesions):
    _, masks, truth = lesions
    # boundary placement: images with only clear lesions still get annotations of different area
    clear_only = (truth.visibility == 1).any(1) & (
        (truth.visibility == 0) | (truth.visibility == 1)
    ).all(1)
    areas = masks[clear_only].sum((2, 3))
    assert (areas.max(1) > areas.min(1)).mean() > 0.9
    assert (areas.min(1) > 0).all()  # a clear lesion is outlined by everyone
    # faint lesions: some image has an annotator marking nothing while another marks something
    empty = masks.sum((2, 3)) == 0
    assert (empty.any(1) & ~empty.all(1)).any()


def test_marks_follow_the_generating_rule(lesions):
    _, masks, truth = lesions
    lo, hi = truth.threshold_range
    maps = truth.lesion_maps
    # a pixel above the highest level of a clear lesion is marked by every annotator; a pixel
    # below the lowest level of every lesion by none
    core = ((maps > hi) & (truth.visibility == 1)[..., None, None]).any(1)
    outside = (maps <= lo).all(1)
    assert masks.transpose(1, 0, 2, 3)[:, core].all()
    assert not masks.transpose(1, 0, 2, 3)[:, outside].any()


def test_pixel_probs_match_monte_carlo_and_hand_case(lesions):
    truth = lesions[2][:8]
    p = truth.pixel_probs()
    draws = truth.sample(4000, seed=1).astype(np.float64)
    # binomial standard error <= 0.5/sqrt(4000) = 0.0079; 5 sigma over ~4600 pixels
    assert np.abs(draws.mean(0) - p).max() < 0.04
    # hand case: one pixel, two lesions s = (0.6, 0.4), v = (1, 0.5), t ~ U(0.3, 0.7):
    # t < 0.6 (prob 3/4): the clear lesion 1 covers the pixel -> 1; t >= 0.6: nothing => 0.75
    maps = np.array([0.6, 0.4]).reshape(1, 2, 1, 1)
    hand = LesionTruth(maps, np.array([[1.0, 0.5]]), (0.3, 0.7))
    assert_close(float(hand.pixel_probs()[0, 0, 0]), 0.75)
    # faint lesion alone (s = 0.4, v = 0.5): P = v * P(t < s) = 0.5 * (0.4 - 0.3) / 0.4 = 0.125
    hand2 = LesionTruth(maps[:, ::-1].copy(), np.array([[0.5, 0.0]]), (0.3, 0.7))
    assert_close(float(hand2.pixel_probs()[0, 0, 0]), 0.125)


def test_bundle_splits_standardizes_and_carries_truth():
    data = load_segmentation(num_images=50, size=16, seed=2)
    assert [len(s.x) for s in data.splits.values()] == [35, 5, 10]
    assert data.input_shape == (1, 16, 16) and data.num_annotators == 4
    assert_close(float(data.train.x.mean()), 0.0, dtype=torch.float32, scale=100)
    assert_close(float(data.train.x.std(unbiased=False)), 1.0, dtype=torch.float32, scale=100)
    images, masks, truth = make_lesions(50, size=16, seed=2)
    # the test split's masks and truth are those of the same images
    for split in ("train", "test"):
        t = data.truth[split]
        rows = [
            int(np.flatnonzero((truth.lesion_maps == m).all((1, 2, 3)))[0]) for m in t.lesion_maps
        ]
        assert torch.equal(
            data.splits[split].masks, torch.as_tensor(masks[rows], dtype=torch.float32)
        )


def test_user_arrays_and_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(20, 3, 8, 10))
    masks = rng.random((20, 2, 8, 10)) < 0.3
    path = tmp_path / "scans.npz"
    np.savez(path, images=images, masks=masks)
    data = load_segmentation_file(path, seed=1, standardize=None)
    assert data.name == "scans" and data.input_shape == (3, 8, 10) and data.num_annotators == 2
    x = torch.cat([s.x for s in data.splits.values()]).double()
    assert_close(
        torch.sort(x.flatten())[0],
        torch.sort(torch.as_tensor(images).flatten())[0],
        dtype=torch.float32,
    )


@pytest.mark.parametrize(
    ("images", "masks", "message"),
    [
        (np.zeros((4, 8, 8)), np.zeros((4, 1, 8, 8)), r"images must have shape \(N, C, H, W\)"),
        (np.zeros((4, 1, 8, 8)), np.zeros((4, 8, 8)), r"masks must have shape \(N, A, H, W\)"),
        (np.zeros((4, 1, 8, 8)), np.zeros((3, 1, 8, 8)), "4 examples but masks has 3"),
        (np.zeros((4, 1, 8, 8)), np.zeros((4, 1, 8, 9)), "spatial size"),
        (np.zeros((4, 1, 8, 8)), np.full((4, 1, 8, 8), 0.5), "binary.*0.5"),
        (np.full((4, 1, 8, 8), np.nan), np.zeros((4, 1, 8, 8)), "NaN"),
    ],
)
def test_bad_user_arrays_are_named(images, masks, message):
    with pytest.raises(ValueError, match=message):
        segmentation_from_arrays(images, masks)


def test_npz_missing_key_lists_what_is_there(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((2, 1, 4, 4)), masks=np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"no array 'images'.*\['masks', 'x'\]"):
        load_segmentation_file(path)
    with pytest.raises(ValueError, match="unknown segmentation dataset 'lidc'"):
        load_segmentation("lidc")
    with pytest.raises(ValueError, match="threshold_range"):
        make_lesions(4, threshold_range=(0.7, 0.3))


def test_random_annotator_draws_every_annotation_uniformly():
    x = torch.zeros(3, 1, 2, 2)
    masks = torch.zeros(3, 4, 2, 2)
    for a in range(4):  # annotator a marks exactly a pixels -> its identity is the mask sum
        masks[:, a].view(3, -1)[:, :a] = 1
    data = RandomAnnotatorDataset((x, masks), seed=0)
    loader = as_loader(data, 3, shuffle=True, seed=0)
    counts = np.zeros(4)
    for _ in range(400):
        for _, m in loader:
            assert m.shape == (3, 1, 2, 2)
            counts += np.bincount(m.sum((1, 2, 3)).long().numpy(), minlength=4)
    # 1200 draws, each annotator 300 expected, sd ~15: within 5 sd
    assert np.abs(counts - 300).max() < 75

    # same seed, same sequence of draws; another seed, another sequence
    def draws(seed):
        ds = RandomAnnotatorDataset((x, masks), seed=seed)
        return torch.stack([ds[i % 3][1].sum() for i in range(60)])

    assert torch.equal(draws(5), draws(5)) and not torch.equal(draws(5), draws(6))
