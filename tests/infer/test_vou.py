"""Variational ordering units: keep-count posterior, marginals, sampling, temperature."""

import math

import numpy as np
import pytest
import torch
from pyro import poutine
from scipy import stats

from bayes_nest.distributions import Downhill, DownhillStraightThrough
from bayes_nest.infer.vou import (
    ExponentialTemperature,
    VariationalOrderingUnit,
    resolve_temperature,
)
from bayes_nest.nn import Axis
from bayes_nest.testing import assert_close


def _vou(logits, always_on=1, **kw):
    axis = Axis("layer", "width", len(logits) + always_on, always_on)
    vou = VariationalOrderingUnit(axis, **kw)
    with torch.no_grad():
        vou.keep_logits.copy_(torch.as_tensor(logits, dtype=torch.float32))
    return vou


def _count_probs_by_hand(beta):
    d = len(beta)
    q = []
    for b in range(d + 1):
        keep = np.prod(beta[:b])
        q.append(keep * (1 - beta[b]) if b < d else keep)
    return np.array(q)


def test_keep_count_probs_and_marginals_match_the_chain_formula():
    logits = [2.0, -0.5, 1.0, 0.3]
    vou = _vou(logits)
    beta = 1 / (1 + np.exp(-np.array(logits)))
    assert_close(vou.keep_probs().detach(), beta)
    q = _count_probs_by_hand(beta)
    assert_close(vou.keep_count_probs().detach(), q)
    assert_close(vou.keep_marginals().detach(), np.cumprod(beta))
    # P(b >= k) is the tail sum of q
    tails = q[::-1].cumsum()[::-1][1:]
    assert_close(vou.keep_marginals().detach(), tails)
    block = vou.block_marginals().detach().numpy()
    assert block.shape == (5,) and block[0] == 1.0
    # the distribution's own keep-count law agrees
    assert_close(vou.distribution().index_distribution.probs.detach(), q)


def test_log_space_stays_finite_for_extreme_logits():
    vou = _vou([60.0, -60.0, 60.0])
    logq = vou.keep_count_log_probs()
    assert torch.isfinite(logq[:2]).all()
    assert float(logq[1].detach()) == pytest.approx(0.0, abs=1e-6)  # b = 1 almost surely
    assert torch.isfinite(vou.keep_marginals()).all()
    grad = torch.autograd.grad(logq[1], vou.keep_logits)[0]
    assert torch.isfinite(grad).all()


def test_init_keep_prob_and_distribution_type():
    axis = Axis("a", "width", 6, 2)
    vou = VariationalOrderingUnit(axis, init_keep_prob=0.9, temperature=0.7)
    assert_close(vou.keep_probs(), torch.full((4,), 0.9))
    assert isinstance(vou.distribution(), DownhillStraightThrough)
    assert float(vou.distribution().temperature) == pytest.approx(0.7)
    relaxed = VariationalOrderingUnit(axis, straight_through=False)
    assert type(relaxed.distribution()) is Downhill
    prior = vou.prior(0.8)
    assert_close(prior.keep_probs, torch.full((4,), 0.8))
    assert float(prior.temperature) == pytest.approx(0.7)


def test_sampled_keep_counts_follow_the_posterior():
    torch.manual_seed(0)
    vou = _vou([1.5, 0.0, -1.0], always_on=2)
    counts = vou.sample_keep_counts((20000,))
    assert counts.shape == (20000,) and counts.dtype == torch.int64
    observed = np.bincount(counts.numpy() - 2, minlength=4)
    q = vou.keep_count_probs().detach().double().numpy()
    expected = q / q.sum() * 20000
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    assert counts.min() >= 2 and counts.max() <= 5


def test_forward_is_a_pyro_site_named_after_the_axis():
    vou = _vou([1.0, 1.0])
    trace = poutine.trace(vou).get_trace()
    site = trace.nodes["layer"]
    assert site["type"] == "sample" and site["value"].shape == (2,)
    assert isinstance(site["fn"], DownhillStraightThrough)


def test_exponential_temperature_schedule():
    sched = ExponentialTemperature(initial=2.0, final=0.5, rate=0.5)
    assert sched(0) == 2.0
    assert sched(1) == pytest.approx(2.0 * math.exp(-0.5))
    assert sched(100) == 0.5
    vou = VariationalOrderingUnit(Axis("a", "width", 3, 1), temperature=sched)
    assert vou.temperature == 2.0
    assert vou.set_epoch(2) == pytest.approx(2.0 * math.exp(-1.0))
    assert float(vou.distribution().temperature) == pytest.approx(2.0 * math.exp(-1.0))
    assert resolve_temperature(0.3) == 0.3


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"initial": 0.1, "final": 0.5}, ValueError),
        ({"initial": -1.0}, ValueError),
        ({"rate": -0.1}, ValueError),
        ({"final": "x"}, TypeError),
    ],
)
def test_schedule_validation(kwargs, error):
    with pytest.raises(error):
        ExponentialTemperature(**kwargs)


def test_vou_validation():
    with pytest.raises(ValueError, match="no orderable blocks"):
        VariationalOrderingUnit(Axis("a", "width", 2, 2))
    with pytest.raises(ValueError, match="init_keep_prob"):
        VariationalOrderingUnit(Axis("a", "width", 3, 1), init_keep_prob=1.0)
    with pytest.raises(TypeError, match="Axis"):
        VariationalOrderingUnit("a")
    with pytest.raises(ValueError, match="temperature"):
        VariationalOrderingUnit(Axis("a", "width", 3, 1), temperature=0.0)
    with pytest.raises(ValueError, match="temperature schedule"):
        VariationalOrderingUnit(Axis("a", "width", 3, 1), temperature=lambda e: -1.0)
