"""Property tests of the metrics: bounds, invariance to permutations of examples (and of classes
where it holds), and agreement of the ``(S, N, K)`` and ``(N, K)`` forms."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from bayes_nest import metrics
from bayes_nest.testing import assert_close
from tests.property.property_testing import dtypes, examples

SCALAR = ["accuracy", "nll", "brier_score", "expected_calibration_error", "max_calibration_error"]


@st.composite
def predictions(draw, min_samples: int = 1):
    """Per-sample probabilities ``(S, N, K)`` (sharp, flat, one-hot and uniform rows mixed) and
    labels ``(N,)``."""
    s = draw(st.integers(min_samples, 5))
    n = draw(st.integers(1, 60))
    k = draw(st.integers(1, 12))
    dtype = draw(dtypes)
    scale = draw(st.sampled_from([0.0, 0.3, 3.0, 30.0, 300.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = scale * torch.randn(s, n, k, generator=g, dtype=torch.float64)
    probs = torch.softmax(logits, -1)
    if draw(st.booleans()):  # some exact one-hot rows
        rows = torch.rand(n, generator=g) < 0.3
        one_hot = torch.nn.functional.one_hot(torch.randint(0, k, (n,), generator=g), k)
        probs[:, rows] = one_hot[rows].double()
    labels = torch.randint(0, k, (n,), generator=g)
    return probs.to(dtype), labels


def _call(name: str, probs, labels) -> float:
    return getattr(metrics, name)(probs, labels)


def _ties(p: torch.Tensor) -> bool:
    """Whether some row's top probability is shared by two classes (argmax then depends on the
    class order)."""
    top = p.max(-1, keepdim=True).values
    return bool(((p == top).sum(-1) > 1).any())


# ----------------------------------------------------------------------------- bounds


@examples(80)
@given(predictions())
def test_bounds(pred):
    probs, labels = pred
    k = probs.shape[-1]
    values = {name: _call(name, probs, labels) for name in SCALAR}
    for name, value in values.items():
        assert isinstance(value, float) and math.isfinite(value), name
    assert 0 <= values["accuracy"] <= 1
    assert 0 <= values["nll"] <= -math.log(1e-12) + 1e-9
    assert 0 <= values["brier_score"] <= 2 + 1e-6
    assert 0 <= values["expected_calibration_error"] <= values["max_calibration_error"] + 1e-12
    assert values["max_calibration_error"] <= 1
    entropy = metrics.predictive_entropy(probs)
    assert entropy.shape == (probs.shape[1],)
    slack = 1e-5 if probs.dtype == torch.float32 else 1e-12
    assert bool((entropy >= 0).all()) and bool((entropy <= math.log(k) + slack).all())
    mi = metrics.mutual_information(probs)
    assert bool((mi >= 0).all()) and bool((mi <= entropy + slack).all())


@examples(40)
@given(predictions())
def test_mutual_information_vanishes_when_samples_agree(pred):
    probs, _ = pred
    same = probs[:1].expand(3, -1, -1)
    slack = 1e-5 if probs.dtype == torch.float32 else 1e-12
    assert float(metrics.mutual_information(same).max()) <= slack


# ----------------------------------------------------------------------------- forms


@examples(60)
@given(predictions())
def test_sample_form_equals_the_averaged_form(pred):
    probs, labels = pred
    mean = probs.mean(0)
    # Exact: the metrics average the samples with this very `mean(0)` (over one sample for
    # `mean[None]`, which divides by 1), then run the same operations on the same tensor.
    for name in SCALAR:
        assert _call(name, probs, labels) == _call(name, mean, labels), name
        assert _call(name, mean[None], labels) == _call(name, mean, labels), name
    assert_close(metrics.predictive_entropy(probs), metrics.predictive_entropy(mean))


# ----------------------------------------------------------------------------- permutations


@examples(60)
@given(predictions(), st.integers(0, 2**31 - 1))
def test_invariance_to_permuting_examples(pred, seed):
    probs, labels = pred
    perm = torch.randperm(probs.shape[1], generator=torch.Generator().manual_seed(seed))
    # Sums over examples in another order (the metrics are computed in the input dtype).
    for name in SCALAR:
        a, b = _call(name, probs, labels), _call(name, probs[:, perm], labels[perm])
        assert_close(a, b, dtype=probs.dtype, msg=name)
    assert_close(
        metrics.predictive_entropy(probs[:, perm]), metrics.predictive_entropy(probs)[perm]
    )
    assert_close(
        metrics.mutual_information(probs[:, perm]), metrics.mutual_information(probs)[perm]
    )


@examples(60)
@given(predictions(), st.integers(0, 2**31 - 1))
def test_invariance_to_permuting_classes(pred, seed):
    probs, labels = pred
    k = probs.shape[-1]
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(seed))
    relabel = torch.argsort(perm)  # class c moves to position relabel[c]
    permuted, new_labels = probs[..., perm], relabel[labels]
    # NLL and Brier never depend on the class order; accuracy and calibration only through
    # argmax ties, which go to the lowest index
    names = SCALAR if not _ties(probs.mean(0)) else ["nll", "brier_score"]
    for name in names:
        a, b = _call(name, probs, labels), _call(name, permuted, new_labels)
        assert_close(a, b, dtype=probs.dtype, msg=name)
    assert_close(metrics.predictive_entropy(permuted), metrics.predictive_entropy(probs))
    assert_close(metrics.mutual_information(permuted), metrics.mutual_information(probs))


# ----------------------------------------------------------------------------- OOD


@st.composite
def ood_scores(draw):
    """Two non-empty score vectors with many ties and, sometimes, infinite scores."""
    n_in, n_out = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    levels = draw(st.integers(1, 50))  # few levels: many ties
    shift = draw(st.floats(-3, 3))
    s_in = torch.randint(0, levels, (n_in,), generator=g).double() / levels
    s_out = torch.randint(0, levels, (n_out,), generator=g).double() / levels + shift
    if draw(st.booleans()):
        pool = torch.tensor([math.inf, -math.inf, 1e300, -1e300], dtype=torch.float64)
        for s in (s_in, s_out):
            hit = torch.rand(s.shape[0], generator=g) < 0.3
            s[hit] = pool[torch.randint(0, 4, (int(hit.sum()),), generator=g)]
    return s_in.numpy(), s_out.numpy()


def _mann_whitney(s_in: np.ndarray, s_out: np.ndarray) -> float:
    greater = (s_out[:, None] > s_in[None, :]).mean()
    equal = (s_out[:, None] == s_in[None, :]).mean()
    return float(greater + 0.5 * equal)


@examples(80)
@given(ood_scores(), st.integers(0, 2**31 - 1))
@example((np.array([math.inf]), np.array([math.inf])), 0)  # tied infinite scores: AUROC 1/2
@example((np.array([-math.inf, 0.0]), np.array([-math.inf, math.inf])), 0)
@example(
    (
        np.array([0.8]),
        np.array(
            [
                1.7,
                1.1,
                1.4,
                1.8,
                1.9,
                1.2,
                1.5,
                1,
                1.1,
                1,
                1.1,
                1.9,
                1.5,
                1.5,
                1.3,
                1.9,
                1.7,
                1.6,
                1,
                1,
            ]
        ),
    ),
    0,
)  # AUPR summed to 1 + 2e-16
def test_ood_metrics_bounds_oracles_and_permutations(scores, seed):
    s_in, s_out = scores
    auroc = metrics.ood_auroc(s_in, s_out)
    aupr = metrics.ood_aupr(s_in, s_out)
    fpr = metrics.fpr_at_95_tpr(s_in, s_out)
    assert 0 <= auroc <= 1 and 0 <= aupr <= 1 and 0 <= fpr <= 1
    assert_close(auroc, _mann_whitney(s_in, s_out))
    # average precision as scikit-learn defines it (ranks are what matter: map to ranks so that
    # infinite scores are allowed)
    ranks = np.unique(np.concatenate([s_in, s_out]), return_inverse=True)[1]
    y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
    assert_close(aupr, average_precision_score(y, ranks))
    rng = np.random.default_rng(seed)
    shuffled = (rng.permutation(s_in), rng.permutation(s_out))
    # Exact: after the stable sort only the order within ties changes, and the metrics read
    # integer counts at the end of each tie group.
    assert metrics.ood_auroc(*shuffled) == auroc
    assert metrics.ood_aupr(*shuffled) == aupr
    assert metrics.fpr_at_95_tpr(*shuffled) == fpr
    assume(np.isfinite(np.r_[s_in, s_out]).all())
    # a monotone transform of the scores changes nothing
    assert_close(metrics.ood_auroc(np.arctan(s_in), np.arctan(s_out)), auroc)
