import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torchmetrics.functional.classification import multiclass_calibration_error

from bayes_nest import metrics
from bayes_nest.testing import assert_close


def _random_probs(s, n, k, seed, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(s, n, k, generator=g, dtype=dtype)
    probs = torch.softmax(logits, -1)
    labels = torch.randint(0, k, (n,), generator=g)
    return (probs[0] if s == 0 else probs), labels


def _tm_ce(probs, labels, n_bins, norm):
    k = probs.shape[-1]
    return multiclass_calibration_error(probs, labels, k, n_bins=n_bins, norm=norm).item()


# ----------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_and_mce_match_torchmetrics(seed, n_bins):
    probs, labels = _random_probs(1, 2000, 7, seed)
    probs = probs[0].float()
    ece = metrics.expected_calibration_error(probs, labels, n_bins=n_bins)
    mce = metrics.max_calibration_error(probs, labels, n_bins=n_bins)
    assert_close(ece, _tm_ce(probs, labels, n_bins, "l1"), dtype=torch.float32)
    assert_close(mce, _tm_ce(probs, labels, n_bins, "max"), dtype=torch.float32)
    assert 0 < ece <= mce


def _edge_case_probs(n_bins, seed):
    """Float32 two-class probabilities whose confidences sit exactly on torchmetrics' bin edges
    (including 1.0), plus interior values; labels random."""
    g = torch.Generator().manual_seed(seed)
    edges = torch.linspace(0, 1, n_bins + 1)
    edges = edges[edges >= 0.5]  # top-label confidence of two classes is >= 1/2
    conf = torch.cat([edges.repeat(20), 0.5 + 0.5 * torch.rand(200, generator=g)])
    probs = torch.stack([conf, 1 - conf], -1)
    flip = torch.rand(conf.shape[0], generator=g) < 0.5
    probs = torch.where(flip[:, None], probs.flip(-1), probs)
    labels = torch.randint(0, 2, (conf.shape[0],), generator=g)
    return probs, labels


@pytest.mark.parametrize("n_bins", [4, 10, 15, 20])
@pytest.mark.parametrize("seed", range(3))
def test_bin_edges_are_left_closed_like_torchmetrics(n_bins, seed):
    probs, labels = _edge_case_probs(n_bins, seed)
    assert (probs.max(-1).values == 1).any()
    for fn, norm in [
        (metrics.expected_calibration_error, "l1"),
        (metrics.max_calibration_error, "max"),
    ]:
        assert_close(
            fn(probs, labels, n_bins=n_bins),
            _tm_ce(probs, labels, n_bins, norm),
            dtype=torch.float32,
        )


def test_calibration_bins_by_hand():
    probs = torch.tensor([[0.5, 0.5], [0.7, 0.3], [0.25, 0.75], [0.1, 0.9], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 1, 0])
    bins = metrics.calibration_bins(probs, labels, n_bins=2)
    assert_close(bins.edges, [0, 0.5, 1])
    # [0, .5) empty; [.5, 1) holds .5 .7 .75 .9; the last bin holds confidence 1.0 alone
    np.testing.assert_array_equal(bins.count, [0, 4, 1])
    assert np.isnan(bins.accuracy[0]) and np.isnan(bins.confidence[0])
    assert_close(bins.accuracy[1:], [3 / 4, 0])
    # the float32 inputs 0.7 and 0.9 are not the decimal values
    assert_close(bins.confidence[1:], [(0.5 + 0.7 + 0.75 + 0.9) / 4, 1], dtype=torch.float32)
    ece = metrics.expected_calibration_error(probs, labels, n_bins=2)
    assert_close(ece, 4 / 5 * abs(0.75 - 0.7125) + 1 / 5 * 1, dtype=torch.float32)
    assert_close(metrics.max_calibration_error(probs, labels, n_bins=2), 1.0, dtype=torch.float32)


def test_perfectly_calibrated_bins_have_zero_ece():
    # confidence 0.75 in every example, 3 of 4 correct -> acc == conf in the only bin
    probs = torch.tensor([[0.75, 0.25]] * 4 + [[0.25, 0.75]] * 4)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    assert_close(metrics.expected_calibration_error(probs, labels), 0.0)
    assert_close(metrics.max_calibration_error(probs, labels), 0.0)


# ----------------------------------------------------------------------------- accuracy, NLL, Brier


def test_scalar_metrics_match_numpy():
    probs, labels = _random_probs(1, 500, 6, seed=11)
    p, y = probs[0].numpy(), labels.numpy()
    assert_close(metrics.accuracy(p, y), np.mean(p.argmax(1) == y))
    assert_close(metrics.nll(p, y), -np.mean(np.log(p[np.arange(500), y])))
    onehot = np.eye(6)[y]
    assert_close(metrics.brier_score(p, y), np.mean(np.sum((p - onehot) ** 2, 1)))


def test_nll_clamps_zero_probability():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    labels = torch.tensor([1, 0])
    expected = (-math.log(1e-12) - math.log(0.5)) / 2
    assert_close(metrics.nll(probs, labels), expected, dtype=torch.float32)
    assert_close(
        metrics.nll(probs, labels, eps=1e-6),
        (-math.log(1e-6) + math.log(2)) / 2,
        dtype=torch.float32,
    )
    with pytest.raises(ValueError, match="eps"):
        metrics.nll(probs, labels, eps=0.0)


def test_brier_extremes():
    labels = torch.tensor([0, 1])
    assert metrics.brier_score(torch.eye(2), labels) == 0.0
    assert_close(metrics.brier_score(torch.eye(2).flip(0), labels), 2.0)


def test_sample_dimension_is_averaged_in_probability_space():
    probs, labels = _random_probs(8, 300, 5, seed=3)
    mean = probs.mean(0)
    for fn in (
        metrics.accuracy,
        metrics.nll,
        metrics.brier_score,
        metrics.expected_calibration_error,
        metrics.max_calibration_error,
    ):
        assert_close(fn(probs, labels), fn(mean, labels))
        assert isinstance(fn(probs, labels), float)
    assert_close(metrics.predictive_entropy(probs), metrics.predictive_entropy(mean))
    # averaging logits instead would give a different answer
    assert metrics.nll(probs, labels) != pytest.approx(
        metrics.nll(torch.softmax(probs.log().mean(0), -1), labels)
    )


def test_numpy_torch_and_list_inputs_agree():
    probs, labels = _random_probs(3, 50, 4, seed=5)
    expected = metrics.expected_calibration_error(probs, labels)
    # exact: the same values reach the same operations whatever container held them
    assert metrics.expected_calibration_error(probs.numpy(), labels.numpy()) == expected
    assert metrics.expected_calibration_error(probs.tolist(), labels.tolist()) == expected


def test_probs_from_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 10, 3, generator=g)
    p = metrics.probs_from_logits(logits)
    assert_close(p, torch.softmax(logits, -1))
    pbar = metrics.probs_from_logits(logits, average_samples=True)
    assert_close(pbar, torch.softmax(logits, -1).mean(0))
    with pytest.raises(ValueError, match="logits"):
        metrics.probs_from_logits(torch.randn(3))


# ----------------------------------------------------------------------------- entropy and MI


def test_entropy_closed_forms():
    k = 7
    uniform = torch.full((5, k), 1 / k, dtype=torch.float64)
    assert_close(
        metrics.predictive_entropy(uniform), torch.full((5,), math.log(k), dtype=torch.float64)
    )
    onehot = torch.eye(k, dtype=torch.float64)
    assert_close(metrics.predictive_entropy(onehot), torch.zeros(k, dtype=torch.float64))
    p = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    expected = -(p * p.log()).sum()
    assert_close(metrics.predictive_entropy(p), expected.reshape(1))


def test_mutual_information_closed_forms():
    probs, _ = _random_probs(1, 20, 4, seed=1)
    identical = probs.expand(6, -1, -1)
    assert_close(metrics.mutual_information(identical), torch.zeros(20, dtype=torch.float64))
    # samples that are confidently different one-hots: H[p̄] = log S, E H[p_s] = 0
    disagree = torch.eye(4, dtype=torch.float64)[:, None, :].expand(4, 3, 4)
    mi = metrics.mutual_information(disagree)
    assert mi.shape == (3,)
    assert_close(mi, torch.full((3,), math.log(4), dtype=torch.float64))


def test_mutual_information_decomposition():
    probs, _ = _random_probs(10, 40, 5, seed=2)
    p = probs.numpy()
    pbar = p.mean(0)
    h_total = -(pbar * np.log(pbar)).sum(-1)
    h_expected = -(p * np.log(p)).sum(-1).mean(0)
    mi = metrics.mutual_information(probs)
    assert_close(mi, h_total - h_expected)
    assert (mi >= 0).all() and (mi <= metrics.predictive_entropy(probs)).all()


def test_mutual_information_needs_samples():
    with pytest.raises(ValueError, match=r"\(S, N, K\)"):
        metrics.mutual_information(torch.full((3, 2), 0.5))


# ----------------------------------------------------------------------------- OOD


def _sk_fpr_at_tpr(scores_in, scores_out, level=0.95):
    y = np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))]
    fpr, tpr, _ = roc_curve(y, np.r_[scores_in, scores_out], drop_intermediate=False)
    return fpr[tpr >= level].min()


def _sk_all(scores_in, scores_out):
    y = np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))]
    s = np.r_[scores_in, scores_out]
    return roc_auc_score(y, s), average_precision_score(y, s), _sk_fpr_at_tpr(scores_in, scores_out)


def _ours_all(scores_in, scores_out):
    return (
        metrics.ood_auroc(scores_in, scores_out),
        metrics.ood_aupr(scores_in, scores_out),
        metrics.fpr_at_95_tpr(scores_in, scores_out),
    )


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [None, 5, 2])
def test_ood_metrics_match_sklearn_with_ties(seed, levels):
    rng = np.random.default_rng(seed)
    scores_in = rng.normal(0, 1, 300)
    scores_out = rng.normal(1, 1, 170)
    if levels is not None:  # heavy ties, within and across groups
        scores_in, scores_out = np.round(scores_in * levels) / levels, np.round(scores_out * levels)
        scores_out /= levels
    assert_close(_ours_all(scores_in, scores_out), _sk_all(scores_in, scores_out))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=25),
    st.lists(st.integers(0, 4), min_size=1, max_size=25),
)
def test_ood_metrics_match_sklearn_on_small_integer_scores(scores_in, scores_out):
    assert_close(_ours_all(scores_in, scores_out), _sk_all(scores_in, scores_out))


def test_ood_closed_forms():
    assert metrics.ood_auroc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert metrics.ood_auroc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert metrics.ood_auroc([1.0, 1.0], [1.0]) == 0.5
    assert metrics.ood_aupr([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert metrics.ood_aupr([1.0, 1.0, 1.0], [1.0]) == 0.25  # all tied: precision = prevalence
    assert metrics.fpr_at_95_tpr([0.0, 1.0], [2.0, 3.0]) == 0.0
    # 20 OOD scores 1..20, 19 of them needed: threshold 2 flags in-scores >= 2
    assert metrics.fpr_at_95_tpr([0.0, 1.5, 2.0, 30.0], np.arange(1, 21.0)) == 0.5
    assert metrics.fpr_at_95_tpr([0.0, 1.5, 2.0, 30.0], np.arange(1, 21.0), tpr=1.0) == 0.75


def test_ood_accepts_torch_and_infinite_scores():
    s_in = torch.tensor([0.0, -math.inf, 1.0])
    s_out = torch.tensor([math.inf, 2.0])
    assert metrics.ood_auroc(s_in, s_out) == 1.0
    assert isinstance(metrics.ood_aupr(s_in, s_out), float)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "probs, match",
    [
        (torch.tensor([[0.5, 0.6]]), "sum to 1"),
        (torch.tensor([[1.5, -0.5]]), r"\[0, 1\]"),
        (torch.tensor([[float("nan"), 1.0]]), "NaN"),
        (torch.tensor([[2.0, 3.0]]), "probs_from_logits"),
        (torch.full((2,), 0.5), r"\(N, K\) or \(S, N, K\)"),
        (torch.full((1, 1, 1, 2), 0.5), r"\(N, K\) or \(S, N, K\)"),
        (torch.zeros(0, 3), "empty"),
    ],
)
def test_invalid_probabilities_are_rejected(probs, match):
    labels = torch.zeros(probs.shape[-2] if probs.dim() >= 2 else 1, dtype=torch.long)
    for fn in (metrics.accuracy, metrics.nll, metrics.expected_calibration_error):
        with pytest.raises(ValueError, match=match) as info:
            fn(probs, labels)
        assert "probs" in str(info.value)


def test_invalid_labels_are_rejected():
    probs = torch.full((3, 4), 0.25)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        metrics.brier_score(probs, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match=r"labels must lie"):
        metrics.accuracy(probs, np.array([0, -1, 2]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        metrics.nll(probs, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="labels must be integer"):
        metrics.accuracy(probs, torch.tensor([0.0, 1.0, 2.0]))


def test_invalid_bins_and_scores_are_rejected():
    probs, labels = torch.full((3, 4), 0.25), torch.tensor([0, 1, 2])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_bins"):
            metrics.expected_calibration_error(probs, labels, n_bins=bad)
    with pytest.raises(ValueError, match="scores_out contains NaN"):
        metrics.ood_auroc([0.0, 1.0], [float("nan")])
    with pytest.raises(ValueError, match="scores_in must be a non-empty 1-D"):
        metrics.ood_aupr([], [1.0])
    with pytest.raises(ValueError, match="scores_out must be a non-empty 1-D"):
        metrics.fpr_at_95_tpr([1.0], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="tpr"):
        metrics.fpr_at_95_tpr([1.0], [2.0], tpr=0.0)


def test_half_precision_input_is_upcast():
    probs, labels = _random_probs(1, 200, 3, seed=9)
    half = probs[0].half()
    # exact: half inputs are upcast to float32 first, then the very same operations run
    assert metrics.accuracy(half, labels) == metrics.accuracy(half.float(), labels)
    assert metrics.predictive_entropy(half).dtype == torch.float32
