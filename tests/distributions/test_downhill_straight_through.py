"""Tests for bayes_nest.distributions.downhill_straight_through.DownhillStraightThrough."""

import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.testing.gof import multinomial_goodness_of_fit

from bayes_nest.distributions import Downhill, DownhillStraightThrough, constraints, hard_mask
from bayes_nest.testing import assert_close


def test_forward_value_is_the_hard_mask_of_the_relaxed_winner():
    torch.manual_seed(0)
    keep_logits = torch.randn(3, 6)
    straight = DownhillStraightThrough(keep_logits=keep_logits, temperature=0.7)
    value = straight.rsample((100,))
    assert value.shape == (100, 3, 6)
    assert ((value == 0) | (value == 1)).all()
    assert constraints.downhill_closed.check(value).all()
    relaxed = value._relaxed
    assert constraints.downhill.check(relaxed).all()
    ones = torch.ones_like(relaxed[..., :1])
    y = torch.cat([ones, relaxed], -1) - torch.cat([relaxed, 0 * ones], -1)
    assert_close(value, hard_mask(y.argmax(-1), 6, dtype=value.dtype))


def test_gradient_is_the_relaxed_samples_gradient():
    keep_logits = torch.tensor([0.3, -1.0, 2.0, 0.5], requires_grad=True)
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0])
    torch.manual_seed(1)
    straight = DownhillStraightThrough(keep_logits=keep_logits, temperature=0.5).rsample((64,))
    (grad_straight,) = torch.autograd.grad((straight * weights).sum(), keep_logits)
    torch.manual_seed(1)
    relaxed = Downhill(keep_logits=keep_logits, temperature=0.5).rsample((64,))
    (grad_relaxed,) = torch.autograd.grad((relaxed * weights).sum(), keep_logits)
    assert_close(grad_straight, grad_relaxed)
    assert grad_straight.abs().sum() > 0


def test_mean_is_cumprod_of_keep_probs():
    keep_probs = torch.tensor([[0.9, 0.5, 0.8, 0.3], [0.2, 0.99, 0.7, 0.6]], dtype=torch.float64)
    straight = DownhillStraightThrough(keep_probs=keep_probs, temperature=2.0)
    assert_close(straight.mean, keep_probs.cumprod(-1))
    assert_close(straight.variance, straight.mean * (1 - straight.mean))
    torch.manual_seed(2)
    n = 100000
    empirical = straight.rsample((n,)).mean(0)
    bound = 5 * (straight.variance / n).sqrt()
    assert ((empirical - keep_probs.cumprod(-1)).abs() < bound).all()


def test_keep_counts_follow_q():
    torch.manual_seed(3)
    straight = DownhillStraightThrough(keep_logits=torch.randn(5), temperature=0.3)
    counts = straight.rsample((20000,)).sum(-1).long()
    histogram = torch.bincount(counts, minlength=6).double()
    assert multinomial_goodness_of_fit(straight.index_distribution.probs.double(), histogram) > 1e-3


def test_log_prob_cases():
    torch.manual_seed(4)
    keep_logits = torch.randn(2, 4, dtype=torch.float64)
    straight = DownhillStraightThrough(keep_logits=keep_logits, temperature=0.5, validate_args=True)
    relaxed_twin = Downhill(keep_logits=keep_logits, temperature=0.5, validate_args=True)
    value = straight.rsample((3,))
    # a sample carries its relaxed value: the Downhill density at it (for both classes)
    expected = relaxed_twin.log_prob(value._relaxed)
    assert_close(straight.log_prob(value), expected)
    assert_close(relaxed_twin.log_prob(value), expected)
    # a hard mask without it: the keep-count log probability of its count
    hard = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    expected = straight.index_distribution.logits[[0, 1], [2, 0]]
    assert_close(straight.log_prob(hard), expected)
    # a relaxed value without the attribute: the density
    soft = value._relaxed.detach().clone()
    assert_close(straight.log_prob(soft), relaxed_twin.log_prob(soft))
    with pytest.raises(ValueError):
        straight.log_prob(torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="strictly decreasing"):
        straight.log_prob(torch.tensor([[0.9, 0.9, 0.5, 0.1]] * 2, dtype=torch.float64))


@pytest.mark.parametrize("default", [False, True])
def test_expand_keeps_straight_through_behaviour(default):
    small = DownhillStraightThrough(keep_probs=torch.full((1, 3), 0.6), temperature=1.0)
    expand = dist.TorchDistribution.expand if default else DownhillStraightThrough.expand
    large = expand(small, (4, 2))
    value = large.rsample()
    assert value.shape == (4, 2, 3)
    assert ((value == 0) | (value == 1)).all()
    assert_close(large.log_prob(value), small.log_prob(value).expand(4, 2))
    if not default:
        assert type(large) is DownhillStraightThrough
        assert_close(large.mean, torch.full((4, 2, 3), 0.6).cumprod(-1))


def test_infer_shapes_and_support():
    assert DownhillStraightThrough.infer_shapes(keep_probs=(2, 7)) == ((2,), (7,))
    assert DownhillStraightThrough.support is constraints.downhill_closed
