"""Fused VOU operations: values against the Downhill distributions, gradients by gradcheck."""

import math

import pytest
import torch
from torch.distributions import kl_divergence

from bayes_nest.distributions import Downhill, DownhillStraightThrough
from bayes_nest.distributions.keep_count_ops import draw_mask, gumbel_noise, keep_terms
from bayes_nest.infer.vou import VariationalOrderingUnit
from bayes_nest.nn import Axis
from bayes_nest.testing import argmax_margin, assert_close


def _log_prior(pi, d, dtype=torch.float64):
    b = torch.arange(d + 1, dtype=dtype)
    log_p = b * math.log(pi) + math.log1p(-pi)
    log_p[-1] = d * math.log(pi)
    return log_p


def test_keep_terms_values_match_the_distributions():
    logits = torch.tensor([2.0, -0.5, 1.0, 0.3, -3.0], dtype=torch.float64)
    log_q, marginals, kl = keep_terms(logits, _log_prior(0.8, 5), always_on=2)
    posterior = Downhill(keep_logits=logits, temperature=0.5)
    prior = Downhill(keep_probs=torch.full((5,), 0.8, dtype=torch.float64), temperature=0.5)
    assert_close(log_q, posterior.index_distribution.logits)
    beta = torch.sigmoid(logits)
    assert_close(marginals, torch.cat([torch.ones(2).double(), beta.cumprod(0)]))
    assert_close(kl, kl_divergence(posterior.index_distribution, prior.index_distribution))


def test_keep_terms_gradients_by_gradcheck():
    logits = torch.tensor([1.5, -0.5, 0.7, 2.0], dtype=torch.float64, requires_grad=True)
    log_p = _log_prior(0.9, 4)
    # all outputs together (gradcheck checks every output's Jacobian), and the KL alone
    for always_on in (0, 1):
        assert torch.autograd.gradcheck(keep_terms, (logits, log_p, always_on))
    assert torch.autograd.gradcheck(lambda w: keep_terms(w, log_p, 1)[2], (logits,))
    assert torch.autograd.gradcheck(lambda w: keep_terms(w, log_p, 1)[1], (logits,))


@pytest.mark.parametrize("straight_through", [True, False])
def test_draw_mask_equals_a_downhill_draw_from_the_same_noise(straight_through):
    logits = torch.tensor([2.0, 0.5, -0.3, 1.0, 0.1, 3.0])
    cls = DownhillStraightThrough if straight_through else Downhill
    dist = cls(keep_logits=logits, temperature=0.4, validate_args=False)
    log_q = dist.index_distribution.logits
    for seed in range(20):
        torch.manual_seed(seed)
        expected = dist.rsample()
        torch.manual_seed(seed)
        gumbel = gumbel_noise(7, dtype=torch.float32, device=torch.device("cpu"))
        value = draw_mask(log_q, gumbel, 0.4, straight_through=straight_through, always_on=1)
        assert value[0] == 1.0  # the always-on block: a constant
        if straight_through:
            # A hard mask is the argmax of the perturbed scores: the two formulas agree exactly
            # unless rounding could flip a near tie, which these draws do not have.
            assert float(argmax_margin((log_q.flip(-1) + gumbel) / 0.4)) > 1e-4
        assert_close(value[1:], expected.detach())


@pytest.mark.parametrize("straight_through", [True, False])
def test_draw_mask_gradient_is_the_relaxed_samples(straight_through):
    logits = torch.tensor([2.0, 0.5, -0.3, 1.0], requires_grad=True)
    weights = torch.tensor([0.3, -1.2, 2.0, 0.7])
    cls = DownhillStraightThrough if straight_through else Downhill
    torch.manual_seed(5)
    expected = torch.autograd.grad(
        (cls(keep_logits=logits, temperature=0.7).rsample() * weights).sum(), logits
    )[0]
    torch.manual_seed(5)
    log_q = Downhill(keep_logits=logits, temperature=0.7).index_distribution.logits
    gumbel = gumbel_noise(5, dtype=torch.float32, device=torch.device("cpu"))
    value = draw_mask(log_q, gumbel, 0.7, straight_through=straight_through)
    got = torch.autograd.grad((value * weights).sum(), logits)[0]
    assert_close(got, expected, scale=10)  # a hand-written backward vs autograd's chain


def test_draw_mask_gradients_by_gradcheck():
    torch.manual_seed(0)
    log_q = torch.log_softmax(torch.randn(5, dtype=torch.float64), 0).requires_grad_()
    gumbel = gumbel_noise(5, dtype=torch.float64, device=torch.device("cpu"))
    for straight_through in (False, True):
        # the straight-through value is piecewise constant; its gradient is the relaxed one's,
        # so check that gradient against finite differences of the relaxed mask
        relaxed = lambda q: draw_mask(q, gumbel, 0.8, straight_through=False, always_on=1)  # noqa: E731
        assert torch.autograd.gradcheck(relaxed, (log_q,))
        value = draw_mask(log_q, gumbel, 0.8, straight_through=straight_through, always_on=1)
        weights = torch.randn(5, dtype=torch.float64)
        got = torch.autograd.grad((value * weights).sum(), log_q)[0]
        want = torch.autograd.grad((relaxed(log_q) * weights).sum(), log_q)[0]
        assert_close(got, want)


def test_unit_step_terms_and_draws_use_its_parameters():
    axis = Axis("layer", "width", 5, 1)
    vou = VariationalOrderingUnit(axis, init_keep_prob=0.7, temperature=0.5)
    log_q, marginals, kl = vou.step_terms(0.9)
    assert_close(log_q, vou.keep_count_log_probs())
    assert_close(marginals, vou.block_marginals())
    assert_close(kl, kl_divergence(vou.distribution(), vou.prior(0.9)))
    torch.manual_seed(1)
    expected = vou.distribution().rsample()
    torch.manual_seed(1)
    mask = vou.draw_block_mask(log_q)
    assert_close(mask, torch.cat([torch.ones(1), expected.detach()]))
    assert vou.log_prior_counts(0.9) is vou.log_prior_counts(0.9)  # cached
