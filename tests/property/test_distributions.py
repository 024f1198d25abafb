"""Property tests of the ordered-mask distributions over their whole promised parameter range:
temperature in [0.05, 10], keep probabilities in [1e-6, 1 - 1e-6], D in [1, 256], float32 and
float64 -- finite samples inside the support, finite log densities and gradients, keep-count
probabilities equal to the product formula, KL >= 0 with equality for identical arguments."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import kl_divergence

from bayes_nest.distributions import Downhill, DownhillStraightThrough, KeepCount
from bayes_nest.distributions.constraints import downhill, downhill_closed
from bayes_nest.testing import assert_close
from tests.property.property_testing import dtypes, examples, keep_probs, num_blocks, temperatures

SAMPLES = 3


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


@st.composite
def downhill_args(draw):
    d = draw(num_blocks)
    dtype = draw(dtypes)
    probs = draw(keep_probs(d, dtype))
    return probs, draw(temperatures), dtype, draw(st.integers(0, 2**31 - 1))


def _logits_leaf(probs: torch.Tensor) -> torch.Tensor:
    return torch.logit(probs.double()).to(probs.dtype).requires_grad_()


# ----------------------------------------------------------------------------- Downhill


@examples(60)
@given(downhill_args())
def test_downhill_samples_log_probs_and_gradients_are_finite(args):
    probs, tau, dtype, seed = args
    torch.manual_seed(seed)
    logits = _logits_leaf(probs)
    d = Downhill(keep_logits=logits, temperature=tau, validate_args=True)
    x = d.rsample((SAMPLES,))
    assert x.dtype == dtype and x.shape == (SAMPLES, probs.shape[-1])
    assert _finite(x)
    assert bool(downhill.check(x).all()), x  # strictly decreasing inside (0, 1)
    log_p = d.log_prob(x)
    assert log_p.shape == (SAMPLES,) and _finite(log_p)
    weights = torch.linspace(-1, 1, x.shape[-1], dtype=dtype)
    (log_p.sum() + (x * weights).sum()).backward()
    assert logits.grad is not None and _finite(logits.grad)


@examples(40)
@given(downhill_args())
def test_downhill_density_and_its_gradient_in_the_value_are_finite(args):
    probs, tau, dtype, seed = args
    torch.manual_seed(seed)
    d = Downhill(keep_probs=probs, temperature=tau, validate_args=True)
    value = d.sample((SAMPLES,)).detach().clone().requires_grad_()  # scored from differences
    log_p = d.log_prob(value)
    assert _finite(log_p)
    log_p.sum().backward()
    assert _finite(value.grad)


@examples(40)
@given(downhill_args())
def test_straight_through_samples_are_hard_masks_with_finite_gradients(args):
    probs, tau, dtype, seed = args
    torch.manual_seed(seed)
    logits = _logits_leaf(probs)
    d = DownhillStraightThrough(keep_logits=logits, temperature=tau, validate_args=True)
    x = d.rsample((SAMPLES,))
    assert bool(((x == 0) | (x == 1)).all()) and bool(downhill_closed.check(x).all())
    log_p = d.log_prob(x)  # the relaxed density of the draw
    hard_log_p = d.log_prob(x.detach())  # the keep-count mass of the hard mask
    assert _finite(log_p) and _finite(hard_log_p)
    counts = x.detach().sum(-1).long()
    assert_close(hard_log_p, d.index_distribution.log_prob(counts))
    weights = torch.linspace(-1, 1, x.shape[-1], dtype=dtype)
    (log_p.sum() + (x * weights).sum()).backward()
    assert _finite(logits.grad)
    mean = d.mean
    expected = torch.cumprod(probs.double(), -1)
    assert_close(mean.double(), expected, rtol=_rtol(dtype, probs), atol=1e-30)


def _rtol(dtype: torch.dtype, probs: torch.Tensor) -> float:
    # a cumulative sum of D log-sigmoids of |logit| <= 14 carries about D * 14 * eps error
    return 20 * probs.shape[-1] * torch.finfo(dtype).eps + 1e-12


# ----------------------------------------------------------------------------- KeepCount


def _oracle_log_q(probs: torch.Tensor) -> np.ndarray:
    """log q_b = sum_{j<=b} log beta_j + log(1 - beta_{b+1}) in float64 NumPy."""
    beta = probs.double().numpy()
    log_keep = np.concatenate([[0.0], np.cumsum(np.log(beta))])
    log_drop = np.concatenate([np.log1p(-beta), [0.0]])
    return log_keep + log_drop


@examples(60)
@given(st.data())
def test_keep_count_matches_the_product_formula_and_sums_to_one(data):
    d = data.draw(num_blocks)
    dtype = data.draw(dtypes)
    probs = data.draw(keep_probs(d, dtype))
    kc = KeepCount(keep_probs=probs, validate_args=True)
    q = kc.probs
    assert q.shape == (d + 1,) and q.dtype == dtype and _finite(kc.logits)
    assert bool((q >= 0).all())
    eps = torch.finfo(dtype).eps
    assert abs(float(q.double().sum()) - 1.0) <= 4 * (d + 1) * eps
    oracle = _oracle_log_q(probs)
    tol = _rtol(dtype, probs) * (1 + np.abs(oracle))
    assert np.all(np.abs(kc.logits.double().numpy() - oracle) <= tol)
    # the plain product, where it does not underflow
    beta = probs.double().numpy()
    product = np.array([np.prod(beta[:b]) * (1 - beta[b] if b < d else 1.0) for b in range(d + 1)])
    # relative error of exp(log q) is the absolute error of log q (see tol); below `tiny`
    # (subnormals) only absolute precision is left
    tiny = torch.finfo(dtype).tiny
    assert np.all(np.abs(q.double().numpy() - product) <= tol * product + tiny)
    counts = torch.arange(d + 1)
    assert_close(kc.log_prob(counts), kc.logits)
    torch.manual_seed(0)
    draws = kc.sample((64,))
    assert draws.dtype == torch.long and bool(((draws >= 0) & (draws <= d)).all())


@examples(40)
@given(st.data())
def test_keep_count_log_prob_gradient_is_finite(data):
    d = data.draw(num_blocks)
    dtype = data.draw(dtypes)
    logits = _logits_leaf(data.draw(keep_probs(d, dtype)))
    kc = KeepCount(keep_logits=logits)
    counts = torch.arange(d + 1)
    (kc.log_prob(counts).sum() + kc.entropy() + kc.mean).backward()
    assert _finite(logits.grad)


# ----------------------------------------------------------------------------- KL


@examples(60)
@given(st.data())
def test_kl_is_non_negative_zero_on_the_diagonal_and_matches_the_sum(data):
    d = data.draw(num_blocks)
    dtype = data.draw(dtypes)
    p_probs = data.draw(keep_probs(d, dtype), label="p")
    q_probs = data.draw(keep_probs(d, dtype), label="q")
    tau = data.draw(temperatures)
    p, q = KeepCount(keep_probs=p_probs), KeepCount(keep_probs=q_probs)
    kl = kl_divergence(p, q)
    assert kl.dtype == dtype and _finite(kl)
    # exact: both sides of log q - log p come from the same operations on equal data
    assert float(kl_divergence(p, KeepCount(keep_probs=p_probs.clone()))) == 0.0
    # the definition sum_b q_b (log q_b - log p_b), in float64 from the oracle's log q
    lp, lq = _oracle_log_q(p_probs), _oracle_log_q(q_probs)
    brute = float(np.sum(np.exp(lp) * (lp - lq)))
    scale = 1 + float(np.sum(np.exp(lp) * (np.abs(lp) + np.abs(lq))))
    assert abs(float(kl) - brute) <= _rtol(dtype, p_probs) * scale
    assert float(kl) >= -_rtol(dtype, p_probs) * scale
    # The hard masks of the straight-through variant are a one-to-one image of the keep count:
    # its registered KL is the keep-count KL (exact: the same function on the same tensors).
    straight_kl = kl_divergence(
        DownhillStraightThrough(keep_probs=p_probs, temperature=tau),
        DownhillStraightThrough(keep_probs=q_probs, temperature=tau),
    )
    assert float(straight_kl) == float(kl)
    same = DownhillStraightThrough(keep_probs=p_probs, temperature=tau)
    other_temperature = DownhillStraightThrough(keep_probs=p_probs, temperature=2 * tau)
    assert float(kl_divergence(same, other_temperature)) == 0.0  # hard masks: no temperature


@examples(30)
@given(st.data())
def test_kl_gradient_is_finite(data):
    d = data.draw(num_blocks)
    dtype = data.draw(dtypes)
    p_logits = _logits_leaf(data.draw(keep_probs(d, dtype), label="p"))
    q_logits = _logits_leaf(data.draw(keep_probs(d, dtype), label="q"))
    kl = kl_divergence(KeepCount(keep_logits=p_logits), KeepCount(keep_logits=q_logits))
    kl.backward()
    assert _finite(p_logits.grad) and _finite(q_logits.grad)
    assert math.isfinite(float(kl.detach()))
