"""Tests for bayes_nest.distributions.kl (closed-form keep-count KL and its registrations)."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import kl_divergence

from bayes_nest.distributions import Downhill, DownhillStraightThrough, KeepCount, kl_keep_count
from bayes_nest.testing import assert_close


def direct_kl(p_probs: np.ndarray, q_probs: np.ndarray) -> np.ndarray:
    """Sum over counts of p log(p / q), from the explicit product-formula probabilities."""

    def probs(beta):
        d = beta.shape[-1]
        out = np.empty(beta.shape[:-1] + (d + 1,))
        for b in range(d + 1):
            value = np.prod(beta[..., :b], -1)
            out[..., b] = value * (1 - beta[..., b]) if b < d else value
        return out

    p, q = probs(p_probs), probs(q_probs)
    return np.sum(p * np.log(p / q), -1)


def test_closed_form_matches_direct_sum_with_broadcasting():
    torch.manual_seed(0)
    p_beta = torch.rand(2, 1, 5, dtype=torch.float64) * 0.98 + 0.01
    q_beta = torch.rand(3, 5, dtype=torch.float64) * 0.98 + 0.01
    p, q = KeepCount(keep_probs=p_beta), KeepCount(keep_probs=q_beta)
    kl = kl_divergence(p, q)
    assert kl.shape == (2, 3)
    expected = direct_kl(*np.broadcast_arrays(p_beta.numpy(), q_beta.numpy()))
    assert_close(kl.numpy(), expected)
    assert_close(kl, kl_keep_count(p, q))
    assert (kl > 0).all()
    assert_close(kl_divergence(p, p), torch.zeros(2, 1, dtype=torch.float64))


def test_extreme_keep_probabilities_stay_finite():
    p = KeepCount(keep_probs=torch.full((30,), 1 - 1e-6))
    q = KeepCount(keep_probs=torch.full((30,), 1e-6))
    kl = kl_divergence(p, q)
    assert torch.isfinite(kl) and kl > 0
    assert torch.isfinite(kl_divergence(q, p))


def test_zero_probability_counts():
    p = KeepCount.from_count_probs(torch.tensor([0.0, 0.5, 0.5, 0.0], dtype=torch.float64))
    q = KeepCount.uniform(3, dtype=torch.float64)
    assert_close(kl_divergence(p, q).item(), np.log(2.0))


def test_straight_through_kl_is_keep_count_kl_at_any_temperatures():
    torch.manual_seed(1)
    p_logits, q_logits = torch.randn(4, 6), torch.randn(6)
    p = DownhillStraightThrough(keep_logits=p_logits, temperature=0.5)
    q = DownhillStraightThrough(keep_logits=q_logits, temperature=torch.tensor(2.0))
    kl = kl_divergence(p, q)
    assert kl.shape == (4,)
    assert_close(
        kl, kl_divergence(KeepCount(keep_logits=p_logits), KeepCount(keep_logits=q_logits))
    )


def test_straight_through_kl_through_to_event_wrappers():
    torch.manual_seed(2)
    p = DownhillStraightThrough(keep_logits=torch.randn(3, 4, 5), temperature=1.0)
    q = DownhillStraightThrough(keep_logits=torch.randn(4, 5), temperature=1.0)
    kl = kl_divergence(p.to_event(1), q.expand((3, 4)).to_event(1))
    assert kl.shape == (3,)
    assert_close(kl, kl_divergence(p, q).sum(-1))


@pytest.mark.parametrize("q_cls", [Downhill, DownhillStraightThrough])
def test_relaxed_downhill_has_no_registered_kl(q_cls):
    """The keep-count KL is not the KL of the relaxed densities: nothing is registered, so
    Pyro estimates it by Monte Carlo."""
    p = Downhill(keep_probs=torch.full((3,), 0.5), temperature=0.5)
    q = q_cls(keep_probs=torch.full((3,), 0.7), temperature=0.5)
    with pytest.raises(NotImplementedError):
        kl_divergence(p, q)


def test_keep_count_kl_requires_same_size():
    with pytest.raises(ValueError, match="number of blocks"):
        kl_divergence(KeepCount.uniform(3), KeepCount.uniform(4))


def test_trace_mean_field_elbo_uses_the_surrogate():
    """With no observation the mean-field loss is exactly the registered KL."""
    prior_probs = torch.full((2, 4), 0.8)
    guide_logits = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -2.0, 3.0]])

    def model():
        with pyro.plate("layers", 2):
            pyro.sample("mask", DownhillStraightThrough(keep_probs=prior_probs, temperature=0.5))

    def guide():
        with pyro.plate("layers", 2):
            pyro.sample("mask", DownhillStraightThrough(keep_logits=guide_logits, temperature=0.5))

    loss = TraceMeanField_ELBO().differentiable_loss(model, guide)
    expected = direct_kl(torch.sigmoid(guide_logits).double().numpy(), prior_probs.double().numpy())
    assert_close(loss.item(), expected.sum(), dtype=torch.float32)


def test_unregistered_pairs_still_raise_not_implemented():
    with pytest.raises(NotImplementedError):
        kl_divergence(
            Downhill(keep_probs=torch.full((3,), 0.5), temperature=1.0), dist.Normal(0, 1)
        )
